"""Layers that arrange a flow: chains, squeezes, factoring out, priors, preprocessing."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from tensorflow_probability import bijectors as tfb

from tfflow import bijectors as fb
from tfflow.layers.base import FlowContext, FlowLayer, deprecated_alias, deserialize, serialize

__all__ = [
    "ChainLayer",
    "DiagonalScalingLayer",
    "FactorOutLayer",
    "FlattenLayer",
    "LearnedPriorLayer",
    "LogitLayer",
    "LogitPreprocessingLayer",
    "ShiftLayer",
    "SqueezeLayer",
    "UnsqueezeLayer",
]


@keras.saving.register_keras_serializable(package="tfflow")
class ChainLayer(FlowLayer):
    """Flow layers applied in order in the data -> latent direction.

    The bijector is `tfb.Chain(parts)`, whose inverse applies `parts[0]` first.
    """

    def __init__(self, layers: list, **kwargs):
        super().__init__(**kwargs)
        self.flow_layers = [deserialize(l) if isinstance(l, dict) else l for l in layers]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.flow_layers:
            if not layer.built:  # layers deserialised from a config come built
                layer.build(shape)
            shape = (shape[0],) + tuple(layer.output_event_shape(shape[1:]))
        self._event_shape = tuple(input_shape[1:])
        super().build(input_shape)

    @property
    def layers(self) -> list:
        """The parts, so that `model.summary(expand_nested=True)` lists them."""
        return list(self.flow_layers)

    def flow_children(self) -> list:
        return list(self.flow_layers)

    @property
    def keeps_event_shape(self) -> bool:
        # Built, the chain knows its event (squeeze ... unsqueeze keeps it); unbuilt, only
        # a chain of shape-keeping parts surely does.
        event = getattr(self, "_event_shape", None)
        if event is not None:
            return tuple(self.output_event_shape(event)) == event
        return all(layer.keeps_event_shape for layer in self.flow_layers)

    @property
    def per_example(self) -> bool:
        return all(layer.per_example for layer in self.flow_layers)

    def apply_children(self, x, apply):
        for layer in self.flow_layers:
            x = apply(layer, x)
        return x

    def data_domain(self):
        # The data meet the first part; later parts see its outputs, not the data.
        return self.flow_layers[0].data_domain() if self.flow_layers else None

    def output_event_shape(self, event_shape):
        for layer in self.flow_layers:
            event_shape = layer.output_event_shape(event_shape)
        return tuple(event_shape)

    def bijector(self, context=None):
        context = context or FlowContext()
        if context.init_records is not None or tf.executing_eagerly():
            return tfb.Chain([layer.bijector(context) for layer in self.flow_layers],
                             name=self.name)
        # Traced: runs of layers with weights become one ProgramChain, in which
        # identical steps (a level's K steps) call one shared traced function.
        parts, run = [], []

        def close_run():
            if run:
                parts.append(fb.ProgramChain(list(run), event_ndims=run[0][0].event_ndims,
                                             name=f"{self.name}_steps"))
                run.clear()

        for layer in self.flow_layers:
            program = layer.program(context) if layer.weights else None
            if program is None or (run and run[0][0].event_ndims != program.event_ndims):
                close_run()
            if program is None:
                parts.append(layer.bijector(context))
            else:
                run.append((program, [tf.convert_to_tensor(w) for w in layer.weights]))
        close_run()
        return parts[0] if len(parts) == 1 else tfb.Chain(parts, name=self.name)

    def program(self, context=None, *, compile=True):
        return None  # a chain shares its parts' programs, not one of its own

    def get_config(self):
        return {**super().get_config(), "layers": [serialize(l) for l in self.flow_layers]}


@keras.saving.register_keras_serializable(package="tfflow")
class SqueezeLayer(FlowLayer):
    """Space-to-depth in the data -> latent direction: [H, W, C] -> [H/2, W/2, 4C]."""

    keeps_event_shape = False

    def output_event_shape(self, event_shape):
        h, w, c = event_shape
        return (h // 2, w // 2, c * 4)

    def bijector(self, context=None):
        return fb.Squeeze()


@keras.saving.register_keras_serializable(package="tfflow")
class UnsqueezeLayer(FlowLayer):
    """Depth-to-space in the data -> latent direction: [H, W, 4C] -> [2H, 2W, C]."""

    keeps_event_shape = False

    def output_event_shape(self, event_shape):
        h, w, c = event_shape
        return (h * 2, w * 2, c // 4)

    def bijector(self, context=None):
        return tfb.Invert(fb.Squeeze())


@keras.saving.register_keras_serializable(package="tfflow")
class FactorOutLayer(FlowLayer):
    """Passes the first `channels` channels through `inner`; the others are final.

    Multi-scale flows: the factored channels leave the flow here (their prior
    was applied just before, by a split-prior coupling), the kept ones go on to
    the next level. `inner` must preserve its event shape.
    """

    def __init__(self, channels: int, inner, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.inner = deserialize(inner) if isinstance(inner, dict) else inner

    def build(self, input_shape):
        if not self.inner.built:  # deserialised from a config, it comes built
            self.inner.build(tuple(input_shape[:-1]) + (self.channels,))
        super().build(input_shape)

    @property
    def layers(self) -> list:
        """`[inner]`, so that `model.summary(expand_nested=True)` lists it."""
        return [self.inner]

    def flow_children(self) -> list:
        return [self.inner]

    @property
    def per_example(self) -> bool:
        return self.inner.per_example

    def apply_children(self, x, apply):
        kept = apply(self.inner, x[..., :self.channels])
        return tf.concat([kept, x[..., self.channels:]], axis=-1)

    def bijector(self, context=None):
        return fb.FactorOut(self.inner.bijector(context or FlowContext()), self.channels)

    def program(self, context=None, *, compile=True):
        return None  # the inner flow shares its parts' programs

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "inner": serialize(self.inner)}


@keras.saving.register_keras_serializable(package="tfflow")
class LearnedPriorLayer(FlowLayer):
    """Glow's learned top prior: per-channel mean and log-scale, optionally per class.

    In the data -> latent direction, `z = (x - mean) * exp(-log_scale)` where
    `mean`, `log_scale` = learned constants + (if `num_classes`) a learned
    embedding of the label + (if `context_units`) a learned linear map of the
    (standardised) context, `c @ context_kernel` [C_c, 2 channels]. All start
    at zero: a standard normal prior.
    """

    def __init__(self, num_classes: int | None = None, event_ndims: int = 3, *,
                 context_units: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.event_ndims = int(event_ndims)
        self.uses_labels = bool(self.num_classes)
        self.context_units = None if context_units is None else int(context_units)

    def build(self, input_shape):
        channels = input_shape[-1]
        self.channels = channels
        self.mean = self.add_weight(name="mean", shape=(channels,), initializer="zeros")
        self.log_scale = self.add_weight(name="log_scale", shape=(channels,), initializer="zeros")
        if self.num_classes:
            self.class_embedding = self.add_weight(
                name="class_embedding", shape=(self.num_classes, 2 * channels),
                initializer="zeros")
        if self.context_units is not None:
            self.context_kernel = self.add_weight(
                name="context_kernel", shape=(self.context_units, 2 * channels),
                initializer="zeros")
        super().build(input_shape)

    def bijector(self, context=None):
        context = context or FlowContext()
        mean = tf.convert_to_tensor(self.mean)
        log_scale = tf.convert_to_tensor(self.log_scale)
        if self.num_classes:
            if context.labels is None:
                raise ValueError(f"LearnedPriorLayer: this model is class-conditional "
                                 f"({self.num_classes} classes): pass `labels`.")
            labels = tf.convert_to_tensor(context.labels)
            offsets = tf.gather(tf.convert_to_tensor(self.class_embedding), labels)
            shape = tf.concat([tf.shape(labels), [1] * (self.event_ndims - 1),
                               [2 * self.channels]], 0)
            d_mean, d_log_scale = tf.split(tf.reshape(offsets, shape), 2, axis=-1)
            mean, log_scale = mean + d_mean, log_scale + d_log_scale
        if self.uses_context:
            values = tf.cast(self.context_values(context), mean.dtype)
            offsets = tf.tensordot(values, tf.convert_to_tensor(self.context_kernel),
                                   [[-1], [0]])
            # [..., 2C] -> [..., 1, ..., 2C]: the same offset at every pixel.
            shape = tf.concat([tf.shape(offsets)[:-1], [1] * (self.event_ndims - 1),
                               [2 * self.channels]], 0)
            d_mean, d_log_scale = tf.split(tf.reshape(offsets, shape), 2, axis=-1)
            mean, log_scale = mean + d_mean, log_scale + d_log_scale
        return fb.ElementwiseAffine(mean, log_scale, event_ndims=self.event_ndims)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "event_ndims": self.event_ndims, "context_units": self.context_units}


@keras.saving.register_keras_serializable(package="tfflow")
class ShiftLayer(FlowLayer):
    """Centres data in the data -> latent direction: `z = x - shift` (Glow: 0.5)."""

    def __init__(self, shift: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.shift = float(shift)

    def bijector(self, context=None):
        return tfb.Shift(tf.constant(self.shift, self.compute_dtype))

    def get_config(self):
        return {**super().get_config(), "shift": self.shift}


@keras.saving.register_keras_serializable(package="tfflow")
class LogitPreprocessingLayer(FlowLayer):
    """Owns nothing; hands out `tfflow.bijectors.LogitPreprocessing` (RealNVP's preprocessing).

    Data -> latent: `z = logit(alpha + (1 - 2 alpha) x)` for data in [0, 1].
    """

    def __init__(self, alpha: float = 0.05, **kwargs):
        super().__init__(**kwargs)
        self.alpha = float(alpha)

    def bijector(self, context=None):
        return fb.LogitPreprocessing(self.alpha)

    def data_domain(self):
        # alpha + (1 - 2 alpha) x must lie in (0, 1); samples reach the whole interval.
        edge = self.alpha / (1. - 2. * self.alpha)
        return (-edge, 1. + edge, f"the domain of the model's logit preprocessing "
                                  f"(alpha={self.alpha:g})")

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}


@keras.saving.register_keras_serializable(package="tfflow")
class FlattenLayer(FlowLayer):
    """Flattens an event (data -> latent): [H, W, C] -> [H*W*C], for vector flows on images."""

    keeps_event_shape = False

    def __init__(self, event_shape: tuple | list, **kwargs):
        super().__init__(**kwargs)
        self.event_shape = tuple(int(d) for d in event_shape)

    def output_event_shape(self, event_shape):
        return (int(np.prod(event_shape)),)

    def bijector(self, context=None):
        return tfb.Reshape(event_shape_out=self.event_shape,
                           event_shape_in=(int(np.prod(self.event_shape)),))

    def get_config(self):
        return {**super().get_config(), "event_shape": list(self.event_shape)}


@keras.saving.register_keras_serializable(package="tfflow")
class DiagonalScalingLayer(FlowLayer):
    """NICE's final scaling layer: `z = x * exp(log_scale)` per dimension, learned."""

    def __init__(self, event_ndims: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.event_ndims = int(event_ndims)

    def build(self, input_shape):
        self.log_scale = self.add_weight(name="log_scale", shape=tuple(input_shape[1:]),
                                         initializer="zeros")
        super().build(input_shape)

    def bijector(self, context=None):
        log_scale = tf.convert_to_tensor(self.log_scale)
        # ElementwiseAffine's inverse divides by exp(log_scale): NICE's S = -log_scale.
        return fb.ElementwiseAffine(tf.zeros_like(log_scale), -log_scale,
                                    event_ndims=self.event_ndims)

    def get_config(self):
        return {**super().get_config(), "event_ndims": self.event_ndims}


LogitLayer = deprecated_alias(LogitPreprocessingLayer, "LogitLayer")
