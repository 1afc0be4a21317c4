"""Coupling layers: own a conditioner network, hand out a coupling bijector."""

from __future__ import annotations

import keras

from tfflow import bijectors as fb
from tfflow.bijectors.partitions import partition_from_config, partition_to_config
from tfflow.layers.base import FlowLayer, deserialize, serialize

__all__ = ["AdditiveCouplingLayer", "AffineCouplingLayer", "LOG_SCALE_FUNCTIONS",
           "SplineCouplingLayer"]

LOG_SCALE_FUNCTIONS = {"tanh": fb.tanh_log_scale, "glow": fb.glow_log_scale}


class _CouplingLayer(FlowLayer):
    """Shared plumbing: the conditioner (a Keras layer) and the partition."""

    #: The bijector this layer hands out; it owns the conditioner's output width.
    bijector_class: type[fb.Coupling] = fb.Coupling

    @classmethod
    def conditioner_outputs(cls, channels: int, partition: fb.Partition | None = None,
                            **options) -> int:
        """Channels the conditioner must return (`bijector_class.conditioner_outputs`)."""
        return cls.bijector_class.conditioner_outputs(channels, partition, **options)

    def __init__(self, conditioner: keras.layers.Layer, partition: fb.Partition | dict | None = None,
                 event_ndims: int = 3, **kwargs):
        super().__init__(**kwargs)
        if isinstance(conditioner, dict):
            conditioner = deserialize(conditioner)
        if isinstance(partition, dict):
            partition = partition_from_config(partition)
        self.conditioner = conditioner
        self.partition = partition if partition is not None else fb.ChannelSplit()
        self.event_ndims = int(event_ndims)

    def build(self, input_shape):
        channels = input_shape[-1]
        cond_shape = tuple(input_shape[:-1]) + (self.partition.conditioning_channels(channels),)
        if not self.conditioner.built:  # deserialised conditioners come built
            self.conditioner.build(cond_shape)
        super().build(input_shape)

    @property
    def context_units(self) -> int | None:
        """The conditioner's context width C; None for an unconditional coupling."""
        return getattr(self.conditioner, "context_units", None)

    def network(self, context=None):
        """The conditioner as the bijector's callable, with the context fixed in it if any."""
        values = self.context_values(context)
        if values is None:
            return self.conditioner
        return lambda x_a: self.conditioner(x_a, values)

    def get_config(self):
        return {**super().get_config(), "conditioner": serialize(self.conditioner),
                "partition": partition_to_config(self.partition),
                "event_ndims": self.event_ndims}


@keras.saving.register_keras_serializable(package="tfflow")
class AffineCouplingLayer(_CouplingLayer):
    """RealNVP/Glow affine coupling; `log_scale` names the bounded scale: "tanh" or "glow"."""

    bijector_class = fb.AffineCoupling

    def __init__(self, conditioner, partition=None, event_ndims: int = 3,
                 log_scale: str = "tanh", **kwargs):
        super().__init__(conditioner, partition, event_ndims, **kwargs)
        if log_scale not in LOG_SCALE_FUNCTIONS:
            raise ValueError(f"AffineCouplingLayer: log_scale must be one of "
                             f"{sorted(LOG_SCALE_FUNCTIONS)}, got {log_scale!r}.")
        self.log_scale = log_scale

    def bijector(self, context=None):
        return fb.AffineCoupling(self.network(context), self.partition,
                                 log_scale_fn=LOG_SCALE_FUNCTIONS[self.log_scale],
                                 event_ndims=self.event_ndims, dtype=self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "log_scale": self.log_scale}


@keras.saving.register_keras_serializable(package="tfflow")
class AdditiveCouplingLayer(_CouplingLayer):
    """NICE's additive coupling."""

    bijector_class = fb.AdditiveCoupling

    def bijector(self, context=None):
        return fb.AdditiveCoupling(self.network(context), self.partition,
                                   event_ndims=self.event_ndims, dtype=self.compute_dtype)


@keras.saving.register_keras_serializable(package="tfflow")
class SplineCouplingLayer(_CouplingLayer):
    """Rational-quadratic spline coupling (Neural Spline Flows), `num_bins` on [-bound, bound]."""

    bijector_class = fb.SplineCoupling

    def __init__(self, conditioner, partition=None, event_ndims: int = 3, num_bins: int = 8,
                 bound: float = 3.0, **kwargs):
        super().__init__(conditioner, partition, event_ndims, **kwargs)
        self.num_bins = int(num_bins)
        self.bound = float(bound)

    @staticmethod
    def params_per_channel(num_bins: int) -> int:
        """Conditioner outputs per transformed channel (the bijector's rule)."""
        return fb.SplineCoupling.params_per_channel_for(num_bins=num_bins)

    def bijector(self, context=None):
        return fb.SplineCoupling(
            self.network(context), self.partition, num_bins=self.num_bins, bound=self.bound,
            event_ndims=self.event_ndims, dtype=self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "num_bins": self.num_bins, "bound": self.bound}
