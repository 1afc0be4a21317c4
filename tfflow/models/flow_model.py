"""FlowModel: a Keras model that is a normalizing flow.

`log p(x) = log N(z; 0, I) + log|det dz/dx|`, `z = bijector.inverse(x)`, where
the bijector (latent -> data) is built from the model's layers' current
weights. Training minimises the negative log-likelihood per dimension with a
custom `train_step`, so `fit`/`evaluate` need no loss from the user and report
bits/dim.
"""

from __future__ import annotations

import contextlib
import math
import pathlib
import shutil
import tempfile
from typing import Any

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfflow.bijectors.program import inline_programs
from tfflow.data.core import bits_per_dim
from tfflow.layers.autoregressive import StandardizeLayer
from tfflow.layers.base import FlowContext, FlowLayer, deserialize, serialize
from tfflow.layers.structure import ChainLayer
from tfflow.models import _checks

tfd = tfp.distributions

__all__ = ["FlowModel", "FusedAdam", "LinearWarmup", "initialization_batch"]

# Rows per chunk of the initialisation pass through parts that take no statistics.
_INIT_CHUNK = 8192


@keras.saving.register_keras_serializable(package="tfflow")
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate rising linearly from 0 to `learning_rate` over `warmup_steps`, then flat."""

    def __init__(self, learning_rate: float = 1e-3, warmup_steps: int = 200):
        self.learning_rate = float(learning_rate)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = tf.cast(step, tf.float32) + 1.
        if self.warmup_steps <= 0:
            return tf.constant(self.learning_rate)
        return self.learning_rate * tf.minimum(1., step / float(self.warmup_steps))

    def get_config(self):
        return {"learning_rate": self.learning_rate, "warmup_steps": self.warmup_steps}


@keras.saving.register_keras_serializable(package="tfflow")
class FusedAdam(keras.optimizers.Adam):
    """Keras' Adam whose update is TensorFlow's fused `ResourceApplyAdam`: one op per weight.

    The same arguments, slots (`momentums`, `velocities`), checkpoints and
    math as `keras.optimizers.Adam`; with t the step, g the gradient:

        m <- m + (g - m) (1 - beta_1);   v <- v + (g^2 - v) (1 - beta_2)
        w <- w - lr sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)

    Keras writes this update as ~17 graph ops per weight (beta powers, casts
    and each arithmetic step), which a first training step traces and
    optimises once per weight: 0.6-0.9 s of CPU for a 29-weight Glow
    (benchmarks/README.md, issue 13). Here the scalars are made once per
    dtype and each weight is one kernel call. Where the fused kernel does not
    apply (`amsgrad`, a distribution strategy's mirrored weights, sparse
    gradients, dtypes other than float32/float64) it falls back to Keras'
    own update, unchanged.
    """

    def _fusable(self, grads, variables) -> bool:
        if self.amsgrad or tf.distribute.has_strategy():
            return False
        for grad, variable in zip(grads, variables):
            value = getattr(variable, "value", variable)
            if not isinstance(grad, tf.Tensor) or not isinstance(value, tf.Variable) or \
                    value.dtype not in (tf.float32, tf.float64):
                return False
        return True

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if not self._fusable(grads, trainable_variables):
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        scalars = {}
        for grad, variable in zip(grads, trainable_variables):
            dtype = variable.dtype
            if dtype not in scalars:
                step = tf.cast(self.iterations + 1, dtype)
                beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
                scalars[dtype] = dict(beta1_power=tf.pow(beta_1, step),
                                      beta2_power=tf.pow(beta_2, step),
                                      lr=tf.cast(learning_rate, dtype), beta1=beta_1,
                                      beta2=beta_2, epsilon=tf.cast(self.epsilon, dtype))
            index = self._get_variable_index(variable)
            tf.raw_ops.ResourceApplyAdam(
                var=variable.value.handle, m=self._momentums[index].value.handle,
                v=self._velocities[index].value.handle, grad=tf.cast(grad, dtype),
                use_locking=False, use_nesterov=False, **scalars[dtype])
        return None


def _as_seed(seed) -> tf.Tensor | None:
    """None, an int, or an int pair -> a stateless seed (int32[2]) or None."""
    if seed is None:
        return None
    seed = tf.convert_to_tensor(seed)
    if seed.shape.rank == 0:
        return tf.stack([tf.cast(seed, tf.int32), tf.constant(0, tf.int32)])
    return tf.cast(seed, tf.int32)


#: Entry points whose data shape the model: held to the training data's range.
_TRAINING_METHODS = ("fit", "initialize")


@keras.saving.register_keras_serializable(package="tfflow")
class FlowModel(keras.Model):
    """A normalizing flow as a Keras model: exact `log_prob`, `sample`, `fit`.

    Build one with `tfflow.models.Glow`, `RealNVP` or `NICE`, or from any
    `tfflow.layers.FlowLayer` (the flow, in the data -> latent direction) and
    the data's event shape. The base distribution is a standard normal over
    the latent event; `sample(temperature=T)` scales its standard deviation.

    Example:

        model = tfflow.models.Glow((8, 8, 1), scales=2, steps_per_scale=4,
                                   hidden_channels=32, num_levels=17)
        model.compile()
        model.fit(tfflow.data.load("digits", "train"), epochs=1)
        model.log_prob(x)            # nats per example
        model.sample(16, temperature=0.7, seed=1)
    """

    def __init__(self, flow: FlowLayer | dict, event_shape, *, num_levels: int | None = None,
                 num_classes: int | None = None, initialization_examples: int = 512,
                 context_shape=None, **kwargs):
        """Builds the model and all its weights.

        Args:
          flow: the flow's layers (data -> latent), e.g. a `ChainLayer`.
          event_shape: shape of one example, e.g. (8, 8, 1) or (2,).
          num_levels: quantisation levels B of the data when it is dequantised
            into [0, 1) (256 for 8-bit images, 17 for digits); None for
            continuous data. Sets the `D log B` term of bits/dim.
          num_classes: labels are required in `log_prob`/`sample` when set.
          initialization_examples: how many examples `fit` gives the
            data-dependent initialisation (ActNorm, the Gaussian start of
            vector models), taken from the start of the data.
          context_shape: shape of one example's context for a conditional
            model p(x | c) (the flow's layers must take a context of
            `prod(context_shape)` units); None for an unconditional model.
            The context is standardised inside the model (set by `initialize`).
        """
        super().__init__(**kwargs)
        self.flow = deserialize(flow) if isinstance(flow, dict) else flow
        self.event_shape = tuple(int(d) for d in event_shape)
        self.num_levels = None if num_levels is None else int(num_levels)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.initialization_examples = int(initialization_examples)
        self.context_shape = None if context_shape is None else \
            tuple(int(d) for d in context_shape)
        if self.context_shape is not None:
            if self.num_classes:
                raise ValueError("FlowModel: expected a context_shape or num_classes, got both; "
                                 "pass class labels as a one-hot context instead.")
            # The context's own standardisation, fixed by `initialize` and saved with the model.
            self.context_standardizer = StandardizeLayer(dtype=self.dtype_policy,
                                                         name="context_standardize")
            self.context_standardizer.build((None, self.context_units))
        self.num_dims = int(np.prod(self.event_shape))
        self.latent_shape = tuple(self.flow.output_event_shape(self.event_shape))
        if not self.flow.built:  # deserialised from a config, it comes built
            self.flow.build((None,) + self.event_shape)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.bits_per_dim_tracker = keras.metrics.Mean(name="bits_per_dim")
        # `loss` is nats per dimension (its scale does not grow with D, so one learning
        # rate suits 2-D points and images); `nll` is the same in nats per example.
        self.nll_tracker = keras.metrics.Mean(name="nll")
        self.built = True

    # Keras plumbing ---------------------------------------------------------------------------
    def build(self, input_shape=None):
        self.built = True

    def get_config(self):
        return {**super().get_config(), "flow": serialize(self.flow),
                "event_shape": list(self.event_shape), "num_levels": self.num_levels,
                "num_classes": self.num_classes,
                "initialization_examples": self.initialization_examples,
                "context_shape": None if self.context_shape is None else list(self.context_shape)}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @property
    def metrics(self):
        return [self.loss_tracker, self.bits_per_dim_tracker, self.nll_tracker]

    def call(self, inputs, training=False):
        """log p(x) per example (nats), so that `model(x)` and `model.predict` score data.

        `inputs` is what `fit` takes: `x`, `(x, labels)` for a class-conditional
        model or `(x, context)` for a conditional one, checked as in `log_prob`.
        """
        x, labels, context = self._unpack(inputs, "call")
        return self._log_prob(x, labels, training=bool(training), context=context)

    @property
    def context_units(self) -> int | None:
        """C = prod(context_shape), the flattened context the layers see; None if unconditional."""
        return None if self.context_shape is None else int(np.prod(self.context_shape))

    # The flow -----------------------------------------------------------------------------------
    @property
    def dtype_name(self) -> str:
        return self.flow.compute_dtype

    def bijector_for(self, labels=None, *, training: bool = False, context=None):
        """The latent -> data bijector from the current weights.

        `labels` for class priors; `context` [..., C] (flattened, in the data's
        units; standardised here) for a conditional model, broadcastable
        against the batch the bijector will see.
        """
        return self.flow.bijector(self.flow_context(labels, training=training, context=context))

    def flow_context(self, labels=None, *, training: bool = False, context=None) -> FlowContext:
        """The `FlowContext` the flow's layers see: `context` standardised, as `bijector_for`'s."""
        if context is not None:
            context = self.context_standardizer.bijector().inverse(
                tf.cast(context, self.dtype_name))
        return FlowContext(training=training, labels=labels, context=context)

    @property
    def bijector(self):
        """The latent -> data bijector (a `tfb.Bijector`) from the current weights."""
        return self.bijector_for(None)

    def base_distribution(self, temperature: float = 1.0, batch_shape=()) -> tfd.Distribution:
        dtype = self.dtype_name
        return tfd.Sample(tfd.Normal(tf.zeros(batch_shape, dtype), tf.cast(temperature, dtype)),
                          self.latent_shape)

    def conditional_distribution(self, labels=None, temperature: float = 1.0, *,
                                 context=None) -> tfd.TransformedDistribution:
        """`tfd.TransformedDistribution` of the data given `labels` or `context`.

        For a conditional model, `context` [rows, *context_shape] gives a
        distribution with batch shape [rows]: `log_prob(x)` scores x [rows,
        *event] row by row and `sample(n)` draws [n, rows, *event].
        """
        if self.num_classes and labels is None:
            raise ValueError(f"FlowModel: this model is class-conditional ({self.num_classes} "
                             f"classes); pass labels.")
        context = self._context(context, None, "conditional_distribution")
        batch_shape = () if context is None else tf.shape(context)[:1]
        return tfd.TransformedDistribution(self.base_distribution(temperature, batch_shape),
                                           self.bijector_for(labels, context=context))

    @property
    def distribution(self) -> tfd.TransformedDistribution:
        """The model as a `tfd.TransformedDistribution` built from the current weights.

        Conditional models have none: use `conditional_distribution(context=c)`.
        """
        if self.context_shape is not None:
            raise ValueError(f"FlowModel.distribution: this model is conditional on a context "
                             f"of shape {self.context_shape}; use "
                             f"conditional_distribution(context=c).")
        return self.conditional_distribution(None)

    def _pairs_expected(self, owner: str) -> str:
        return (f"{owner}: this model is conditional; expected (x, context) pairs with context "
                f"[batch, {', '.join(map(str, self.context_shape))}], got x alone.")

    def _context(self, context, n, method: str):
        """The checked context [n, C] (flattened) of a conditional model; None otherwise."""
        owner = f"FlowModel.{method}"
        if self.context_shape is None:
            if context is not None:
                raise ValueError(f"{owner}: this model is unconditional (no context_shape); "
                                 f"got a context.")
            return None
        if context is None:
            raise ValueError(f"{owner}: this model is conditional; expected "
                             f"context=[batch, {', '.join(map(str, self.context_shape))}], "
                             f"got none.")
        context = _checks.context(owner, context, self.context_shape, self.dtype_name, n)
        return tf.reshape(context, [-1, self.context_units])

    @property
    def training_range(self) -> _checks.ValueRange | None:
        """The values `fit` and `initialize` accept: [0, 1] (1e-3 slack) with `num_levels`."""
        return _checks.training_range(self.num_levels)

    @property
    def scoring_range(self) -> _checks.ValueRange | None:
        """The values `log_prob`, `predict`, `encode` and the export accept (None: any finite).

        With `num_levels` = B: [0.5 - h, 0.5 + h], h = max(B/2, 2) ([-8, 9] for
        B = 17): wide enough for the model's own samples, narrow enough to refuse
        data on the integer scale 0..B-1; narrowed to the flow's domain (a logit
        preprocessing's). See `_checks.scoring_range`.
        """
        return _checks.scoring_range(self.num_levels, self.flow.data_domain())

    def value_range(self, method: str) -> _checks.ValueRange | None:
        """The range rule of the entry point `method`: training data or scored values."""
        return self.training_range if method in _TRAINING_METHODS else self.scoring_range

    def _check_input(self, x, method: str, what: str = "x", *, leading: bool = False
                     ) -> tf.Tensor:
        """`x` as a checked [batch, *event_shape] tensor of the model's dtype (see `_checks`).

        With `leading`, `x` may have several leading batch dimensions, [*batch, *event_shape].
        """
        owner = f"FlowModel.{method}"
        x = _checks.floating(owner, what, x, self.dtype_name)
        _checks.batch_shape(owner, what, x, self.event_shape, leading=leading)
        return _checks.values(owner, what, x, self.value_range(method))

    @staticmethod
    def _flat_batch(tensor: tf.Tensor, event_shape):
        """[*batch, *event] -> ([prod(batch), *event], batch), batch None if it was one axis.

        The scoring methods take TFP's extra leading batch dimensions this way:
        flattened into one batch, run, and the results reshaped back
        (`_unflat_batch`). A one-axis batch passes through untouched.
        """
        batch_ndims = (tensor.shape.rank or 1) - len(event_shape)
        if batch_ndims == 1:
            return tensor, None
        batch = tf.shape(tensor)[:batch_ndims]
        return tf.reshape(tensor, [-1, *event_shape]), batch

    @staticmethod
    def _unflat_batch(tensor: tf.Tensor, batch) -> tf.Tensor:
        """The inverse of `_flat_batch` on a result [prod(batch), ...]."""
        if batch is None:
            return tensor
        return tf.reshape(tensor, tf.concat([batch, tf.shape(tensor)[1:]], 0))

    @staticmethod
    def _flat_rows(value, batch, inner_ndims: int):
        """Labels [*batch] or a context [*batch, *context_shape] flattened like x.

        Only a value with exactly the batch's leading dimensions is flattened;
        anything else (a scalar label, a wrong shape) is left to the checks,
        which name what they got.
        """
        if value is None or batch is None:
            return value
        batch_ndims = int(batch.shape[0])
        if tf.is_tensor(value):
            if value.shape.rank != batch_ndims + inner_ndims:
                return value
            return tf.reshape(value, tf.concat([[-1], tf.shape(value)[batch_ndims:]], 0))
        array = value if isinstance(value, np.ndarray) else np.asarray(value)
        if array.ndim != batch_ndims + inner_ndims:
            return value
        if not isinstance(value, np.ndarray) and inner_ndims and array.dtype.kind in "iu":
            # A nested list of ints is a float context, as a flat one converts.
            array = array.astype(np.float64)
        return array.reshape((-1,) + array.shape[batch_ndims:])

    def _labels(self, labels, n=None, method: str = "log_prob"):
        """int32 labels [n] for a class-conditional model (checked); None for the others."""
        if not self.num_classes:
            return None  # unconditional models ignore labels (tfflow.training relies on it)
        if labels is None:
            raise ValueError(f"FlowModel.{method}: this model is class-conditional "
                             f"({self.num_classes} classes); pass labels.")
        if n is None:  # a scalar label without a batch size: take it as one label
            n = tf.size(labels)
        return _checks.labels(f"FlowModel.{method}", labels, self.num_classes, n)

    def _base_log_prob(self, z):
        axes = list(range(-len(self.latent_shape), 0))
        return tf.reduce_sum(-0.5 * tf.square(z), axis=axes) - \
            0.5 * self.num_dims * math.log(2. * math.pi)

    def _log_prob(self, x, labels, training: bool, context=None):
        bijector = self.bijector_for(labels, training=training, context=context)
        z = bijector.inverse(x)
        ildj = bijector.inverse_log_det_jacobian(x, event_ndims=len(self.event_shape))
        return self._base_log_prob(z) + ildj

    # Public API ---------------------------------------------------------------------------------
    def log_prob(self, x, labels=None, *, context=None) -> tf.Tensor:
        """log p(x) (or log p(x | context)) in nats per example, shape [*batch].

        `x` is [*batch, *event_shape] (one leading batch dimension or more, as
        TFP's `log_prob` takes: `x` [4, 5, *event] gives [4, 5]; they are
        flattened into one batch and the result reshaped), floating point,
        finite, and for models with
        `num_levels` (dequantised data) inside `scoring_range` ([0, 1] widened
        for the model's own samples: [-8, 9] for 17 levels); `labels`
        (class-conditional models) are integers in [0, num_classes), one per
        example or a scalar for all. Anything else is a `ValueError` naming
        what was expected (`InvalidArgumentError` when called inside a
        `tf.function`). Every such `x` gets a log-density that is never NaN:
        finite wherever the dtype can hold it, and -inf (as `tfd.Normal` gives)
        only for points so far out that log p(x) < -3.4e38 in float32 (a
        vector model's standardised |z| above about 1e19). A conditional
        model needs `context` [*batch, *context_shape] (one row per example,
        with x's leading dimensions, or flattened to [prod(batch), ...]);
        labels likewise are [*batch], flat, or a scalar. An unconditional
        model refuses a context.
        """
        return self._checked_log_prob(x, labels, "log_prob", context)

    def _checked_log_prob(self, x, labels, method: str, context=None) -> tf.Tensor:
        x, dims = self._flat_batch(self._check_input(x, method, leading=True), self.event_shape)
        batch = tf.shape(x)[0]
        labels = self._labels(self._flat_rows(labels, dims, 0), batch, method)
        context = self._context(self._flat_rows(context, dims, len(self.context_shape or ())),
                                batch, method)
        return self._unflat_batch(self._log_prob_fn(x, labels, context), dims)

    def bits_per_dim(self, x, labels=None, *, context=None) -> tf.Tensor:
        """Per-example bits/dim [*batch], with the dequantisation term `D log B` with `num_levels`.

        Takes what `log_prob` takes (leading batch dimensions too).
        """
        nll = -self._checked_log_prob(x, labels, "bits_per_dim", context)
        return self.nll_to_bits_per_dim(nll / self.num_dims)

    def nll_to_bits_per_dim(self, nll_per_dim):
        """Nats per dimension (of [0,1)-scaled data) -> bits per dimension of the integer data."""
        # tfflow.data.bits_per_dim owns the formula; an NLL per dimension is D = 1.
        return bits_per_dim(nll_per_dim, 1, self.num_levels)

    def encode(self, x, labels=None, *, context=None) -> tf.Tensor:
        """Data -> latent (`bijector.inverse`): x [*batch, *event] -> z [*batch, *latent_shape].

        Inputs are checked as in `log_prob` (leading batch dimensions too).
        """
        x, dims = self._flat_batch(self._check_input(x, "encode", leading=True),
                                   self.event_shape)
        batch = tf.shape(x)[0]
        labels = self._labels(self._flat_rows(labels, dims, 0), batch, "encode")
        context = self._context(self._flat_rows(context, dims, len(self.context_shape or ())),
                                batch, "encode")
        return self._unflat_batch(self._encode_fn(x, labels, context), dims)

    def decode(self, z, labels=None, *, context=None) -> tf.Tensor:
        """Latent -> data (`bijector.forward`): z [*batch, *latent_shape], finite -> x [*batch, *event].

        One leading batch dimension or several, as in `log_prob`; labels and
        context follow `z`'s leading dimensions.
        """
        z = _checks.floating("FlowModel.decode", "z", z, self.dtype_name)
        _checks.batch_shape("FlowModel.decode", "z", z, self.latent_shape, leading=True)
        z, dims = self._flat_batch(_checks.values("FlowModel.decode", "z", z), self.latent_shape)
        batch = tf.shape(z)[0]
        labels = self._labels(self._flat_rows(labels, dims, 0), batch, "decode")
        context = self._context(self._flat_rows(context, dims, len(self.context_shape or ())),
                                batch, "decode")
        return self._unflat_batch(self._decode_fn(z, labels, context), dims)

    def sample(self, n: int | tuple[int, ...] = (), temperature: float = 1.0, seed=None,
               labels=None, *, context=None) -> tf.Tensor:
        """Samples of shape `[*n, *event_shape]`; `temperature` scales the latent std (Glow: 0.7).

        `n` is TFP's sample shape: an integer (`[n, *event_shape]`), a tuple of
        them (`sample((2, 3))` is `[2, 3, *event_shape]`, as
        `model.distribution.sample((2, 3))`), or `()` for one draw
        `[*event_shape]`; every entry an integer >= 1. The draw is
        `prod(n)` samples reshaped, so `sample((2, 3), seed=s)` holds the
        same numbers as `sample(6, seed=s)`. `seed` (an int or an int pair)
        makes the draw deterministic; `temperature` is finite and >= 0 (0
        decodes the mode); `labels` (class-conditional models): a scalar for
        all, or one per sample (`[*n]`, or flat `[prod(n)]`).

        A conditional model takes `context` [rows, *context_shape] and returns
        `n` samples per context row, `[rows, *n, *event_shape]`: the context's
        rows come first, as each row's samples belong together. Note that
        `conditional_distribution(context=c).sample(n)` follows TFP's
        convention instead, sample shape before batch shape:
        `[*n, rows, *event_shape]`.
        """
        shape = _checks.sample_shape("FlowModel.sample", n)
        total = shape[0] if len(shape) == 1 else int(np.prod(shape, dtype=np.int64))
        temperature = _checks.temperature("FlowModel.sample", temperature)
        seed = _checks.seed("FlowModel.sample", _as_seed(seed))
        context = self._context(context, None, "sample")
        if context is None and labels is not None and len(shape) > 1 and \
                np.ndim(labels) == len(shape):
            labels = tf.reshape(labels, [-1])  # one label per sample, in the sample shape
        labels = None if context is not None else self._labels(labels, total, "sample")
        x = self.draw(total, temperature, seed, self._decode_fn, labels=labels, context=context)
        if len(shape) == 1:
            return x
        rows = [] if context is None else [-1]
        return tf.reshape(x, rows + list(shape) + list(self.event_shape))

    def draw(self, n, temperature, seed, decode, *, labels=None, context=None) -> tf.Tensor:
        """Samples through `decode(z, labels, context)`: [n, *event], or [rows, n, *event].

        The one rule for a batch of contexts [rows, C] (checked, flattened):
        `n` latent draws per row, decoded with the row repeated, reshaped to
        [rows, n, *event]. `sample` and the SavedModel's `sample` signature
        both use it; the arguments are checked by them.
        """
        if context is None:
            return decode(self.sample_latent(n, temperature, seed), labels, None)
        rows = tf.shape(context)[0]
        z = self.sample_latent(rows * n, temperature, seed)
        x = decode(z, None, tf.repeat(context, n, axis=0))
        return tf.reshape(x, tf.concat([[rows, n], tf.constant(self.event_shape, tf.int32)], 0))

    def sample_latent(self, n, temperature=1.0, seed=None) -> tf.Tensor:
        """`n` latent draws `temperature * eps`, `eps ~ N(0, I)` of shape `[n, *latent_shape]`.

        The one sampling rule of the model: `sample` decodes these, and the
        SavedModel's `sample` signature traces this method. Usable inside a
        `tf.function`: `n` (int), `temperature` (float) and `seed` may be
        tensors; with a `seed` (int32[2]) the draw is stateless and
        deterministic, without one it uses TF's global generator. The
        arguments are not checked here (`sample` and the export check them).
        """
        shape = tf.concat([tf.reshape(tf.cast(n, tf.int32), [1]),
                           tf.constant(self.latent_shape, tf.int32)], 0)
        eps = tf.random.normal(shape, dtype=self.dtype_name) if seed is None else \
            tf.random.stateless_normal(shape, seed, dtype=self.dtype_name)
        return eps * tf.cast(temperature, self.dtype_name)

    def interpolate(self, x1, x2, steps: int = 8, labels=None, *, context=None) -> tf.Tensor:
        """Decodes `steps` points on the straight latent line from `x1` to `x2` (single examples).

        A conditional model takes one `context` [*context_shape] for the whole line.
        """
        steps = _checks.count("FlowModel.interpolate", "steps", steps, minimum=2)
        pair = self._check_input(tf.stack([x1, x2]), "interpolate", "x1/x2")
        repeat = lambda value, count: None if value is None else tf.stack(  # noqa: E731
            [value] * count)
        z = self.encode(pair, None if labels is None else tf.fill([2], labels),
                        context=repeat(context, 2))
        alpha = tf.reshape(tf.linspace(0., 1., steps), [-1] + [1] * len(self.latent_shape))
        alpha = tf.cast(alpha, z.dtype)
        line = (1. - alpha) * z[0] + alpha * z[1]
        return self.decode(line, None if labels is None else tf.fill([steps], labels),
                           context=repeat(context, steps))

    @property
    def _log_prob_fn(self):
        return self._traced("_log_prob_traced", lambda x, labels, context: self._log_prob(
            x, labels, training=False, context=context))

    @property
    def _encode_fn(self):
        return self._traced("_encode_traced", lambda x, labels, context: self.bijector_for(
            labels, context=context).inverse(x))

    @property
    def _decode_fn(self):
        return self._traced("_decode_traced", lambda z, labels, context: self.bijector_for(
            labels, context=context).forward(z))

    def _traced(self, attr: str, fn):
        if attr not in self.__dict__:
            # Not tracked by Keras: a plain cache of the traced function.
            object.__setattr__(self, attr, tf.function(fn, reduce_retracing=True,
                                                       autograph=False))
        return self.__dict__[attr]

    # Data-dependent initialisation (ActNorm, batch-norm running averages) ----------------------
    def _data_initialized_layers(self) -> list:
        return [layer for _, layer in self.flow.walk() if layer.needs_data_init]

    def _initialization_prefix(self) -> list:
        """The top-level parts the initialisation pass runs: up to the last data-initialised one.

        Parts between data-initialised ones run in chunks of rows (a vector
        model's flow between its standardisation and its Gaussian fit sees up
        to 100,000 rows).
        """
        parts = self.flow.flow_layers if isinstance(self.flow, ChainLayer) else [self.flow]
        needs = [any(layer.needs_data_init for _, layer in part.walk()) for part in parts]
        return parts[:max((i + 1 for i, need in enumerate(needs) if need), default=0)]

    @property
    def is_initialized(self) -> bool:
        layers = self._data_initialized_layers() + (
            [] if self.context_shape is None else [self.context_standardizer])
        return all(float(l.initialized.numpy()) == 1. for l in layers)

    def initialize(self, x, labels=None, *, force: bool = False, context=None) -> bool:
        """Glow's data-dependent initialisation from a batch (run once).

        Every ActNorm's parameters are set so that, on `x`, its output has mean 0
        and standard deviation 1 per channel, layer by layer in the data ->
        latent direction; batch-norm layers start their running averages at
        the moments of their input. Runs in the cross-replica context (outside
        `strategy.run`), so `x` is the global batch and every replica receives
        the same values. Returns False if already initialised (and not `force`).

        A conditional model needs the examples' `context` too: it first sets
        the context's standardisation from it, and its Gaussian start becomes
        the linear-Gaussian regression of x on the context.
        """
        if not force and self.is_initialized:
            return False
        x = self._check_input(x, "initialize")
        context = self._context(context, x.shape[0], "initialize")
        if context is not None:
            records: dict = {}
            self.context_standardizer.bijector(FlowContext(init_records=records)).inverse(context)
            self.context_standardizer.assign_initial(*records[self.context_standardizer])
            context = self.context_standardizer.bijector().inverse(context)
        records = {}
        labels = self._labels(labels, x.shape[0], "initialize")
        for part in self._initialization_prefix():
            if any(layer.needs_data_init for _, layer in part.walk()):
                x = part.bijector(FlowContext(labels=labels, context=context,
                                              init_records=records)).inverse(x)
            else:  # statistics-free: in chunks of rows, so memory stays flat in the batch
                chunk = lambda t, i: None if t is None else t[i:i + _INIT_CHUNK]  # noqa: E731
                x = tf.concat([part.bijector(FlowContext(
                    labels=chunk(labels, i), context=chunk(context, i))).inverse(chunk(x, i))
                    for i in range(0, int(x.shape[0]), _INIT_CHUNK)], 0)
        for layer, values in records.items():
            layer.assign_initial(*values)
        return True

    # Training -----------------------------------------------------------------------------------
    def compile(self, optimizer=None, *, learning_rate: float = 1e-3, warmup_steps: int = 200,
                clipnorm: float | None = None, **kwargs):
        """Compiles with tfflow's defaults: Adam with a linear learning-rate warm-up.

        No loss is needed: the model minimises its own negative log-likelihood.
        `fit` and `evaluate` report three numbers per batch, averaged:

        * `loss` = -log p(x) / D in nats per dimension (D = `num_dims`), the
          objective: its scale does not grow with D, so one learning rate and
          one early-stopping rule suit 2-D points and images. For quantised
          data p is the density on [0, 1)^D, without the dequantisation term.
        * `bits_per_dim` = (-log p(x) + D log B) / (D ln 2) for data with
          B = `num_levels` levels (the term D log B turns the density into a
          probability of the quantised pixels); `loss / ln 2` for continuous
          data.
        * `nll` = -log p(x) in nats per example (= `loss * D`), the unit of
          `log_prob`, `predict` and `tfflow-train`'s summary.

        A model with float16 layers (`dtype="mixed_float16"`) gets its optimizer
        wrapped in a `keras.optimizers.LossScaleOptimizer`, since float16
        gradients underflow without a loss scale.
        """
        if optimizer is None:
            optimizer = FusedAdam(LinearWarmup(learning_rate, warmup_steps), clipnorm=clipnorm)
        if (isinstance(optimizer, keras.optimizers.Optimizer)
                and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
                and any(layer.compute_dtype == "float16"
                        for layer in self._flatten_layers(include_self=False))):
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        """Re-compiles a model loaded by `keras.models.load_model`, optimizer state included.

        Keras skips this for models that override `compile`, which would leave a
        reloaded model without its optimizer (and a resumed run with a fresh one).
        """
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            # Create the optimizer's variables so that the saved ones load into them.
            self.optimizer.build(self.trainable_variables)

    def _unpack(self, data, method: str):
        """(x, labels, context) of a batch: `x`, `(x, labels)` or `(x, context)`, checked."""
        if isinstance(data, (tuple, list)) and len(data) == 1 and \
                isinstance(data[0], (tuple, list)):
            data = data[0]  # fit((x, c)) with arrays: Keras hands the pair as one input
        second = data[1] if isinstance(data, (tuple, list)) and len(data) > 1 else None
        x = data[0] if isinstance(data, (tuple, list)) else data
        if self.num_classes and second is None:
            raise ValueError(f"FlowModel.{method}: this model is class-conditional "
                             f"({self.num_classes} classes); pass labels: expected (x, "
                             f"labels), got x alone.")
        if self.context_shape is not None and second is None:
            raise ValueError(self._pairs_expected(f"FlowModel.{method}"))
        # In-graph checks (InvalidArgumentError); XLA drops them, so `fit`, `evaluate`
        # and `predict` check their data before the step as well (`_checks.checked_data`).
        x = self._check_input(x, method)
        batch = tf.shape(x)[0]
        labels = self._labels(second if self.num_classes else None, batch, method)
        context = self._context(second if self.context_shape is not None else None, batch,
                                method)
        return x, labels, context

    def _record(self, loss):
        self.loss_tracker.update_state(loss)
        self.bits_per_dim_tracker.update_state(self.nll_to_bits_per_dim(loss))
        self.nll_tracker.update_state(loss * self.num_dims)
        logs = {m.name: m.result() for m in self.metrics}
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras reduces multi-worker logs with `strategy.reduce(MEAN, v, axis=0)`,
            # which rejects scalars (tensorflow#72388); rank 1 reduces to the same scalar.
            logs = {name: tf.reshape(value, [1]) for name, value in logs.items()}
        return logs

    def _step_scope(self):
        """Where a train/test step is traced: XLA-compiled steps inline the shared programs."""
        return inline_programs() if self.jit_compile else contextlib.nullcontext()

    def train_step(self, data):
        with self._step_scope():
            return self._train_step(data)

    def test_step(self, data):
        with self._step_scope():
            return self._test_step(data)

    def _train_step(self, data):
        x, labels, context = self._unpack(data, "fit")
        with tf.GradientTape() as tape:
            log_prob = self._log_prob(x, labels, training=True, context=context)
            loss = -tf.reduce_mean(log_prob) / self.num_dims
            # Gradients are summed over replicas: scale so the sum is the global mean.
            scaled = loss / tf.distribute.get_strategy().num_replicas_in_sync
            # A LossScaleOptimizer (mixed_float16) scales here and unscales in apply.
            scaled = self.optimizer.scale_loss(scaled)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        return self._record(loss)

    def _test_step(self, data):
        x, labels, context = self._unpack(data, "evaluate")
        loss = -tf.reduce_mean(self._log_prob(x, labels, training=False,
                                              context=context)) / self.num_dims
        return self._record(loss)

    def predict_step(self, data):
        """log p(x) of a batch `x`, `(x, labels)` or `(x, context)` (Keras' unpacking drops c)."""
        with self._step_scope():
            x, labels, context = self._unpack(data, "predict")
            return self._log_prob(x, labels, training=False, context=context)

    def make_train_function(self, force=False):
        """Keras' train function, with the optimizer's variables made before it is traced.

        Made inside the first trace (Keras' default), Adam's two slots per weight
        are lifted out one `tf.cond` at a time and the step is traced twice: for
        a Glow with 200 weights that was most of the first step's time (measured).
        """
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)
        return super().make_train_function(force)

    def fit(self, x=None, y=None, *args, **kwargs):
        """Keras `fit`; runs the ActNorm initialisation first if it has not run yet.

        Logs `loss` (nats per dimension, what is minimised), `bits_per_dim`
        and `nll` (nats per example), with `val_` twins for validation data;
        `compile` says how they relate.

        The data is checked as in `log_prob` (`ValueError` for arrays,
        `InvalidArgumentError` when a bad batch of a dataset is read), also
        under `jit_compile=True`.
        """
        x, y, kwargs = _checks.checked_data(self, x, y, kwargs, "fit")
        if not self.is_initialized:
            # Labels or contexts passed as `y` (arrays) are needed too: a class prior
            # follows the ActNorms, a conditional Gaussian start regresses on the context.
            data = x if y is None else (x, y)
            conditional = self.context_shape is not None
            first, second = initialization_batch(data, self.num_classes or conditional,
                                                 self.initialization_examples)
            if conditional and second is None:
                raise ValueError(self._pairs_expected("FlowModel.fit"))
            if conditional:
                self.initialize(first, context=second)
            else:
                self.initialize(first, second)
        if isinstance(x, tf.data.Dataset) and not args:
            # A dataset orders itself; Keras would warn that its default shuffle=True is ignored.
            kwargs.setdefault("shuffle", False)
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        """Keras `evaluate`: `loss` (nats per dimension), `bits_per_dim`, `nll` (nats per example).

        Data checked as in `fit`; pass `return_dict=True` to get the names.
        """
        x, y, kwargs = _checks.checked_data(self, x, y, kwargs, "evaluate")
        return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        """log p(x) per example (nats) for `x`, `(x, labels)` or `(x, context)` arrays or a dataset.

        Returns a NumPy array [N] of log-densities in nats, one per example
        (not bits/dim, not a loss): the same numbers as `log_prob`, computed
        batch by batch as Keras' `predict` does. The data is checked as in
        `fit` (one batch axis, `[N, *event_shape]`), also under
        `jit_compile=True`.
        """
        x, _, kwargs = _checks.checked_data(self, x, None, kwargs, "predict")
        return super().predict(x, *args, **kwargs)

    def export(self, filepath, format: str = "tf_saved_model", verbose=None,  # noqa: A002
               input_signature=None, *, max_samples: int | None = None, **kwargs
               ) -> pathlib.Path:
        """Writes the model as a SavedModel directory at `filepath` (Keras' `export`).

        `tfflow.export.export_saved_model` writes it: the SavedModel holds
        only core TensorFlow ops (load it with `tf.saved_model.load`, without
        tfflow or TFP) and tfflow's signatures, not Keras' `serve` endpoint:
        `serving_default` and `log_prob` (`x` -> `log_prob` [N] in nats,
        `bits_per_dim` [N], `valid` [N]), `encode` (`x` -> `z`, `valid`),
        `decode` (`z` -> `x`, `valid`) and `sample` (`n`, `seed` int32[2],
        `temperature` -> `samples`). `log_prob`, `encode` and `decode`
        answer per row: a row with NaN/Inf or out-of-range values gets
        `valid = False` and NaN outputs, and the other rows are unaffected.
        Class-conditional models add a `label` input, conditional ones a
        `context`.

        Unlike `export_saved_model(model, base)`, which writes TF Serving's
        versioned layout `base/<version>/`, this writes the SavedModel at
        `filepath` itself, as Keras' `export` does; `filepath` must not exist
        yet (or be an empty folder).

        Args:
          filepath: the SavedModel's directory.
          format: only "tf_saved_model"; any other format is a `ValueError`
            (the flow's signatures are TensorFlow functions).
          verbose: unused (Keras' argument); tfflow prints nothing.
          input_signature: must be None: the signatures and their input
            shapes are fixed by the model (batch size variable).
          max_samples: the most samples one `sample` request may draw
            (default `tfflow.export.DEFAULT_MAX_SAMPLES`).

        Returns:
          The SavedModel's directory, `filepath` as a `pathlib.Path`.
        """
        del verbose
        from tfflow import export as export_module  # tfflow.export imports this module

        if format != "tf_saved_model":
            raise ValueError(f"FlowModel.export: expected format='tf_saved_model', got "
                             f"{format!r}; a flow exports as a SavedModel with its log_prob, "
                             f"encode, decode and sample signatures "
                             f"(tfflow.export.export_saved_model).")
        if input_signature is not None or kwargs:
            given = sorted(kwargs) + (["input_signature"] if input_signature is not None else [])
            raise ValueError(f"FlowModel.export: expected only filepath and max_samples, got "
                             f"{', '.join(given)}; the signatures' inputs are fixed by the "
                             f"model (see tfflow.export).")
        target = pathlib.Path(filepath)
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise ValueError(f"FlowModel.export: expected a new path for the SavedModel, got "
                             f"{str(target)!r}, which exists; remove it or choose another "
                             f"(tfflow.export.export_saved_model writes numbered versions "
                             f"under one base folder).")
        target.parent.mkdir(parents=True, exist_ok=True)
        # Written as version 1 under a staging folder beside the target, then renamed:
        # a crash never leaves a half-written SavedModel at `filepath`.
        staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            written = export_module.export_saved_model(
                self, staging, version=1,
                max_samples=export_module.DEFAULT_MAX_SAMPLES if max_samples is None
                else max_samples)
            if target.exists():
                target.rmdir()  # the empty folder checked above
            written.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def summary(self, *args, **kwargs):
        kwargs.setdefault("expand_nested", True)
        return super().summary(*args, **kwargs)


def initialization_batch(data: Any, num_classes, size: int = 512):
    """Up to `size` examples (x, second) from what was passed to `fit`.

    `second` is the labels (or contexts) when `num_classes` is truthy, else None.
    """
    if isinstance(data, tf.data.Dataset):
        xs, labels, count = [], [], 0
        for element in data:
            x, label = (element[0], element[1] if len(element) > 1 else None) \
                if isinstance(element, (tuple, list)) else (element, None)
            xs.append(x)
            labels.append(label)
            count += int(x.shape[0])
            if count >= size:
                break
        x = tf.concat(xs, 0)[:size]
        label = tf.concat(labels, 0)[:size] if num_classes and labels[0] is not None else None
        return x, label
    if isinstance(data, keras.utils.PyDataset):
        batch = data[0]
        return initialization_batch(batch if isinstance(batch, (tuple, list)) else (batch,),
                                     num_classes, size)
    if isinstance(data, (tuple, list)):
        return data[0][:size], (data[1][:size] if num_classes and len(data) > 1 else None)
    if not hasattr(data, "__getitem__") or not hasattr(data, "shape"):
        raise ValueError(f"FlowModel.fit: cannot take a data-dependent initialisation batch "
                         f"from a {type(data).__name__} without consuming it; call "
                         f"model.initialize(x) with a batch first.")
    return data[:size], None
