"""Conditioner networks: the deep part of a coupling, from the conditioning half to parameters."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfflow.layers.base import renamed_argument

__all__ = ["ContextualConditioner", "GlowConditioner", "MLPConditioner", "ResNetConditioner",
           "ZeroInitConv"]


def _flat_batch(fn, x, event_rank: int):
    """Applies `fn` (which wants exactly one batch axis) to `x` with any batch shape.

    Bijectors see unbatched events (`JointDistribution` samples, `log_prob` of a
    single point) and several batch axes; Keras convolutions and dense layers
    want one.
    """
    if x.shape.rank == event_rank + 1:
        return fn(x)
    batch_shape = tf.shape(x)[:tf.rank(x) - event_rank]
    flat = tf.reshape(x, tf.concat([[-1], tf.shape(x)[tf.rank(x) - event_rank:]], 0))
    out = fn(flat)
    return tf.reshape(out, tf.concat([batch_shape, tf.shape(out)[1:]], 0))


def check_context(owner: str, context_units: int | None, context) -> None:
    """A network built for `context_units` gets a context exactly when it has some."""
    if (context is None) != (context_units is None):
        raise ValueError(f"{owner}: expected {'a' if context_units else 'no'} context "
                         f"(context_units={context_units}), got "
                         f"{'none' if context is None else 'one'}.")


class ContextualConditioner(keras.layers.Layer):
    """Base of the conditioner networks: the conditioning part, and optionally a context.

    With `context_units = C`, `call(x, context)` takes a context [..., C]
    (broadcast against x's batch, and over the pixels of an image) and
    concatenates it to the network's input channels: the coupling's
    parameters then depend on the context too (a conditional coupling).
    """

    #: Rank of one input event: 1 for vectors, 3 for [H, W, C] images.
    event_rank: int = 1

    def __init__(self, *, context_units: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.context_units = None if context_units is None else int(context_units)
        if self.context_units is not None and self.context_units < 1:
            raise ValueError(f"{type(self).__name__}: expected context_units >= 1 or None, got "
                             f"{context_units}.")

    def input_with_context(self, input_shape) -> tuple:
        """The first layer's input shape: the conditioning channels plus the context's."""
        return tuple(input_shape[:-1]) + (input_shape[-1] + (self.context_units or 0),)

    def joined(self, x, context):
        """`x` with the context concatenated on its channels (checked against context_units)."""
        check_context(type(self).__name__, self.context_units, context)
        if context is None:
            return x
        context = tf.cast(context, x.dtype)
        rank = x.shape.rank
        # [..., C] -> [..., 1, 1, C] for images, then over x's batch and pixels.
        context = tf.reshape(context, tf.concat(
            [tf.shape(context)[:-1], tf.ones([self.event_rank - 1], tf.int32),
             [self.context_units]], 0))
        context = tf.broadcast_to(context, tf.concat([tf.shape(x)[:-1], [self.context_units]],
                                                     0))
        return tf.ensure_shape(tf.concat([x, context], -1), x.shape[:rank - 1].concatenate(
            [None if x.shape[-1] is None else x.shape[-1] + self.context_units]))

    def get_config(self):
        return {**super().get_config(), "context_units": self.context_units}


@keras.saving.register_keras_serializable(package="tfflow")
class ZeroInitConv(ContextualConditioner):
    """Glow's last conditioner layer: a zero-initialised conv with a learned output scale.

    `out = conv(x) * exp(log_gain)`, conv kernel, bias and `log_gain` all start
    at zero, so the coupling starts as the identity (with tfflow's default
    log-scale) and the gain lets the output grow quickly once it learns.

    With `context_units = C_c` (Glow's split priors in a conditional Glow):
    `out = (conv(x) + c @ context_kernel) * exp(log_gain)`, `context_kernel`
    [C_c, filters] zero-initialised too. A projection of the context, the same
    at every pixel, rather than C_c constant input channels: as exact (the
    output depends on x and c only) and C_c * filters multiply-adds per
    example instead of 9 C_c * filters per pixel.
    """

    event_rank = 3

    def __init__(self, filters: int, kernel_size: int = 3, gain_factor: float = 3.0, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.gain_factor = float(gain_factor)
        self.conv = keras.layers.Conv2D(self.filters, self.kernel_size, padding="same",
                                        kernel_initializer="zeros", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.log_gain = self.add_weight(name="log_gain", shape=(self.filters,),
                                        initializer="zeros")
        if self.context_units is not None:
            self.context_kernel = self.add_weight(
                name="context_kernel", shape=(self.context_units, self.filters),
                initializer="zeros")
        super().build(input_shape)

    def call(self, x, context=None):
        check_context(type(self).__name__, self.context_units, context)
        out = _flat_batch(self.conv, x, 3)
        if context is not None:
            term = tf.tensordot(tf.cast(context, out.dtype),
                                tf.cast(self.context_kernel, out.dtype), [[-1], [0]])
            # [..., filters] -> [..., 1, 1, filters]: the same at every pixel.
            out = out + tf.expand_dims(tf.expand_dims(term, -2), -2)
        return out * tf.exp(self.log_gain * self.gain_factor)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size, "gain_factor": self.gain_factor}


@keras.saving.register_keras_serializable(package="tfflow")
class GlowConditioner(ContextualConditioner):
    """Glow's coupling network: conv3x3 -> ReLU -> conv1x1 -> ReLU -> zero-init conv3x3."""

    def __init__(self, hidden_channels: int, out_channels: int, **kwargs):
        super().__init__(**kwargs)
        self.hidden_channels = int(hidden_channels)
        self.out_channels = int(out_channels)
        policy = self.dtype_policy
        self.conv_in = keras.layers.Conv2D(self.hidden_channels, 3, padding="same",
                                           activation="relu", dtype=policy)
        self.conv_mid = keras.layers.Conv2D(self.hidden_channels, 1, activation="relu",
                                            dtype=policy)
        self.conv_out = ZeroInitConv(self.out_channels, 3, dtype=policy)

    event_rank = 3

    def build(self, input_shape):
        hidden_shape = tuple(input_shape[:-1]) + (self.hidden_channels,)
        self.conv_in.build(self.input_with_context(input_shape))
        self.conv_mid.build(hidden_shape)
        self.conv_out.build(hidden_shape)
        super().build(input_shape)

    def call(self, x, context=None):
        return _flat_batch(lambda t: self.conv_out(self.conv_mid(self.conv_in(t))),
                           self.joined(x, context), 3)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.out_channels,)

    def get_config(self):
        return {**super().get_config(), "hidden_channels": self.hidden_channels,
                "out_channels": self.out_channels}


@keras.saving.register_keras_serializable(package="tfflow")
class ResNetConditioner(ContextualConditioner):
    """RealNVP's conditioner: a small ResNet of 3x3 convs with batch-norm-free residual blocks.

    conv3x3 -> [ReLU -> conv3x3 -> ReLU -> conv3x3, + skip] x blocks -> ReLU ->
    zero-init conv3x3. (RealNVP normalises inside the ResNet with batch norm;
    tfflow keeps the conditioner free of batch statistics so that log-densities
    do not depend on the batch, and normalises between couplings instead.)
    """

    event_rank = 3

    def __init__(self, hidden_channels: int | None = None, out_channels: int | None = None,
                 blocks: int = 2, *, filters: int | None = None, **kwargs):
        """Builds the layers.

        Args:
          hidden_channels: width of the hidden convs.
          out_channels: channels of the output (the coupling's parameters).
          blocks: residual blocks.
          filters: deprecated old name of `hidden_channels` (warns).
        """
        super().__init__(**kwargs)
        hidden_channels = renamed_argument("ResNetConditioner", "filters", filters,
                                           "hidden_channels", hidden_channels)
        if hidden_channels is None or out_channels is None:
            raise ValueError(f"ResNetConditioner: expected hidden_channels and out_channels, "
                             f"got hidden_channels={hidden_channels}, "
                             f"out_channels={out_channels}.")
        self.hidden_channels = int(hidden_channels)
        self.out_channels = int(out_channels)
        self.blocks = int(blocks)
        policy = self.dtype_policy
        self.conv_in = keras.layers.Conv2D(self.hidden_channels, 3, padding="same", dtype=policy)
        self.block_convs = [
            (keras.layers.Conv2D(self.hidden_channels, 3, padding="same", dtype=policy),
             keras.layers.Conv2D(self.hidden_channels, 3, padding="same", dtype=policy))
            for _ in range(self.blocks)]
        self.conv_out = ZeroInitConv(self.out_channels, 3, dtype=policy)

    def build(self, input_shape):
        hidden = tuple(input_shape[:-1]) + (self.hidden_channels,)
        self.conv_in.build(self.input_with_context(input_shape))
        for first, second in self.block_convs:
            first.build(hidden)
            second.build(hidden)
        self.conv_out.build(hidden)
        super().build(input_shape)

    def call(self, x, context=None):
        return _flat_batch(self._resnet, self.joined(x, context), 3)

    def _resnet(self, x):
        h = self.conv_in(x)
        for first, second in self.block_convs:
            h = h + second(tf.nn.relu(first(tf.nn.relu(h))))
        return self.conv_out(tf.nn.relu(h))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.out_channels,)

    def get_config(self):
        return {**super().get_config(), "hidden_channels": self.hidden_channels,
                "out_channels": self.out_channels, "blocks": self.blocks}


@keras.saving.register_keras_serializable(package="tfflow")
class MLPConditioner(ContextualConditioner):
    """Dense ReLU layers with a zero-initialised output layer, for vector events."""

    def __init__(self, hidden_units: list[int] | tuple[int, ...], out_features: int, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.out_features = int(out_features)
        policy = self.dtype_policy
        self.hidden = [keras.layers.Dense(u, activation="relu", dtype=policy)
                       for u in self.hidden_units]
        self.out = keras.layers.Dense(self.out_features, kernel_initializer="zeros",
                                      dtype=policy)

    def build(self, input_shape):
        shape = self.input_with_context(tuple(input_shape))
        for layer in self.hidden:
            layer.build(shape)
            shape = shape[:-1] + (layer.units,)
        self.out.build(shape)
        super().build(input_shape)

    def call(self, x, context=None):
        return _flat_batch(self._mlp, self.joined(x, context), 1)

    def _mlp(self, x):
        for layer in self.hidden:
            x = layer(x)
        return self.out(x)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.out_features,)

    def get_config(self):
        return {**super().get_config(), "hidden_units": list(self.hidden_units),
                "out_features": self.out_features}
