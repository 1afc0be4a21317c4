"""How a coupling splits its input into a conditioning part and a transformed part.

A partition answers four questions for a coupling bijector:
`split(x) -> (conditioning, transformed)`, `merge(x, y_transformed) -> y` (the
conditioning part passes through unchanged), `reduce(elementwise_log_det)`
(sum over exactly the transformed entries) and `transformed_channels(C)` (how
many channels the conditioner must produce parameters for).

* `ChannelSplit`: halves of the last axis (Glow, RealNVP's channel-wise
  couplings, "half" masks on vectors). The conditioner sees half the channels.
* `Checkerboard`: RealNVP's spatial checkerboard on [H, W, C] images.
* `AlternatingMask`: odd/even entries of the last axis (NICE, RealNVP on
  vectors); works for odd sizes.

Masked partitions hand the conditioner the masked input (full shape, zeros
where transformed) and combine `y = m * x + (1 - m) * f(x)`.
"""

from __future__ import annotations

import abc

import tensorflow as tf

__all__ = ["Partition", "ChannelSplit", "Checkerboard", "AlternatingMask", "partition_from_config"]


def _check_parity(owner: str, parity: int) -> int:
    if parity not in (0, 1):
        raise ValueError(f"{owner}: parity must be 0 or 1, got {parity!r}.")
    return int(parity)


class Partition(abc.ABC):
    """Interface: the split of a coupling's input (see the module docstring)."""

    #: Smallest event rank this partition understands (1: vectors, 3: images).
    min_event_ndims: int = 1

    @abc.abstractmethod
    def transformed_channels(self, channels: int) -> int:
        """Channels of the transformed part, given the input's channel count."""

    @abc.abstractmethod
    def conditioning_channels(self, channels: int) -> int:
        """Channels the conditioner receives, given the input's channel count."""

    @abc.abstractmethod
    def split(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Returns `(conditioning, transformed)`."""

    @abc.abstractmethod
    def merge(self, x: tf.Tensor, y_transformed: tf.Tensor) -> tf.Tensor:
        """Combines the pass-through part of `x` with the transformed values."""

    @abc.abstractmethod
    def reduce(self, elementwise: tf.Tensor, event_ndims: int) -> tf.Tensor:
        """Sums an elementwise log-det over the transformed entries of an event."""

    def check(self, owner: str, x: tf.Tensor, event_ndims: int) -> None:
        """Raises `ValueError` if `x` (static shape) cannot be split."""
        if event_ndims < self.min_event_ndims:
            raise ValueError(f"{owner}: {type(self).__name__} needs events of rank >= "
                             f"{self.min_event_ndims}, got event_ndims={event_ndims}.")
        channels = x.shape[-1] if x.shape.rank else None
        if channels is None:
            raise ValueError(f"{owner}: the channel axis (last) must be known statically, "
                             f"got shape {x.shape}.")
        if channels < 2:
            raise ValueError(f"{owner}: {type(self).__name__} needs at least 2 entries on "
                             f"the last axis to split, got shape {x.shape.as_list()}.")

    def get_config(self) -> dict:
        return {}


def _sum_event(t: tf.Tensor, event_ndims: int) -> tf.Tensor:
    return tf.reduce_sum(t, axis=list(range(-event_ndims, 0)))


class ChannelSplit(Partition):
    """Split the last axis into two halves; one conditions the other.

    parity 0: `x[..., :C//2]` conditions, `x[..., C//2:]` is transformed.
    parity 1: `x[..., C - C//2:]` conditions, `x[..., :C - C//2]` is transformed.
    """

    def __init__(self, parity: int = 0):
        self.parity = _check_parity("ChannelSplit", parity)

    def _sizes(self, channels: int) -> tuple[int, int]:
        kept = channels // 2
        return (kept, channels - kept) if self.parity == 0 else (channels - kept, kept)

    def transformed_channels(self, channels: int) -> int:
        return channels - channels // 2

    def conditioning_channels(self, channels: int) -> int:
        return channels // 2

    def split(self, x):
        first, second = tf.split(x, self._sizes(x.shape[-1]), axis=-1)
        return (first, second) if self.parity == 0 else (second, first)

    def merge(self, x, y_transformed):
        first, second = tf.split(x, self._sizes(x.shape[-1]), axis=-1)
        parts = [first, y_transformed] if self.parity == 0 else [y_transformed, second]
        return tf.concat(parts, axis=-1)

    def reduce(self, elementwise, event_ndims):
        return _sum_event(elementwise, event_ndims)

    def get_config(self):
        return {"parity": self.parity}

    def __repr__(self):
        return f"ChannelSplit(parity={self.parity})"


class _MaskPartition(Partition):
    """Binary mask `m` (1 = conditioning); the transformed part is the whole input."""

    def __init__(self, parity: int = 0):
        self.parity = _check_parity(type(self).__name__, parity)

    @abc.abstractmethod
    def mask(self, x: tf.Tensor) -> tf.Tensor:
        """A 0/1 tensor in x's dtype that broadcasts against one event of x."""

    def transformed_channels(self, channels):
        return channels

    def conditioning_channels(self, channels):
        return channels

    def split(self, x):
        return x * self.mask(x), x

    def merge(self, x, y_transformed):
        m = self.mask(x)
        return m * x + (1. - m) * y_transformed

    def reduce(self, elementwise, event_ndims):
        return _sum_event((1. - self.mask(elementwise)) * elementwise, event_ndims)

    def get_config(self):
        return {"parity": self.parity}

    def __repr__(self):
        return f"{type(self).__name__}(parity={self.parity})"


class Checkerboard(_MaskPartition):
    """RealNVP's spatial checkerboard on [H, W, C] events.

    Position (h, w) conditions when `(h + w + parity)` is even; all channels of
    a position share its role.
    """

    min_event_ndims = 3

    def check(self, owner, x, event_ndims):
        if x.shape.rank is not None and x.shape.rank < 3:
            raise ValueError(f"{owner}: Checkerboard needs [H, W, C] events, got shape "
                             f"{x.shape.as_list()}.")
        if event_ndims < 3:
            raise ValueError(f"{owner}: Checkerboard needs event_ndims=3, got {event_ndims}.")

    def mask(self, x):
        shape = tf.shape(x)
        rows = tf.range(shape[-3])[:, None]
        cols = tf.range(shape[-2])[None, :]
        on = tf.equal((rows + cols + self.parity) % 2, 0)
        return tf.cast(on, x.dtype)[..., None]


class AlternatingMask(_MaskPartition):
    """Alternating entries of the last axis: index d conditions when `d + parity` is even.

    NICE's and RealNVP's partition for vectors; works for odd sizes.
    """

    def mask(self, x):
        index = tf.range(tf.shape(x)[-1])
        return tf.cast(tf.equal((index + self.parity) % 2, 0), x.dtype)


def partition_from_config(config: dict) -> Partition:
    """Rebuilds a partition from `{"class_name": ..., "config": partition.get_config()}`."""
    classes = {cls.__name__: cls for cls in (ChannelSplit, Checkerboard, AlternatingMask)}
    name = config.get("class_name")
    if name not in classes:
        raise ValueError(f"partition_from_config: unknown partition {name!r}; "
                         f"expected one of {sorted(classes)}.")
    return classes[name](**config.get("config", {}))


def partition_to_config(partition: Partition) -> dict:
    return {"class_name": type(partition).__name__, "config": partition.get_config()}
