"""Input checks shared by the bijectors.

Static facts (rank, channel count, divisibility) are checked whenever they are
known at trace time and raise `ValueError`; values (NaN, range, singularity) are
checked at run time only under `validate_args=True` and raise TF's
`InvalidArgumentError`. Every message names the bijector, what it expected and
what it got.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = []


def event_description(event_ndims: int) -> str:
    return {1: "[D]", 2: "[T, C]", 3: "[H, W, C]"}.get(
        event_ndims, f"an event of rank {event_ndims}")


def check_rank(name: str, x, event_ndims: int) -> None:
    """Raises if `x` (a tensor, or a `TensorShape`) has fewer dimensions than one event."""
    shape = x if isinstance(x, tf.TensorShape) else tf.TensorShape(x.shape)
    rank = shape.rank
    if rank is not None and rank < event_ndims:
        raise ValueError(
            f"{name}: expected an input whose last {event_ndims} dimension(s) form "
            f"the event {event_description(event_ndims)}, but got shape "
            f"{shape.as_list()} of rank {rank}.")


def channel_event_ndims(name: str, event_ndims: int) -> int:
    """`event_ndims` as an int, for a bijector whose parameters act on the last (channel) axis."""
    if int(event_ndims) < 1:
        raise ValueError(f"{name}: event_ndims must be >= 1 (the last axis holds channels), "
                         f"got {event_ndims}.")
    return int(event_ndims)


def check_same_channels(name: str, parameters: dict) -> int | None:
    """The common static channel count of `{what: tensor}` parameters; raises if they differ."""
    sizes = {what: static_channels(name, value, what) for what, value in parameters.items()
             if value is not None}
    known = {what: c for what, c in sizes.items() if c is not None}
    if len(set(known.values())) > 1:
        got = ", ".join(f"{what}: {c}" for what, c in known.items())
        raise ValueError(f"{name}: expected parameters with the same number of channels "
                         f"(last axis), got {got}.")
    return next(iter(known.values()), None)


def check_channels(name: str, x: tf.Tensor, channels: int | None) -> None:
    """Raises if the last axis of `x` is statically known and differs."""
    got = x.shape[-1] if x.shape.rank else None
    if channels is not None and got is not None and got != channels:
        raise ValueError(
            f"{name}: expected {channels} channels (last axis) to match its "
            f"parameters, but got shape {x.shape.as_list()}.")


def static_shape(value) -> tf.TensorShape:
    """The static shape of a tensor or variable (Keras variables give tuples)."""
    return tf.TensorShape(value.shape)


def static_channels(name: str, tensor, what: str) -> int | None:
    """The static size of the last axis of a parameter, after checking its rank."""
    shape = static_shape(tensor)
    if shape.rank == 0:
        raise ValueError(f"{name}: `{what}` must have a channel axis, got a scalar.")
    return shape[-1] if shape.rank is not None else None


def with_finite_check(name: str, x: tf.Tensor, validate_args: bool, what: str = "input"):
    """Returns `x`, asserting under `validate_args` that it holds no NaN or Inf."""
    if not validate_args:
        return x
    return tf.debugging.assert_all_finite(
        x, message=f"{name}: expected a finite {what}, but it holds NaN or Inf")


def event_positions(x: tf.Tensor, event_ndims: int, dtype) -> tf.Tensor:
    """Number of positions in one event of `x` (H*W for [H, W, C], 1 for [D])."""
    if event_ndims == 1:
        return tf.ones([], dtype)
    static = x.shape[-event_ndims:-1]
    if static.is_fully_defined():
        return tf.constant(static.num_elements(), dtype)
    return tf.cast(tf.reduce_prod(tf.shape(x)[-event_ndims:-1]), dtype)


def check_conditioner_output(owner: str, h: tf.Tensor, want: int, what: str) -> None:
    """Raises if a conditioner's static output width is not `want`.

    `what` completes "must return {want} ...", e.g. "channels (2 per transformed channel)".
    """
    got = h.shape[-1] if h.shape.rank else None
    if got is not None and got != want:
        raise ValueError(f"{owner}: the conditioner must return {want} {what}, got output shape "
                         f"{h.shape.as_list()}.")
