"""`GlowStepsLayer`: the K flow steps of one Glow scale, their weights stacked `[K, ...]`."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfflow import bijectors as fb
from tfflow.layers.base import FlowContext, FlowLayer
from tfflow.layers.coupling import LOG_SCALE_FUNCTIONS
from tfflow.layers.mixing import _random_rotation
from tfflow.layers.normalization import _InitializingNormalization

__all__ = ["GlowStepsLayer"]


def _stacked(initializer, num_steps: int):
    """An initializer that draws each of the K steps' slices separately.

    Glorot's fans must be those of one step's kernel, not of the [K, ...] stack.
    """
    def init(shape, dtype=None):
        return tf.stack([initializer(tuple(shape[1:]), dtype=dtype) for _ in range(num_steps)])
    return init


_NETWORK_PARAMETERS = ("conv_in_kernel", "conv_in_bias", "conv_mid_kernel", "conv_mid_bias",
                       "conv_out_kernel", "conv_out_bias", "log_gain",
                       # Conditional Glow only (last, so unconditional weights keep their order).
                       "context_kernel")
_GLOROT = ("conv_in_kernel", "conv_mid_kernel", "context_kernel")


@keras.saving.register_keras_serializable(package="tfflow")
class StackedGlowNetworks(keras.layers.Layer):
    """The K coupling networks of a `GlowStepsLayer`: their weights, stacked `[K, ...]`.

    A layer of its own so that it carries the networks' dtype policy (e.g.
    "mixed_bfloat16": float32 weights, bfloat16 arithmetic) while the flow's
    weights stay in the flow's dtype; `tfflow.bijectors.glow_network` computes.
    Glorot-uniform first two kernels (drawn per step), zero biases, and a zero
    last conv and gain: each coupling starts as the identity. A conditional
    Glow's `context_kernel` [K, C_c, H] (the context's projection into the
    first hidden layer) is Glorot-uniform per step too, as the first layer's
    other input.
    """

    def __init__(self, num_steps: int, **kwargs):
        super().__init__(**kwargs)
        self.num_steps = int(num_steps)

    def build_stacked(self, specs: dict):
        """Creates the `[K, ...]` weights named in `specs` (`glow_steps_parameters`)."""
        glorot = _stacked(keras.initializers.GlorotUniform(), self.num_steps)
        self.stacked = {}
        for name in _NETWORK_PARAMETERS:
            if name not in specs:  # context_kernel: conditional only
                continue
            initializer = glorot if name in _GLOROT else "zeros"
            self.stacked[name] = self.add_weight(
                name=name, shape=(self.num_steps,) + specs[name].shape, initializer=initializer,
                trainable=True)
        self.built = True

    def get_config(self):
        return {**super().get_config(), "num_steps": self.num_steps}


class _InitializingGlowSteps(_InitializingNormalization):
    """Glow's data-dependent init, step by step: each ActNorm standardises what it sees.

    Runs the K steps one at a time in the data -> latent direction; step k's
    ActNorm takes `actnorm_initial_parameters` of its input, and the stacked
    values are recorded as `{layer: (loc [K, C], log_scale [K, C])}` for
    `layer.assign_initial` (`FlowModel.initialize`). Unlike the single
    normalisations, step k's values depend on steps 0..k-1, so this runs the
    steps itself instead of `values_from` / `bijector_from`.
    """

    def __init__(self, layer: "GlowStepsLayer", params: dict, records: dict, context=None):
        self._params = params
        super().__init__(layer, records, context)

    def _inverse_and_log_det(self, y):
        locs, log_scales = [], []
        ildj = tf.zeros([], y.dtype)
        for k in range(self._layer.num_steps):
            loc, log_scale = fb.actnorm_initial_parameters(y, epsilon=self._layer.epsilon)
            params = {name: p[k:k + 1] for name, p in self._params.items()}
            params["actnorm_loc"], params["actnorm_log_scale"] = loc[None], log_scale[None]
            y, ldj = self._layer.steps_bijector(params, unroll=True,
                                                context=self._context)._inverse_and_log_det(y)
            locs.append(loc)
            log_scales.append(log_scale)
            ildj = ildj + ldj
        self._records[self._layer] = (tf.stack(locs), tf.stack(log_scales))
        return y, ildj


@keras.saving.register_keras_serializable(package="tfflow")
class GlowStepsLayer(FlowLayer):
    """Owns the weights of K Glow steps (ActNorm -> 1x1 conv -> coupling), stacked `[K, ...]`.

    Hands out a `tfflow.bijectors.GlowSteps`, which runs the K steps as one
    traced step in a loop (unrolled eagerly, and under XLA in the `forward`,
    sampling, direction). So a deeper Glow
    costs no more to trace, and Keras sees ~15 weights per scale instead of
    ~15 K, each `[K, ...]` (its optimizer's update is one op per weight too).

    Weights (see `tfflow.bijectors.glow_steps_parameters`): ActNorm's
    `actnorm_loc`/`actnorm_log_scale` (zero until `FlowModel.initialize`, which
    initialises them step by step from data; the non-trainable `initialized`
    flag is saved with the model), the mixing's (LU: `lower`, `upper`,
    `log_abs_s` trained, `permutation`, `sign_s` fixed, from a random rotation
    per step seeded `seed + k`), and the coupling network's (Glorot-uniform
    first two convs, zero last conv and gain: every coupling starts as the
    identity with `log_scale="tanh"`), which sit in the sub-layer `networks`
    (a `StackedGlowNetworks` with the networks' dtype policy).

    With `context_units = C_c` the steps are conditional: every coupling
    network adds `c @ context_kernel[k]` to its first hidden layer
    (`tfflow.bijectors.glow_network`), and `bijector(FlowContext(context=c))`
    needs the (standardised) context c [..., C_c].

    Args:
      num_steps: K.
      hidden_channels: width of the coupling networks.
      coupling: "affine", "additive" or "spline" (`num_bins`).
      permutation: "lu", "conv", "reverse" or "shuffle".
      log_scale: affine coupling's scale, "tanh" or "glow".
      seed: seeds the rotations (LU/conv) and shuffles; step k uses `seed + k`.
      memory_saving: the gradient rebuilds activations instead of storing them.
      network_dtype: the networks' dtype policy ("mixed_bfloat16"...); default
        the layer's.
      epsilon: ActNorm initialisation's smallest divided-out standard deviation.
      context_units: C_c, the flattened context of a conditional Glow; None
        (the default) for an unconditional one.
    """

    needs_data_init = True  # its ActNorms (FlowModel.initialize, `assign_initial`)

    def __init__(self, num_steps: int, hidden_channels: int, *, coupling: str = "affine",
                 permutation: str = "lu", log_scale: str = "tanh", num_bins: int = 8,
                 seed: int = 0, memory_saving: bool = False, network_dtype=None,
                 epsilon: float = 1e-6, context_units: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if int(num_steps) < 1 or int(hidden_channels) < 1:
            raise ValueError(f"GlowStepsLayer: num_steps and hidden_channels must be >= 1, got "
                             f"{num_steps} and {hidden_channels}.")
        if log_scale not in LOG_SCALE_FUNCTIONS:
            raise ValueError(f"GlowStepsLayer: log_scale must be one of "
                             f"{sorted(LOG_SCALE_FUNCTIONS)}, got {log_scale!r}.")
        self.num_steps = int(num_steps)
        self.hidden_channels = int(hidden_channels)
        self.coupling = coupling
        self.permutation = permutation
        self.log_scale = log_scale
        self.num_bins = int(num_bins)
        self.seed = int(seed)
        self.memory_saving = bool(memory_saving)
        self.network_dtype = network_dtype
        self.epsilon = float(epsilon)
        self.context_units = None if context_units is None else int(context_units)
        self.networks = StackedGlowNetworks(self.num_steps, name="networks",
                                            dtype=network_dtype or self.dtype_policy)
        fb.glow_steps_parameters(2, 1, coupling=coupling, permutation=permutation,
                                 context_units=self.context_units)  # checks

    def build(self, input_shape):
        channels = int(input_shape[-1])
        specs = fb.glow_steps_parameters(channels, self.hidden_channels,
                                         coupling=self.coupling, permutation=self.permutation,
                                         num_bins=self.num_bins,
                                         context_units=self.context_units)
        k = self.num_steps
        seeds = [self.seed + step for step in range(k)]
        fixed = {}
        if self.permutation == "lu":
            lus = [fb.lu_parameters(tf.constant(_random_rotation(channels, s))) for s in seeds]
            fixed = {name: np.stack([lu[name].numpy() for lu in lus]) for name in lus[0]}
        elif self.permutation == "conv":
            fixed["kernel"] = np.stack([_random_rotation(channels, s) for s in seeds])
        elif self.permutation == "shuffle":
            fixed["permutation"] = np.stack([np.random.default_rng(s).permutation(channels)
                                             for s in seeds])
        self.step_weights = {}
        for name, spec in specs.items():
            if name in _NETWORK_PARAMETERS:
                continue
            initializer = keras.initializers.Constant(fixed[name]) if name in fixed else "zeros"
            self.step_weights[name] = self.add_weight(
                name=name, shape=(k,) + spec.shape, initializer=initializer,
                trainable=spec.trainable, dtype="int32" if spec.integer else None)
        self.add_initialized_flag()
        if not self.networks.built:
            self.networks.build_stacked(specs)
        self.step_weights.update(self.networks.stacked)
        super().build(input_shape)

    def _network_compute_dtype(self):
        return self.networks.compute_dtype

    def steps_bijector(self, params: dict, *, unroll: bool | None = None,
                       context=None) -> fb.GlowSteps:
        """`GlowSteps` of this layer's architecture with the given stacked `params`."""
        return fb.GlowSteps(params, coupling=self.coupling, permutation=self.permutation,
                            log_scale_fn=LOG_SCALE_FUNCTIONS[self.log_scale],
                            num_bins=self.num_bins, network_dtype=self._network_compute_dtype(),
                            memory_saving=self.memory_saving, unroll=unroll, context=context,
                            name=self.name)

    def bijector(self, context: FlowContext | None = None) -> fb.GlowSteps:
        context = context or FlowContext()
        values = self.context_values(context)
        params = {name: tf.convert_to_tensor(w) for name, w in self.step_weights.items()}
        if context.init_records is not None:
            return _InitializingGlowSteps(self, params, context.init_records, values)
        return self.steps_bijector(params, context=values)

    def program(self, context=None, *, compile=True):
        return None  # its steps are one traced step already

    def assign_initial(self, loc, log_scale):
        """Sets the K ActNorms' `[K, C]` parameters (from `FlowModel.initialize`)."""
        for name, value in (("actnorm_loc", loc), ("actnorm_log_scale", log_scale)):
            weight = self.step_weights[name]
            weight.assign(tf.cast(value, weight.dtype))
        self.initialized.assign(1.)

    def get_config(self):
        return {**super().get_config(), "num_steps": self.num_steps,
                "hidden_channels": self.hidden_channels, "coupling": self.coupling,
                "permutation": self.permutation, "log_scale": self.log_scale,
                "num_bins": self.num_bins, "seed": self.seed,
                "memory_saving": self.memory_saving, "network_dtype": self.network_dtype,
                "epsilon": self.epsilon, "context_units": self.context_units}
