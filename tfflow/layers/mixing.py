"""Layers that mix channels: Glow's invertible 1x1 convolutions and fixed permutations."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfflow import bijectors as fb
from tfflow.layers.base import FlowLayer, deprecated_alias

__all__ = ["Conv1x1Layer", "Invertible1x1ConvLayer", "LUConv1x1Layer", "LUInvertible1x1ConvLayer",
           "PermutationLayer", "PermuteChannelsLayer"]


def _random_rotation(channels: int, seed: int) -> np.ndarray:
    """Glow's initialisation: a random orthogonal matrix (log|det| = 0)."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(channels, channels)))
    return q


class _SeededMixingLayer(FlowLayer):
    """Shared config of the 1x1 convolution layers: event rank and initialisation seed."""

    def __init__(self, event_ndims: int = 3, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.event_ndims = int(event_ndims)
        self.seed = int(seed)

    def get_config(self):
        return {**super().get_config(), "event_ndims": self.event_ndims, "seed": self.seed}

    def function_config(self):
        config = super().function_config()
        config.pop("seed")  # it only initialises the weights
        return config


@keras.saving.register_keras_serializable(package="tfflow")
class LUInvertible1x1ConvLayer(_SeededMixingLayer):
    """Owns `tfflow.bijectors.LUInvertible1x1Conv`'s weights (Glow's choice; XLA-friendly).

    Trainable: the strict lower and upper triangles and `log|s|`. Fixed: the
    permutation and the signs of `s`, taken from the initial random rotation.
    """

    def build(self, input_shape):
        channels = input_shape[-1]
        lu = {k: v.numpy() for k, v in
              fb.lu_parameters(tf.constant(_random_rotation(channels, self.seed))).items()}
        const = keras.initializers.Constant
        self.permutation = self.add_weight(name="permutation", shape=(channels,), dtype="int32",
                                           initializer=const(lu["permutation"]), trainable=False)
        self.sign_s = self.add_weight(name="sign_s", shape=(channels,),
                                      initializer=const(lu["sign_s"]), trainable=False)
        self.lower = self.add_weight(name="lower", shape=(channels, channels),
                                     initializer=const(lu["lower"]))
        self.upper = self.add_weight(name="upper", shape=(channels, channels),
                                     initializer=const(lu["upper"]))
        self.log_abs_s = self.add_weight(name="log_abs_s", shape=(channels,),
                                         initializer=const(lu["log_abs_s"]))
        super().build(input_shape)

    def bijector(self, context=None):
        read = tf.convert_to_tensor
        return fb.LUInvertible1x1Conv(read(self.permutation), read(self.lower), read(self.upper),
                                      read(self.sign_s), read(self.log_abs_s),
                                      event_ndims=self.event_ndims)


@keras.saving.register_keras_serializable(package="tfflow")
class Invertible1x1ConvLayer(_SeededMixingLayer):
    """Owns `tfflow.bijectors.Invertible1x1Conv`'s full matrix `W`, initialised to a rotation."""

    def build(self, input_shape):
        channels = input_shape[-1]
        self.kernel = self.add_weight(
            name="kernel", shape=(channels, channels),
            initializer=keras.initializers.Constant(_random_rotation(channels, self.seed)))
        super().build(input_shape)

    def bijector(self, context=None):
        return fb.Invertible1x1Conv(tf.convert_to_tensor(self.kernel),
                                    event_ndims=self.event_ndims)


@keras.saving.register_keras_serializable(package="tfflow")
class PermuteChannelsLayer(FlowLayer):
    """`tfflow.bijectors.PermuteChannels` (no weights): "reverse" or a seeded "shuffle"."""

    def __init__(self, kind: str = "reverse", seed: int = 0, event_ndims: int = 3, **kwargs):
        super().__init__(**kwargs)
        if kind not in ("reverse", "shuffle"):
            raise ValueError(f"{type(self).__name__}: kind must be 'reverse' or 'shuffle', got "
                             f"{kind!r}.")
        self.kind = kind
        self.seed = int(seed)
        self.event_ndims = int(event_ndims)

    def build(self, input_shape):
        self.channels = int(input_shape[-1])
        super().build(input_shape)

    def bijector(self, context=None):
        if self.kind == "reverse":
            return fb.PermuteChannels.reverse(self.channels, event_ndims=self.event_ndims)
        return fb.PermuteChannels.shuffle(self.channels, self.seed, event_ndims=self.event_ndims)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "seed": self.seed,
                "event_ndims": self.event_ndims}


LUConv1x1Layer = deprecated_alias(LUInvertible1x1ConvLayer, "LUConv1x1Layer")
Conv1x1Layer = deprecated_alias(Invertible1x1ConvLayer, "Conv1x1Layer")
PermutationLayer = deprecated_alias(PermuteChannelsLayer, "PermutationLayer")
