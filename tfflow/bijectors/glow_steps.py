"""K Glow steps (ActNorm -> invertible 1x1 conv -> coupling) from stacked parameters.

`GlowSteps` is `StackedSteps` with Glow's step: its parameters are one dict of
`[K, ...]` tensors whose names and shapes `glow_steps_parameters` lists, and
the coupling's network (Glow's conv3x3 -> ReLU -> conv1x1 -> ReLU -> zero-init
conv3x3) is a pure function of them (`glow_network`), so that the K steps are
one traced step run in a loop (see `tfflow.bijectors.stacked_steps`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Mapping

import tensorflow as tf

from tfflow.bijectors._base import FlowBijector
from tfflow.bijectors._conv import (builtin_gradients, conv2d_same_dot_gradients,
                                     dot_gradients)
from tfflow.bijectors.actnorm import ActNorm
from tfflow.bijectors.coupling import (AdditiveCoupling, AffineCoupling,
                                       SplineCoupling, tanh_log_scale)
from tfflow.bijectors.invertible_1x1_conv import Invertible1x1Conv, LUInvertible1x1Conv
from tfflow.bijectors.partitions import ChannelSplit
from tfflow.bijectors.permute import PermuteChannels
from tfflow.bijectors.stacked_steps import StackedSteps, in_xla_context

__all__ = ["GLOW_COUPLINGS", "GLOW_PERMUTATIONS", "GatherChannels", "GlowSteps", "ParameterSpec",
           "context_projection", "glow_network", "glow_network_replayed",
           "glow_network_saving", "glow_steps_parameters"]

GLOW_COUPLINGS = ("affine", "additive", "spline")
GLOW_PERMUTATIONS = ("lu", "conv", "reverse", "shuffle")

#: The network's last conv is scaled by `exp(GAIN_FACTOR * log_gain)` (as `ZeroInitConv`).
GAIN_FACTOR = 3.0


@dataclasses.dataclass(frozen=True)
class ParameterSpec:
    """One stacked parameter: its per-step shape, dtype kind and whether it is trained."""

    shape: tuple
    trainable: bool = True
    integer: bool = False


def _params_per_channel(coupling: str, num_bins: int) -> int:
    """Network outputs per transformed channel: the coupling class's own rule."""
    classes = {"affine": AffineCoupling, "additive": AdditiveCoupling,
               "spline": SplineCoupling}
    return classes[coupling].params_per_channel_for(num_bins=num_bins)


def glow_steps_parameters(channels: int, hidden_channels: int, *, coupling: str = "affine",
                          permutation: str = "lu", num_bins: int = 8,
                          context_units: int | None = None) -> dict:
    """`{name: ParameterSpec}` of one Glow step on `channels` channels (without the K axis).

    ActNorm: `actnorm_loc`, `actnorm_log_scale` [C]. Mixing: "lu" has
    `permutation` (int, fixed), `lower`, `upper` [C, C], `sign_s` (fixed),
    `log_abs_s` [C]; "conv" a `kernel` [C, C]; "shuffle" a fixed `permutation`;
    "reverse" nothing. Network (C_a = conditioning channels, P = its outputs):
    `conv_in_kernel` [3, 3, C_a, H], `conv_in_bias` [H], `conv_mid_kernel`
    [1, 1, H, H], `conv_mid_bias` [H], `conv_out_kernel` [3, 3, H, P],
    `conv_out_bias` [P], `log_gain` [P]. With `context_units` C_c (a
    conditional Glow): `context_kernel` [C_c, H], the context's projection
    added to the first hidden layer (`glow_network`).
    """
    if coupling not in GLOW_COUPLINGS:
        raise ValueError(f"GlowSteps: coupling must be one of {GLOW_COUPLINGS}, got "
                         f"{coupling!r}.")
    if permutation not in GLOW_PERMUTATIONS:
        raise ValueError(f"GlowSteps: permutation must be one of {GLOW_PERMUTATIONS}, got "
                         f"{permutation!r}.")
    c, h = int(channels), int(hidden_channels)
    if c < 2 or h < 1:
        raise ValueError(f"GlowSteps: expected >= 2 channels and hidden_channels >= 1, got "
                         f"{c} and {h}.")
    if context_units is not None and int(context_units) < 1:
        raise ValueError(f"GlowSteps: expected context_units >= 1 or None, got "
                         f"{context_units}.")
    split = ChannelSplit(0)
    c_a = split.conditioning_channels(c)
    out = _params_per_channel(coupling, num_bins) * split.transformed_channels(c)
    specs = {"actnorm_loc": ParameterSpec((c,)), "actnorm_log_scale": ParameterSpec((c,))}
    if permutation == "lu":
        specs.update(permutation=ParameterSpec((c,), trainable=False, integer=True),
                     lower=ParameterSpec((c, c)), upper=ParameterSpec((c, c)),
                     sign_s=ParameterSpec((c,), trainable=False),
                     log_abs_s=ParameterSpec((c,)))
    elif permutation == "conv":
        specs["kernel"] = ParameterSpec((c, c))
    elif permutation == "shuffle":
        specs["permutation"] = ParameterSpec((c,), trainable=False, integer=True)
    specs.update(conv_in_kernel=ParameterSpec((3, 3, c_a, h)), conv_in_bias=ParameterSpec((h,)),
                 conv_mid_kernel=ParameterSpec((1, 1, h, h)), conv_mid_bias=ParameterSpec((h,)),
                 conv_out_kernel=ParameterSpec((3, 3, h, out)), conv_out_bias=ParameterSpec((out,)),
                 log_gain=ParameterSpec((out,)))
    if context_units is not None:
        specs["context_kernel"] = ParameterSpec((int(context_units), h))
    return specs


def context_projection(context: tf.Tensor, context_kernel: tf.Tensor) -> tf.Tensor:
    """The K steps' context terms `context @ context_kernel[k]`: [K, ..., H] from [..., C_c].

    One batched matmul for all K steps, outside the loop over the steps; the
    loop then slices step k's [..., H] like any stacked parameter (and its
    memory-saving gradient returns the gradient of this tensor, from which
    autodiff reaches both the kernel and the context).
    """
    context = tf.cast(context, context_kernel.dtype)
    return tf.einsum("...c,kch->k...h", context, context_kernel)


def glow_network(x: tf.Tensor, params: Mapping[str, tf.Tensor], *,
                 compute_dtype: tf.DType | None = None,
                 context_term: tf.Tensor | None = None) -> tf.Tensor:
    """Glow's coupling network on `x` [..., H, W, C_a] with one step's `params`.

    `relu(conv3x3(x)) -> relu(conv1x1(.)) -> conv3x3(.) * exp(3 log_gain)`, all
    convolutions 'same' with bias (the math of `tfflow.layers.GlowConditioner`).
    A conditional step adds `context_term` [..., H] (its row of
    `context_projection`, broadcastable against x's batch) to the first
    layer's pre-activation, the same at every pixel:

        relu(conv3x3(x) + conv_in_bias + context @ context_kernel) -> ...

    Why a projection and not the context as extra input channels (what
    `ContextualConditioner` does for RealNVP): both keep the coupling exact
    (the network sees only x_a and c), but a 3x3 conv over C_c constant
    channels costs 9 C_c H multiply-adds per pixel, where this costs C_c H
    per example, done for all K steps in one matmul before the loop.
    `compute_dtype` (e.g. bfloat16 under mixed precision) is the arithmetic's
    dtype; the result comes back in it (the coupling casts it).
    """
    return glow_network_saving(x, params, compute_dtype=compute_dtype,
                               context_term=context_term)[0]


def glow_network_saving(x: tf.Tensor, params: Mapping[str, tf.Tensor], *,
                        compute_dtype: tf.DType | None = None,
                        context_term: tf.Tensor | None = None) -> tuple[tf.Tensor, list]:
    """`(glow_network(x, ...), saved)`: also the activations its gradient reuses.

    `saved` = `[a1, a2, out]`, the two hidden layers after their ReLU and the
    output, on x's batch flattened to one axis: what `glow_network_replayed`
    takes to give the same output and gradients without running a convolution.
    """
    h, term, weights = _network_inputs(x, params, compute_dtype, context_term)
    conv2d, _ = _convolutions()
    pre1 = tf.nn.bias_add(conv2d(h, weights["conv_in_kernel"]), weights["conv_in_bias"])
    a1 = tf.nn.relu(pre1 if term is None else pre1 + term)
    a2 = tf.nn.relu(tf.nn.bias_add(conv2d(a1, weights["conv_mid_kernel"]),
                                   weights["conv_mid_bias"]))
    out = tf.nn.bias_add(conv2d(a2, weights["conv_out_kernel"]), weights["conv_out_bias"]) * \
        _gain(weights)
    return _unflatten(out, x), [a1, a2, out]


def glow_network_replayed(x: tf.Tensor, params: Mapping[str, tf.Tensor], saved: list, *,
                          compute_dtype: tf.DType | None = None,
                          context_term: tf.Tensor | None = None) -> tf.Tensor:
    """`glow_network(x, ...)` from the activations `glow_network_saving` kept for this `x`.

    Returns the saved output; its gradient is written out from the saved
    activations, layer by layer from the output back (with `g = exp(3 log_gain)`
    and `pre_i` the layers' pre-activations):

        d pre3 = d out * g,   d log_gain = 3 sum(d out * out)
        d W3, d a2 = conv gradients of (a2, W3) at d pre3,  d b3 = sum(d pre3)
        d pre2 = d a2 [a2 > 0], ...,  d pre1 = d a1 [a1 > 0]
        d x = conv input gradient of W1 at d pre1,  d term = sum over pixels of d pre1

    The backward loop of `GlowSteps` replays a step with it: the step's three
    forward convolutions are not run again. Exact: the same gradients as
    autodiff of `glow_network` (tested in float64).
    """
    h, term, weights = _network_inputs(x, params, compute_dtype, context_term)
    names = list(weights)
    _, conv_gradients = _convolutions()
    a1, a2, out = saved

    @tf.custom_gradient
    def layers(h, *values):
        w = dict(zip(names, values))

        def gradient(dout):
            dpre3 = dout * _gain(w)
            grads = {"log_gain": GAIN_FACTOR * tf.reduce_sum(dout * out, axis=[0, 1, 2]),
                     "conv_out_bias": tf.raw_ops.BiasAddGrad(out_backprop=dpre3)}
            da2, grads["conv_out_kernel"] = conv_gradients(a2, w["conv_out_kernel"], dpre3)
            dpre2 = tf.raw_ops.ReluGrad(gradients=da2, features=a2)
            grads["conv_mid_bias"] = tf.raw_ops.BiasAddGrad(out_backprop=dpre2)
            da1, grads["conv_mid_kernel"] = conv_gradients(a1, w["conv_mid_kernel"], dpre2)
            dpre1 = tf.raw_ops.ReluGrad(gradients=da1, features=a1)
            grads["conv_in_bias"] = tf.raw_ops.BiasAddGrad(out_backprop=dpre1)
            dh, grads["conv_in_kernel"] = conv_gradients(h, w["conv_in_kernel"], dpre1)
            extra = [] if term is None else [tf.reduce_sum(dpre1, axis=[1, 2], keepdims=True)]
            return [dh] + [grads[name] for name in names] + extra

        return tf.identity(out), gradient

    values = [weights[name] for name in names] + ([] if term is None else [term])
    return _unflatten(layers(h, *values), x)


def _convolutions():
    """`(conv2d, conv_gradients)` of the network where it is being traced.

    Under XLA the steps run in a loop, where XLA's builtin kernel gradient is
    slow: the kernel gradients are dots there (`_conv`); elsewhere TensorFlow's
    own kernels.
    """
    if in_xla_context():
        return conv2d_same_dot_gradients, dot_gradients
    return (lambda h, kernel: tf.nn.conv2d(h, kernel, 1, "SAME")), builtin_gradients


_NETWORK_WEIGHTS = ("conv_in_kernel", "conv_in_bias", "conv_mid_kernel", "conv_mid_bias",
                    "conv_out_kernel", "conv_out_bias", "log_gain")


def _network_inputs(x, params, compute_dtype, context_term):
    """`(h, term, weights)`: x as [N, H, W, C_a], the context term as [N, 1, 1, H] (or
    None) and the network's weights, all in the compute dtype."""
    dtype = tf.as_dtype(compute_dtype or x.dtype)
    weights = {name: tf.cast(params[name], dtype) for name in _NETWORK_WEIGHTS}
    rank = x.shape.rank
    h = tf.cast(tf.reshape(x, tf.concat([[-1], tf.shape(x)[rank - 3:]], 0)) if rank != 4
                else x, dtype)
    if context_term is None:
        return h, None, weights
    # [..., H] -> x's batch, flattened as h's: [N, 1, 1, H].
    term = tf.broadcast_to(tf.cast(context_term, dtype),
                           tf.concat([tf.shape(x)[:rank - 3], tf.shape(context_term)[-1:]], 0))
    return h, tf.reshape(term, tf.concat([[-1, 1, 1], tf.shape(term)[-1:]], 0)), weights


def _gain(weights):
    log_gain = weights["log_gain"]
    return tf.exp(log_gain * tf.cast(GAIN_FACTOR, log_gain.dtype))


def _unflatten(out, x):
    """The network's [N, H, W, P] output back on x's batch dimensions."""
    rank = x.shape.rank
    if rank == 4:
        return out
    return tf.reshape(out, tf.concat([tf.shape(x)[:rank - 3], tf.shape(out)[1:]], 0))


class GatherChannels(FlowBijector):
    """A channel permutation given as a (possibly traced) int tensor.

    Inverse: `z[..., i] = x[..., permutation[i]]`; forward: the inverse
    permutation; log-det 0. `PermuteChannels` needs the permutation as a
    constant; inside a loop over stacked steps it is step k's slice.
    """

    def __init__(self, permutation, *, event_ndims: int = 3, name: str = "gather_channels"):
        parameters = dict(locals())
        self._permutation = tf.convert_to_tensor(permutation, tf.int32)
        with tf.name_scope(name) as name:
            super().__init__(forward_min_event_ndims=int(event_ndims), is_constant_jacobian=True,
                             validate_args=False, parameters=parameters, name=name)

    def _zero(self, x):
        return tf.zeros([], x.dtype)

    def _forward_and_log_det(self, x):
        return tf.gather(x, tf.math.invert_permutation(self._permutation), axis=-1), self._zero(x)

    def _inverse_and_log_det(self, y):
        return tf.gather(y, self._permutation, axis=-1), self._zero(y)

    def _forward_log_det_jacobian(self, x):
        return self._zero(x)

    def _inverse_log_det_jacobian(self, y):
        return self._zero(y)


class GlowSteps(StackedSteps):
    """K Glow flow steps, each ActNorm -> invertible 1x1 conv -> coupling, at one scale.

    tfflow bijectors follow TFP: `forward` maps latent -> data (generation),
    `inverse` maps data -> latent (the paper's normalising direction). Step k,
    in the normalising direction, on an [H, W, C] event:

        a = (x - actnorm_loc[k]) * exp(-actnorm_log_scale[k])
        b = W_k a                                   (1x1 conv / permutation)
        (b_a, b_b) = split(b);  t = NN_k(b_a)       (glow_network)
        affine:   z_b = b_b * exp(s(t_s)) + t_m,  z_a = b_a
        additive: z_b = b_b + t;  spline: rational-quadratic in b_b

    Inverse log-det of step k: `-H W sum(actnorm_log_scale[k]) + H W log|det W_k|`
    plus the coupling's; the total is the sum over k. `inverse` applies step 0
    first; `forward` undoes step K-1 first.

    Conditional (a `context_kernel` [K, C_c, H] among the parameters and a
    `context` [..., C_c]): `NN_k(b_a, c)` adds `c @ context_kernel[k]` to its
    first hidden layer (`glow_network`). For a fixed context this is the same
    bijection of x, with the same triangular log-det; the context is
    broadcast against the batch of x.

    #### Examples

    ```python
    specs = tfflow.bijectors.glow_steps_parameters(4, 16)
    params = {name: tf.zeros((8,) + s.shape, tf.int32 if s.integer else tf.float32)
              for name, s in specs.items()}   # (use real weights: lower/upper/... from lu)
    steps = tfflow.bijectors.GlowSteps(params)
    ```

    #### References

    [1] Kingma & Dhariwal. Glow: Generative Flow with Invertible 1x1
        Convolutions. NeurIPS 2018. https://arxiv.org/abs/1807.03039
    """

    def __init__(self, params: Mapping[str, tf.Tensor], *, coupling: str = "affine",
                 permutation: str = "lu",
                 log_scale_fn: Callable[[tf.Tensor], tf.Tensor] = tanh_log_scale,
                 num_bins: int = 8, bound: float = 3.0, network_dtype=None,
                 memory_saving: bool = False, unroll: bool | None = None,
                 context: tf.Tensor | None = None,
                 validate_args: bool = False, name: str = "glow_steps"):
        """Builds the bijector.

        Args:
          params: `{name: [K, ...] tensor}`, exactly the names of
            `glow_steps_parameters(C, H, coupling=..., permutation=...,
            context_units=...)`.
          coupling: "affine", "additive" or "spline" (`num_bins` bins on
            [-bound, bound]).
          permutation: "lu", "conv", "reverse" or "shuffle".
          log_scale_fn: the affine coupling's bounded log-scale.
          num_bins, bound: the spline's.
          network_dtype: the network's arithmetic dtype (bfloat16/float16
            under mixed precision); default the parameters' dtype.
          memory_saving, unroll, validate_args, name: as `StackedSteps`.
          context: [..., C_c], required with a `context_kernel` parameter
            (a conditional Glow) and refused without one.
        """
        owner = type(self).__name__
        names = sorted(params)
        kernel = params.get("conv_in_kernel")
        if kernel is None or "actnorm_loc" not in params:
            raise ValueError(f"{owner}: expected the parameters of glow_steps_parameters(), "
                             f"got names {names}.")
        channels = int(params["actnorm_loc"].shape[-1])
        hidden = int(kernel.shape[-1])
        context_kernel = params.get("context_kernel")
        units = None if context_kernel is None or context_kernel.shape.rank != 3 else \
            int(context_kernel.shape[1])
        specs = glow_steps_parameters(channels, hidden, coupling=coupling,
                                      permutation=permutation, num_bins=num_bins,
                                      context_units=units)
        if set(specs) != set(params):
            raise ValueError(f"{owner}: expected parameters {sorted(specs)} for coupling="
                             f"{coupling!r}, permutation={permutation!r}, got {names}.")
        if units is None and context is not None:
            raise ValueError(f"{owner}: expected no context (the parameters have no "
                             f"`context_kernel`), got one.")
        if units is not None:
            got = None if context is None else tf.convert_to_tensor(context)
            if got is None or got.shape.rank == 0 or got.shape[-1] not in (None, units):
                shape = "none" if got is None else \
                    f"shape {got.shape.as_list() if got.shape.rank is not None else '?'}"
                raise ValueError(f"{owner}: expected a context [..., {units}] (context_kernel "
                                 f"is [K, {units}, {hidden}]), got {shape}.")
            context = got
        self._context = context
        for what, spec in specs.items():
            got = tuple(params[what].shape[1:])
            if got != spec.shape:
                raise ValueError(f"{owner}: expected `{what}` of shape [K, "
                                 f"{', '.join(map(str, spec.shape))}], got "
                                 f"{list(params[what].shape)}.")
        self._names = list(specs)
        self._coupling = coupling
        self._permutation = permutation
        self._log_scale_fn = log_scale_fn
        self._num_bins = int(num_bins)
        self._bound = float(bound)
        self._network_dtype = None if network_dtype is None else tf.as_dtype(network_dtype)
        self._channels = channels
        super().__init__(self._glow_step, [params[n] for n in self._names], event_ndims=3,
                         memory_saving=memory_saving, unroll=unroll,
                         validate_args=validate_args, name=name)

    @property
    def stacked_params(self) -> dict:
        """{name: stacked parameter [K, ...]}: what the constructor took as `params`."""
        return dict(zip(self._names, self.params))

    @property
    def context(self) -> tf.Tensor | None:
        """The fixed context [..., C_c] of a conditional Glow's steps; None otherwise."""
        return self._context

    def _loop_params(self) -> list:
        # A conditional step's `context_kernel` slot carries its context term
        # [K, ..., H] instead, computed here (when the bijector runs, so under the
        # caller's tape): the loop then slices it as any stacked parameter.
        if self._context is None:
            return self._params
        index = self._names.index("context_kernel")
        params = list(self._params)
        params[index] = context_projection(self._context, params[index])
        return params

    def _saved_dtypes(self) -> list:
        # The network's activations (glow_network_saving). Not under XLA, whose
        # TensorArrays need static element shapes: there the backward loop replays whole.
        if in_xla_context():
            return []
        return [self._network_dtype or self.dtype] * 3

    def _step_apply_saving(self, x, params_k):
        saved = []

        def network(conditioning, p, **options):
            out, activations = glow_network_saving(conditioning, p, **options)
            saved.extend(activations)
            return out

        y, log_det = self._apply_parts(self._glow_step(params_k, network), x, inverse=True)
        if len(saved) != len(self._saved_dtypes()):  # the replay pairs one call with one save
            raise ValueError(f"GlowSteps: expected one network call per step, got "
                             f"{len(saved) // 3}.")
        return y, log_det, saved

    def _replay_parts(self, params_k, saved) -> list:
        if not saved:
            return super()._replay_parts(params_k, saved)
        return self._glow_step(params_k, functools.partial(glow_network_replayed, saved=saved))

    def _glow_step(self, values, network=glow_network):
        """Step k's parts from its parameter slices `values`; `network` is the coupling's."""
        p = dict(zip(self._names, values))
        context_term = p.pop("context_kernel", None)  # the slot holds c @ context_kernel[k]
        dtype = p["actnorm_loc"].dtype
        parts = [ActNorm(p["actnorm_loc"], p["actnorm_log_scale"])]
        if self._permutation == "lu":
            parts.append(LUInvertible1x1Conv(p["permutation"], p["lower"], p["upper"],
                                             p["sign_s"], p["log_abs_s"]))
        elif self._permutation == "conv":
            parts.append(Invertible1x1Conv(p["kernel"]))
        elif self._permutation == "shuffle":
            parts.append(GatherChannels(p["permutation"]))
        else:
            parts.append(PermuteChannels.reverse(self._channels))

        def conditioner(conditioning):
            return network(conditioning, p, compute_dtype=self._network_dtype,
                           context_term=context_term)

        split = ChannelSplit(0)
        if self._coupling == "affine":
            parts.append(AffineCoupling(conditioner, split, log_scale_fn=self._log_scale_fn,
                                        dtype=dtype))
        elif self._coupling == "additive":
            parts.append(AdditiveCoupling(conditioner, split, dtype=dtype))
        else:
            parts.append(SplineCoupling(conditioner, split, num_bins=self._num_bins,
                                        bound=self._bound, dtype=dtype))
        return parts
