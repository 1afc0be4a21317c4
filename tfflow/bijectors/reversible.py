"""A chain of bijectors whose backward pass recomputes activations instead of storing them.

A flow is invertible, so the input of every step can be rebuilt from its output.
`ReversibleChain` uses that in the gradient of its normalising direction
(`inverse`, data -> latent, the one training differentiates): the forward pass
keeps only the chain's output; the backward pass walks the parts from last to
first, rebuilds each part's input with its `forward`, replays the part's
`inverse` under a `tf.GradientTape` and back-propagates through that part alone
(`inverse_vjp`, shared with `StackedSteps`). Memory for the backward pass is then one
part's activations, whatever the depth (openai/glow's "memory-saving
gradients"; TFP has no equivalent).

The cost is one extra `forward` and one extra `inverse` per part (couplings
save one of the two conditioner calls, see `Coupling._replay_inverse`), and the
gradients agree with plain autodiff up to the round-off of the reconstruction.
"""

from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf

from tensorflow_probability import bijectors as tfb

from tfflow.bijectors.program import BijectorProgram, ProgramChain

__all__ = ["ReversibleChain", "inverse_vjp", "replay_inverse"]


def replay_inverse(bijector: tfb.Bijector, y: tf.Tensor, event_ndims: int, tape: tf.GradientTape):
    """Rebuilds `x = bijector.forward(y)` and replays `inverse(x)` under `tape`.

    Returns `(x, y_again, ildj, extra)`: `x` is watched by `tape`, `y_again` and
    `ildj` (at `event_ndims`) are recorded on it, and `extra` is a list of
    `(source, vjp)` pairs: further watched tensors whose gradient `g` adds
    `vjp(g)` to the gradient of `x` (a coupling's conditioning input, which it
    reads off `y` rather than off `x` to save a conditioner call).
    """
    replay = getattr(bijector, "_replay_inverse", None)
    if replay is not None and bijector.forward_min_event_ndims == event_ndims:
        return replay(y, tape)
    # A new tensor (not the cached forward output), so TFP's cache cannot answer the replay.
    x = tf.stop_gradient(bijector.forward(y))
    tape.watch(x)
    y_again = bijector.inverse(x)
    ildj = bijector.inverse_log_det_jacobian(x, event_ndims=event_ndims)
    return x, y_again, ildj, []


def _sum_to_shape(gradient: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """Sums `gradient` (of a broadcast sum) down to `target`'s shape: [N] or a scalar."""
    if target.shape.rank == 0:
        return tf.reduce_sum(gradient)
    if gradient.shape.rank == 0:
        return tf.broadcast_to(gradient, tf.shape(target))
    return gradient


def inverse_vjp(make_parts: Callable[[], Sequence[tfb.Bijector]], y: tf.Tensor, dy: tf.Tensor,
                dildj: tf.Tensor, params: Sequence[tf.Tensor], event_ndims: int):
    """Back-propagates through `tfb.Chain(make_parts()).inverse` from its output alone.

    `make_parts()` builds the bijectors from the tensors `params` (in `tfb.Chain`
    order: `inverse` applies the first part first); it is called under the tape,
    so whatever a bijector computes from `params` when it is built is
    differentiated too. `y` is the chain's output (latent side). Walking the
    parts from last to first, each part's input is rebuilt from its output
    (`forward`) and its `inverse` replayed (`replay_inverse`); then
    `(dy, dildj)` (the gradients of the output and of the summed
    `inverse_log_det_jacobian` at `event_ndims`) are pulled back part by part.
    Only this chain's activations are alive, not those of the chains around it.

    Returns `(x, dx, dparams)`: the rebuilt input, its gradient, and one gradient
    per parameter (zeros where unconnected, None for integer parameters).
    """
    params = list(params)
    watched = [p for p in params if p.dtype.is_floating]
    with tf.control_dependencies([dy]):  # rebuild once the later chain's gradient exists
        y = tf.identity(y)
    replays = []
    with tf.GradientTape(persistent=True, watch_accessed_variables=False) as tape:
        tape.watch(watched)
        for part in reversed(list(make_parts())):
            replays.append(replay_inverse(part, y, event_ndims, tape))
            y = replays[-1][0]
    totals = [tf.zeros_like(p) for p in watched]
    for x, y_again, ildj, extra in replays:
        sources = [x] + [s for s, _ in extra] + watched
        grads = tape.gradient([y_again, ildj], sources,
                              output_gradients=[dy, _sum_to_shape(dildj, ildj)])
        dx = tf.zeros_like(x) if grads[0] is None else grads[0]
        for (_, vjp), g in zip(extra, grads[1:1 + len(extra)]):
            if g is not None:
                dx = dx + vjp(g)
        totals = [t if g is None else t + tf.convert_to_tensor(g)
                  for t, g in zip(totals, grads[1 + len(extra):])]
        dy = dx
    del tape
    by_param = iter(totals)
    return tf.stop_gradient(y), dy, [next(by_param) if p.dtype.is_floating else None
                                     for p in params]


class ReversibleChain(ProgramChain):
    """A chain with a memory-saving gradient for the normalising direction.

    tfflow bijectors follow TFP: `forward` maps latent -> data (generation),
    `inverse` maps data -> latent (the paper's normalising direction). As in
    `tfb.Chain`, `inverse` applies the first part first:

    Inverse:  `z = b_n^{-1}( ... b_1^{-1}(x))`
    Forward:  `x = b_1( ... b_n(z))`
    Log-det:  the sum of the parts' log-dets.

    Part `i` is `program_i.bijector(params_i)`, given as a pair
    `(BijectorProgram, params)` so that its parameters are explicit tensors.
    The gradient of `inverse` and of `inverse_log_det_jacobian` with respect to
    the input and to every parameter stores no activations (module docstring).
    The parts must keep the event shape and be invertible example by example
    (batch statistics, as in training-mode batch normalisation, cannot be
    rebuilt from the output). `forward` (sampling) is a plain chain.

    #### Examples

    ```python
    def actnorm(params):
        return tfflow.bijectors.ActNorm(*params)
    program = tfflow.bijectors.BijectorProgram(actnorm, event_ndims=3)
    chain = ReversibleChain([(program, [loc1, log_scale1]), (program, [loc2, log_scale2])])
    ```

    #### References

    [1] Gomez, Ren, Urtasun & Grosse. The Reversible Residual Network:
        Backpropagation Without Storing Activations. NeurIPS 2017.
    [2] Kingma & Dhariwal. Glow. NeurIPS 2018 (openai/glow's memory-saving mode).
    """

    def __init__(self, parts: Sequence[tuple[BijectorProgram, Sequence[tf.Tensor]]], *,
                 event_ndims: int = 3, validate_args: bool = False,
                 name: str = "reversible_chain"):
        """Builds the bijector.

        Args:
          parts: `(program, params)` pairs in `tfb.Chain` order (the first is
            applied first by `inverse`); repeated runs are merged as in
            `ProgramChain`, and each merged step is rebuilt as a whole.
          event_ndims: rank of one event (3 for images, 1 for vectors); every
            program's `event_ndims` must equal it.
          validate_args: kept for TFP's signature.
          name: name scope.
        """
        super().__init__(parts, event_ndims=event_ndims, validate_args=validate_args,
                         name=name)

    def _inverse_and_log_det(self, y):
        programs = [program for program, _ in self._parts]
        sizes = [len(params) for _, params in self._parts]
        flat = [p for _, params in self._parts for p in params]

        def split(flat_params):
            out, start = [], 0
            for size in sizes:
                out.append(list(flat_params[start:start + size]))
                start += size
            return out

        @tf.custom_gradient
        def inverse(x, *flat_params):
            z, ildj = x, tf.zeros([], x.dtype)
            for program, params in zip(programs, split(flat_params)):
                z, ldj = program.inverse(z, params)
                ildj = ildj + ldj
            z, ildj = tf.identity(z), tf.identity(ildj)

            def gradient(dz, dildj):
                dz = tf.zeros_like(z) if dz is None else dz
                dildj = tf.zeros_like(ildj) if dildj is None else dildj
                y, grads = z, []
                leaves = [leaf for program, params in zip(programs, split(flat_params))
                          for leaf in program.leaves(params)]
                for program, params in reversed(leaves):
                    # Each part is rebuilt only once the later part's gradient exists
                    # (inverse_vjp orders it): otherwise the executor, which runs whatever
                    # is ready, rebuilds every part and holds their activations at once.
                    with program.scope(params):
                        y, dz, dparams = inverse_vjp(
                            lambda make=program.make, p=params: [make(p)], y, dz, dildj, params,
                            self._event_ndims)
                    grads = list(dparams) + grads
                return [dz] + grads

            return (z, ildj), gradient

        return inverse(y, *flat)
