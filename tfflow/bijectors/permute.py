"""Fixed channel permutations: RealNVP's reversal and Glow's random shuffle baseline."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfflow.bijectors._base import FlowBijector

__all__ = ["PermuteChannels"]


class PermuteChannels(FlowBijector):
    """Reorders the last (channel) axis by a fixed permutation.

    Direction: `forward` latent -> data, `inverse` data -> latent (see `tfflow.bijectors`).

    Inverse:  `z[..., i] = x[..., permutation[i]]`
    Forward:  `x[..., permutation[i]] = z[..., i]`
    Log-det:  0.

    Use `PermuteChannels.reverse(C)` (RealNVP, Glow's "reverse" baseline) or
    `PermuteChannels.shuffle(C, seed)` (Glow's "shuffle" baseline); both work on
    images (`event_ndims=3`) and vectors (`event_ndims=1`).
    """

    def __init__(self, permutation, *, event_ndims: int = 3, validate_args: bool = False,
                 name: str = "permute_channels"):
        """Builds the bijector.

        Args:
          permutation: a permutation of `range(C)` (list, array or int tensor).
          event_ndims: 3 for [H, W, C] images, 1 for [D] vectors.
          validate_args: check inputs for NaN/Inf at run time.
          name: name scope.
        """
        parameters = dict(locals())
        values = np.asarray(tf.get_static_value(tf.convert_to_tensor(permutation)))
        if values.ndim != 1 or sorted(values.tolist()) != list(range(values.size)):
            raise ValueError(f"PermuteChannels: expected a permutation of range(C), got "
                             f"{values.tolist()!r}.")
        self._permutation = tf.constant(values, tf.int32)
        self._inverse_permutation = tf.constant(np.argsort(values), tf.int32)
        with tf.name_scope(name) as name:
            super().__init__(channels=int(values.size), forward_min_event_ndims=int(event_ndims),
                             is_constant_jacobian=True, validate_args=validate_args,
                             parameters=parameters, name=name)

    @classmethod
    def reverse(cls, channels: int, **kwargs) -> "PermuteChannels":
        """The reversal `[C-1, ..., 1, 0]`."""
        return cls(np.arange(channels)[::-1], **kwargs)

    @classmethod
    def shuffle(cls, channels: int, seed: int, **kwargs) -> "PermuteChannels":
        """A fixed random permutation drawn from `seed` (reproducible across runs)."""
        return cls(np.random.default_rng(seed).permutation(channels), **kwargs)

    @property
    def permutation(self) -> tf.Tensor:
        return self._permutation

    def _forward_and_log_det(self, x):
        return tf.gather(x, self._inverse_permutation, axis=-1), tf.zeros([], x.dtype)

    def _inverse_and_log_det(self, y):
        return tf.gather(y, self._permutation, axis=-1), tf.zeros([], y.dtype)
