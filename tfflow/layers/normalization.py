"""ActNorm and batch-norm layers: per-channel affine weights, data-dependent state."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfflow import bijectors as fb
from tfflow.bijectors._base import FlowBijector
from tfflow.layers.base import FlowContext, FlowLayer, deprecated_alias

__all__ = ["ActNormLayer", "BatchNormLayer", "BatchNormalizationLayer"]


class _InitializingNormalization(FlowBijector):
    """A normalisation that takes its statistics from the batch it sees and records them.

    Used once, in the data -> latent direction, by `FlowModel.initialize`: the
    records (`{layer: values}`) are assigned with `layer.assign_initial(*values)`.
    Subclasses say which values a batch gives and which bijector they make; a
    conditional layer's (`TriangularAffineLayer`'s Gaussian regression) also
    gets the batch's `context` rows.
    """

    def __init__(self, layer, records: dict, context=None):
        self._layer = layer
        self._records = records
        self._context = context
        super().__init__(forward_min_event_ndims=layer.event_ndims, validate_args=False,
                         parameters={}, name=f"initializing_{layer.name}")

    def values_from(self, y) -> tuple:
        raise NotImplementedError

    def bijector_from(self, values) -> FlowBijector:
        raise NotImplementedError

    def _forward_and_log_det(self, x):
        raise ValueError(f"{type(self._layer).__name__}: data-dependent initialisation runs "
                         f"in the data -> latent direction (inverse/log_prob) only.")

    def _inverse_and_log_det(self, y):
        values = self.values_from(y)
        self._records[self._layer] = values
        return self.bijector_from(values)._inverse_and_log_det(y)


class _InitializingActNorm(_InitializingNormalization):
    """ActNorm whose parameters standardise the batch it sees (Glow's init)."""

    def values_from(self, y):
        return fb.actnorm_initial_parameters(y, event_ndims=self._layer.event_ndims,
                                             epsilon=self._layer.epsilon)

    def bijector_from(self, values):
        return fb.ActNorm(*values, event_ndims=self._layer.event_ndims)


class _InitializingBatchNorm(_InitializingNormalization):
    """Batch norm whose initial running averages are the moments of the batch it sees."""

    def values_from(self, y):
        return tf.nn.moments(y, axes=list(range(y.shape.rank - 1)))

    def bijector_from(self, values):
        return self._layer.bijector_from(*values)


@keras.saving.register_keras_serializable(package="tfflow")
class ActNormLayer(FlowLayer):
    """Owns ActNorm's `loc`, `log_scale` and an `initialized` flag.

    The flag is a non-trainable weight saved with the model, so a reloaded or
    resumed model is never initialised twice.
    """

    needs_data_init = True

    def __init__(self, event_ndims: int = 3, epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.event_ndims = int(event_ndims)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        channels = input_shape[-1]
        self.loc = self.add_weight(name="loc", shape=(channels,), initializer="zeros")
        self.log_scale = self.add_weight(name="log_scale", shape=(channels,),
                                         initializer="zeros")
        self.add_initialized_flag()
        super().build(input_shape)

    def bijector(self, context=None):
        context = context or FlowContext()
        if context.init_records is not None:
            return _InitializingActNorm(self, context.init_records)
        return fb.ActNorm(tf.convert_to_tensor(self.loc), tf.convert_to_tensor(self.log_scale),
                          event_ndims=self.event_ndims)

    def assign_initial(self, loc, log_scale):
        self.loc.assign(tf.cast(loc, self.loc.dtype))
        self.log_scale.assign(tf.cast(log_scale, self.log_scale.dtype))
        self.initialized.assign(1.)

    def get_config(self):
        return {**super().get_config(), "event_ndims": self.event_ndims, "epsilon": self.epsilon}


class _BatchStatisticsNormalization(FlowBijector):
    """Batch norm that normalises with its input's own moments and updates the averages."""

    def __init__(self, layer: "BatchNormalizationLayer"):
        self._layer = layer
        super().__init__(forward_min_event_ndims=layer.event_ndims, validate_args=False,
                         parameters={}, name="batch_statistics_normalization")

    def _forward_and_log_det(self, x):
        layer = self._layer
        return layer.bijector_from(tf.convert_to_tensor(layer.moving_mean),
                                   tf.convert_to_tensor(layer.moving_variance)
                                   )._forward_and_log_det(x)

    def _inverse_and_log_det(self, y):
        layer = self._layer
        mean, variance = tf.nn.moments(y, axes=list(range(y.shape.rank - 1)))
        layer.update_moving_statistics(mean, variance)
        return layer.bijector_from(mean, variance)._inverse_and_log_det(y)


@keras.saving.register_keras_serializable(package="tfflow")
class BatchNormalizationLayer(FlowLayer):
    """RealNVP's batch normalisation: running statistics as non-trainable weights.

    In training (`FlowContext.training`) the bijector normalises with the
    batch's moments (treated as constants in the log-det, as in the paper) and
    moves the running averages; otherwise it uses the running averages. Like
    ActNorm, the running averages start from the statistics of the first batch
    (`FlowModel.initialize`), so a model evaluated after a short fit does not
    use the placeholder mean 0 / variance 1.
    """

    needs_data_init = True
    per_example = False  # training normalises with the batch's moments

    def __init__(self, event_ndims: int = 3, momentum: float = 0.99, epsilon: float = 1e-4,
                 **kwargs):
        super().__init__(**kwargs)
        self.event_ndims = int(event_ndims)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        channels = input_shape[-1]
        self.log_gamma = self.add_weight(name="log_gamma", shape=(channels,), initializer="zeros")
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")
        self.moving_mean = self.add_weight(name="moving_mean", shape=(channels,),
                                           initializer="zeros", trainable=False)
        self.moving_variance = self.add_weight(name="moving_variance", shape=(channels,),
                                               initializer="ones", trainable=False)
        self.add_initialized_flag()
        super().build(input_shape)

    def assign_initial(self, mean, variance):
        self.moving_mean.assign(tf.cast(mean, self.moving_mean.dtype))
        self.moving_variance.assign(tf.cast(variance, self.moving_variance.dtype))
        self.initialized.assign(1.)

    def bijector_from(self, mean, variance) -> fb.BatchNormalization:
        """The bijector with these statistics and the layer's learned scale and shift."""
        return fb.BatchNormalization(mean, variance, tf.convert_to_tensor(self.log_gamma),
                                     tf.convert_to_tensor(self.beta), epsilon=self.epsilon,
                                     event_ndims=self.event_ndims)

    def update_moving_statistics(self, mean, variance):
        m = self.momentum
        self.moving_mean.assign(m * self.moving_mean + (1. - m) * tf.stop_gradient(mean))
        self.moving_variance.assign(m * self.moving_variance +
                                    (1. - m) * tf.stop_gradient(variance))

    def program(self, context=None, *, compile=True):
        if (context or FlowContext()).training:
            return None  # batch statistics, and it moves its running averages
        return super().program(context, compile=compile)

    def bijector(self, context=None):
        context = context or FlowContext()
        if context.init_records is not None:
            return _InitializingBatchNorm(self, context.init_records)
        if context.training:
            return _BatchStatisticsNormalization(self)
        return self.bijector_from(tf.convert_to_tensor(self.moving_mean),
                                  tf.convert_to_tensor(self.moving_variance))

    def get_config(self):
        return {**super().get_config(), "event_ndims": self.event_ndims,
                "momentum": self.momentum, "epsilon": self.epsilon}


#: The old name of `BatchNormalizationLayer` (loads `.keras` files saved under it).
BatchNormLayer = deprecated_alias(BatchNormalizationLayer, "BatchNormLayer")
