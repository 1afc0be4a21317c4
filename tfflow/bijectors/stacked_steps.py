"""K flow steps of one architecture, their parameters stacked `[K, ...]`, run as one traced step.

A deep flow repeats one step (Glow: ActNorm -> 1x1 conv -> coupling) K times
with different weights. Written out, its graph, its trace time and its XLA
compile time grow with K. `StackedSteps` takes the K steps' parameters stacked
along a leading axis and applies `step(params[k])` for k = 0..K-1 in a
`tf.while_loop`, so the step is traced once whatever K is.

Measured on 2 CPU cores (DESIGN.md, "Depth"): in graph mode the loop runs as
fast as the unrolled steps and its first call no longer grows with K. Under
XLA the `inverse` loop (with Glow's kernel gradients written as dots,
`tfflow.bijectors._conv`) trains 9-30% slower than unrolled XLA but compiles in
7-9 s at K=8 and K=32 alike (unrolled: 22-29 and 85-93 s; benchmarks/README.md).
So by default the steps loop, except eagerly (nothing is traced) and under
XLA in the `forward` direction, which autodiff differentiates and XLA cannot
compile as a looped gradient; `unroll=` overrides the choice.

The gradient of the normalising direction (`inverse`, data -> latent, what
training differentiates) through the loop is an explicit backward loop, not
autodiff of the `tf.while_loop`: it walks the steps from last to first and
back-propagates through one step at a time, replayed under a tape. The
forward loop keeps each step's input (`[K, ...]`) and, while a gradient is
being recorded, what a subclass's step saves for its replay (`GlowSteps`:
its network's activations, so the replay runs no convolution; digits Glow
train step 23-25 vs 29-30 ms); with `memory_saving=True` it keeps nothing,
and the backward loop rebuilds each step's input from its output instead
(`tfflow.bijectors.reversible.inverse_vjp`). Autodiff of the
loop (while_v2's gradient: the body's gradient graph plus an accumulator for
every intermediate tensor) took about twice the CPU to trace and optimise on
a first training step and kept every step's activations; the replay costs
one more pass through the steps (digits Glow, K=8: ~5% per training step;
benchmarks/README.md, issue 13). Unrolled, plain autodiff is used unless
`memory_saving`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf
from tensorflow.python.eager import record  # pylint: disable=g-direct-tensorflow-import
from tensorflow.python.ops import control_flow_util  # pylint: disable=g-direct-tensorflow-import
from tensorflow_probability import bijectors as tfb

from tfflow.bijectors._base import FlowBijector, common_dtype
from tfflow.bijectors.reversible import _sum_to_shape, inverse_vjp

__all__ = ["StackedSteps", "in_xla_context"]

Step = Callable[[Sequence[tf.Tensor]], Sequence[tfb.Bijector]]


def in_xla_context() -> bool:
    """True while tracing code that XLA compiles (`tf.function(jit_compile=True)`, Keras' XLA)."""
    if tf.executing_eagerly():
        return False
    return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))


def _differentiable(t: tf.Tensor) -> bool:
    return t.dtype.is_floating


def _slicer(params: Sequence[tf.Tensor], differentiated: bool) -> Callable[[tf.Tensor], list]:
    """`read(k)`: step k's slices of `params` inside a loop.

    `differentiated`: whether autodiff may differentiate the loop (the
    `forward` direction under a tape; `inverse` has its own gradient,
    `_backward`; a loop differentiated anyway, e.g. by a `tf.function`'s own
    gradient, still gets the right gradient from `tf.gather`). Then
    TensorArrays in graph mode: the gradient of a read is a write, stacked
    once (indexing with `tf.gather` instead was 19% slower at K=32: each
    step's gradient is a dense [K, ...] tensor). Otherwise, and under XLA
    (which cannot compile the TensorArrays of a looped gradient), `tf.gather`:
    no copy of the parameters into TensorArrays, and less to trace.
    """
    if not differentiated or in_xla_context():
        return lambda k: [tf.gather(p, k) for p in params]
    arrays = [tf.TensorArray(p.dtype, size=p.shape[0], element_shape=p.shape[1:],
                             clear_after_read=False).unstack(p) for p in params]
    return lambda k: [a.read(k) for a in arrays]


class StackedSteps(FlowBijector):
    """K steps `step(params[k])`, k = 0..K-1, applied like `tfb.Chain` of the K steps.

    tfflow bijectors follow TFP: `forward` maps latent -> data (generation),
    `inverse` maps data -> latent (the papers' normalising direction). With
    `B_k = Chain(step(params[k]))` (the step's parts in `tfb.Chain` order: the
    first part is applied first by `inverse`):

    Inverse:  `z = B_{K-1}^{-1}( ... B_1^{-1}(B_0^{-1}(x)))`
    Forward:  `x = B_0( ... B_{K-1}(z))`
    Log-det:  the sum of the K steps' log-dets.

    Every part must keep the event shape. The parameters are explicit tensors
    (a Keras layer's stacked `[K, ...]` variables, read once), so the loop
    reads step k's slice of each and its gradient is one `[K, ...]` tensor per
    parameter.

    #### Examples

    ```python
    loc, log_scale = tf.zeros([4, 3]), tf.zeros([4, 3])    # K = 4 ActNorms on 3 channels
    steps = tfflow.bijectors.StackedSteps(
        lambda p: [tfflow.bijectors.ActNorm(p[0], p[1])], [loc, log_scale], event_ndims=3)
    z = steps.inverse(tf.random.normal([2, 8, 8, 3]))
    ```

    #### References

    [1] Kingma & Dhariwal. Glow. NeurIPS 2018 (K steps per scale).
    [2] Gomez et al. The Reversible Residual Network. NeurIPS 2017 (`memory_saving`).
    """

    def __init__(self, step: Step, params: Sequence, *, event_ndims: int,
                 memory_saving: bool = False, unroll: bool | None = None,
                 validate_args: bool = False, name: str = "stacked_steps"):
        """Builds the bijector.

        Args:
          step: `step(params_k) -> parts`, the bijectors of one step in
            `tfb.Chain` order, from the k-th slices of `params` (same order).
            Called once per trace in a loop, K times when unrolled.
          params: tensors (or variables, read once here) with the same leading
            dimension K >= 1, static.
          event_ndims: rank of one event (3 for [H, W, C] images).
          memory_saving: the gradient of `inverse` rebuilds activations
            instead of storing them (module docstring).
          unroll: True: a Python loop (K traced steps); False: a
            `tf.while_loop`; None (default): unrolled eagerly and, under
            XLA, in the `forward` direction; a loop otherwise.
          validate_args: passed to TFP.
          name: name scope.
        """
        parameters = dict(locals())
        owner = type(self).__name__
        if not callable(step):
            raise ValueError(f"{owner}: step must be callable, got {step!r}.")
        params = [tf.convert_to_tensor(p) for p in params]
        if not params:
            raise ValueError(f"{owner}: expected at least one stacked parameter, got none.")
        sizes = {p.shape[0] if p.shape.rank else None for p in params}
        if len(sizes) != 1 or None in sizes or sizes == {0}:
            raise ValueError(f"{owner}: every parameter needs the same static leading "
                             f"dimension K >= 1 (one slice per step), got shapes "
                             f"{[p.shape.as_list() for p in params]}.")
        self._step = step
        self._params = params
        self._num_steps = int(sizes.pop())
        self._event_ndims = int(event_ndims)
        self._memory_saving = bool(memory_saving)
        self._unroll = unroll
        dtype = common_dtype([p for p in params if p.dtype.is_floating], owner=owner)
        with tf.name_scope(name) as name:
            super().__init__(forward_min_event_ndims=self._event_ndims,
                             is_constant_jacobian=False, validate_args=validate_args,
                             dtype=dtype, parameters=parameters, name=name)

    @property
    def num_steps(self) -> int:
        return self._num_steps

    @property
    def params(self) -> list:
        return list(self._params)

    @property
    def memory_saving(self) -> bool:
        return self._memory_saving

    def unrolled(self, inverse: bool = True) -> bool:
        """Whether calls made here run a Python loop in that direction (see `unroll`).

        By default: eagerly; and under XLA in the `forward` direction, which
        autodiff differentiates (XLA cannot compile the TensorLists of a looped
        gradient). `inverse` loops under XLA too: its gradient is `_backward`'s
        explicit loop, so XLA's compile no longer grows with K.
        """
        if self._unroll is not None:
            return bool(self._unroll)
        return tf.executing_eagerly() or (not inverse and in_xla_context())

    # One step -----------------------------------------------------------------------------------
    def _parts(self, params_k) -> list:
        return list(self._step(list(params_k)))

    def _zero_log_det(self, x):
        rank = x.shape.rank
        return tf.zeros(tf.shape(x)[:rank - self._event_ndims], x.dtype)

    def _step_apply(self, x, params_k, inverse: bool):
        """One step in either direction, with its log-det at the event rank."""
        return self._apply_parts(self._parts(params_k), x, inverse)

    def _apply_parts(self, parts, x, inverse: bool):
        """`(y, log_det)` of one step's `parts` (in `tfb.Chain` order)."""
        total = tf.zeros([], x.dtype)
        for part in (parts if inverse else reversed(parts)):
            x, ldj = self._part_apply(part, x, inverse)
            total = total + ldj
        return x, total

    def _part_apply(self, part, x, inverse: bool):
        """`(y, log_det)` of one part at the event rank.

        A tfflow bijector whose event rank is the steps' is called through its
        own hook (`_inverse_and_log_det`, after its input checks), which is
        what TFP's `inverse` and `inverse_log_det_jacobian` compute, without
        the public calls' caching and rank arithmetic (less Python to trace per
        part; the first training step's gain was within the shared machine's
        noise: 2.52 vs 2.61 s CPU, medians of 3). Other parts go through the
        public API.
        """
        if isinstance(part, FlowBijector) and part.forward_min_event_ndims == self._event_ndims:
            if inverse:
                return part._inverse_and_log_det(part._validate_input(x, inverse=True))
            return part._forward_and_log_det(part._validate_input(x, inverse=False))
        if inverse:
            return part.inverse(x), part.inverse_log_det_jacobian(x, event_ndims=self._event_ndims)
        return part.forward(x), part.forward_log_det_jacobian(x, event_ndims=self._event_ndims)

    # What a step keeps for its gradient ----------------------------------------------------------
    def _saved_dtypes(self) -> list:
        """The dtypes of the tensors `_step_apply_saving` keeps besides the step's input.

        None here: the backward loop replays each step whole. A subclass that
        keeps some (e.g. a network's activations) saves their recomputation.
        """
        return []

    def _step_apply_saving(self, x, params_k):
        """`(y, log_det, saved)`: one `inverse` step and the tensors its gradient reuses.

        Called only when `_saved_dtypes()` names some, one tensor per dtype.
        """
        y, log_det = self._step_apply(x, params_k, inverse=True)
        return y, log_det, []

    def _replay_parts(self, params_k, saved) -> list:
        """Step k's parts for the backward loop's replay, given what `_step_apply_saving` kept."""
        del saved  # nothing kept here
        return self._parts(params_k)

    # The loop -----------------------------------------------------------------------------------
    def _run(self, x, params, inverse: bool, keep_inputs: bool = False,
             keep_saved: bool = False):
        """All K steps (in the direction asked), looped or unrolled; `(out, log_det)`.

        With `keep_inputs` (a loop in the `inverse` direction only) also returns
        each step's input stacked `[K, ...]`, for `_backward` to replay from,
        and, with `keep_saved`, the list of what the steps saved
        (`_saved_dtypes`), each `[K, ...]` (else an empty list).
        """
        num_steps = self._num_steps
        order = range(num_steps) if inverse else range(num_steps - 1, -1, -1)
        log_det = self._zero_log_det(x)
        if self.unrolled(inverse):
            # One unstack per parameter: its gradient is one stack (K slices `p[k]`
            # would each pad their gradient back to [K, ...]).
            slices = list(zip(*[tf.unstack(p, num=num_steps) for p in params]))
            for k in order:
                x, ldj = self._step_apply(x, list(slices[k]), inverse)
                log_det = log_det + ldj
            return x, log_det
        # The inverse loop is differentiated by `_backward`, not by autodiff.
        # Without a tape recording (sampling), nothing differentiates the forward loop.
        read = _slicer(params, differentiated=not inverse and record.could_possibly_record())
        x_shape = x.shape
        saved_dtypes = self._saved_dtypes() if keep_saved else []
        kept = []
        if keep_inputs:
            kept = [tf.TensorArray(x.dtype, size=num_steps, element_shape=x_shape)] + [
                tf.TensorArray(dtype, size=num_steps) for dtype in saved_dtypes]

        def body(i, x, log_det, *kept):
            k = i if inverse else num_steps - 1 - i
            if saved_dtypes:
                y, ldj, saved = self._step_apply_saving(x, read(k))
            else:
                (y, ldj), saved = self._step_apply(x, read(k), inverse), []
            kept = [array.write(k, value) for array, value in zip(kept, [x] + list(saved))]
            return (i + 1, tf.ensure_shape(y, x_shape), log_det + ldj, *kept)

        result = tf.while_loop(lambda i, *_: i < num_steps, body,
                               (tf.constant(0), x, log_det, *kept),
                               maximum_iterations=num_steps)
        if keep_inputs:
            # Plain [K, ...] tensors, not the TensorArrays: the gradient function captures
            # them, and a SavedModel cannot serialise a gradient that captures a variant.
            stacks = [array.stack() for array in result[3:]]
            return result[1], result[2], stacks[0], stacks[1:]
        return result[1], result[2]

    def _step_vjp(self, x, saved, dz, dildj, params_k):
        """`(dx, dparams_k)` of one step's `inverse` at its stored input `x`, by replaying it.

        The step is recomputed under a tape from `x` (one step's activations
        alive at a time; what the step `saved` is reused, `_replay_parts`) and
        pulled back from `(dz, dildj)`, the gradients of its output and of its
        log-det.
        """
        watched = [p for p in params_k if _differentiable(p)]
        with tf.control_dependencies([dz]):  # replay once the later step's gradient exists
            x = tf.identity(x)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch([x] + watched)
            y, ldj = self._apply_parts(self._replay_parts(params_k, saved), x, inverse=True)
        grads = tape.gradient([y, ldj], [x] + watched,
                              output_gradients=[dz, _sum_to_shape(dildj, ldj)],
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        by_param = iter(grads[1:])
        return grads[0], [next(by_param) if _differentiable(p) else None for p in params_k]

    def _backward(self, z, dz, dildj, params, inputs=None, saved=()):
        """Gradient of `_run(inverse)` by an explicit backward loop: `(dx, dparams)`.

        Step k's input is read from `inputs` (the `[K, ...]` stack `_run` kept) and
        the step replayed from it with what it `saved` (`_step_vjp`); without `inputs` (memory
        saving) it is rebuilt from the step's output by `inverse_vjp`, starting
        from the output `z`.
        """
        num_steps = self._num_steps
        event_ndims = self._event_ndims
        if self.unrolled(inverse=True):
            per_step = []
            slices = list(zip(*[tf.unstack(p, num=num_steps) for p in params]))
            for k in reversed(range(num_steps)):
                # inverse_vjp rebuilds step k only once step k+1's gradient exists:
                # otherwise the executor rebuilds every step (holding its activations).
                params_k = list(slices[k])  # the same tensors for the parts and the tape
                z, dz, grads = inverse_vjp(lambda p=params_k: self._parts(p), z, dz, dildj,
                                           params_k, event_ndims)
                per_step.insert(0, grads)
            dparams = [tf.stack([g[j] for g in per_step]) if _differentiable(p) else None
                       for j, p in enumerate(params)]
            return dz, dparams
        read = _slicer(params, differentiated=False)
        floating = [j for j, p in enumerate(params) if _differentiable(p)]
        grads_out = [tf.TensorArray(params[j].dtype, size=num_steps,
                                    element_shape=params[j].shape[1:]) for j in floating]
        z_shape = z.shape

        def body(i, z, dz, *outs):
            k = num_steps - 1 - i
            params_k = read(k)
            if inputs is None:
                x, dx, grads = inverse_vjp(lambda: self._parts(params_k), z, dz, dildj,
                                           params_k, event_ndims)
            else:
                x = z  # unused: the inputs are stored
                dx, grads = self._step_vjp(tf.gather(inputs, k),
                                           [tf.gather(value, k) for value in saved], dz, dildj,
                                           params_k)
            outs = [out.write(k, grads[j]) for out, j in zip(outs, floating)]
            return (i + 1, tf.ensure_shape(x, z_shape), tf.ensure_shape(dx, z_shape), *outs)

        result = tf.while_loop(lambda i, *_: i < num_steps, body,
                               (tf.constant(0), z, dz, *grads_out),
                               maximum_iterations=num_steps)
        dparams: list = [None] * len(params)
        for j, out in zip(floating, result[3:]):
            dparams[j] = out.stack()
        return result[2], dparams

    def _loop_params(self) -> list:
        """The stacked `[K, ...]` tensors the steps are run with: `params` here.

        A subclass may derive some when the bijector runs (a conditional Glow's
        per-step context term, which depends on the batch); the memory-saving
        gradient then returns the gradient of each, and autodiff takes it on to
        whatever they were computed from.
        """
        return self._params

    # TFP hooks ----------------------------------------------------------------------------------
    def _forward_and_log_det(self, z):
        return self._run(z, self._loop_params(), inverse=False)

    def _inverse_and_log_det(self, x):
        params = self._loop_params()
        if self.unrolled(inverse=True) and not self._memory_saving:
            return self._run(x, params, inverse=True)  # plain autodiff: no loop to hide
        keep_inputs = not self._memory_saving
        # Activations are kept only where a gradient is being recorded (a training step):
        # inference (log_prob, a SavedModel's signatures) keeps just the inputs, as the
        # replay needs, and stays as light as before (digits log_prob: 8.5 vs 9.9 ms).
        keep_saved = keep_inputs and record.could_possibly_record()

        # A loop (or memory saving) gets its gradient from `_backward`, an explicit loop
        # that replays one step at a time. Autodiff of the `tf.while_loop` instead
        # (while_v2's gradient: the body's gradient graph plus an accumulator per
        # intermediate tensor) cost ~2x the CPU to trace and to optimise on the
        # first step and kept every step's activations (benchmarks/README.md, issue 13).
        @tf.custom_gradient
        def inverse(x, *params):
            if keep_inputs:
                z, ildj, inputs, saved = self._run(x, list(params), inverse=True,
                                                   keep_inputs=True, keep_saved=keep_saved)
            else:
                (z, ildj), inputs, saved = self._run(x, list(params), inverse=True), None, []
            z, ildj = tf.identity(z), tf.identity(ildj)

            def gradient(dz, dildj):
                dz = tf.zeros_like(z) if dz is None else dz
                dildj = tf.zeros_like(ildj) if dildj is None else dildj
                dx, dparams = self._backward(z, dz, dildj, list(params), inputs, saved)
                return [dx] + dparams

            return (z, ildj), gradient

        return inverse(x, *params)
