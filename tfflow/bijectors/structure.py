"""Bijectors that arrange others: act on some channels, elementwise affine priors."""

from __future__ import annotations

import tensorflow as tf
from tensorflow_probability import bijectors as tfb

from tfflow._deprecation import deprecated_subclass
from tfflow.bijectors._base import FlowBijector, read

__all__ = ["ApplyToChannels", "ElementwiseAffine", "FactorOut"]


class FactorOut(FlowBijector):
    """Applies `bijector` to the first `channels` channels; the rest pass through.

    Direction: `forward` latent -> data, `inverse` data -> latent (see `tfflow.bijectors`).

    Inverse:  `z = concat(bijector.inverse(x[..., :k]), x[..., k:])`
    Forward:  `x = concat(bijector.forward(z[..., :k]), z[..., k:])`
    Log-det:  the inner bijector's, over the event.

    This is how tfflow factors out half the channels in a multi-scale flow
    while keeping one latent tensor of the data's shape: the factored half is
    final, the kept half goes through the next level (which must preserve its
    shape, e.g. squeeze ... unsqueeze).
    """

    def __init__(self, bijector: tfb.Bijector, channels: int, *, event_ndims: int = 3,
                 validate_args: bool = False, name: str = "factor_out"):
        """Builds the bijector.

        Args:
          bijector: acts on events [..., k] of the same rank, shape-preserving.
          channels: k, the number of leading channels it acts on.
          event_ndims: rank of one event (3 for images, 1 for vectors).
          validate_args: check inputs at run time.
          name: name scope.
        """
        parameters = dict(locals())
        if int(channels) < 1:
            raise ValueError(f"FactorOut: channels must be >= 1, got {channels}.")
        self._bijector = bijector
        self._channels = int(channels)
        self._event_ndims = int(event_ndims)
        with tf.name_scope(name) as name:
            super().__init__(forward_min_event_ndims=self._event_ndims,
                             is_constant_jacobian=bijector.is_constant_jacobian,
                             validate_args=validate_args, parameters=parameters, name=name)

    @property
    def bijector(self) -> tfb.Bijector:
        return self._bijector

    def _validate_input(self, x, *, inverse):
        x = super()._validate_input(x, inverse=inverse)
        if x.shape[-1] is None or x.shape[-1] <= self._channels:
            raise ValueError(f"FactorOut: expected more than {self._channels} channels "
                             f"(static), got shape {x.shape}.")
        return x

    def _split(self, x):
        return tf.split(x, [self._channels, x.shape[-1] - self._channels], axis=-1)

    def _forward_and_log_det(self, x):
        head, tail = self._split(x)
        y = self._bijector.forward(head)
        ldj = self._bijector.forward_log_det_jacobian(head, event_ndims=self._event_ndims)
        return tf.concat([y, tail], -1), ldj

    def _inverse_and_log_det(self, y):
        head, tail = self._split(y)
        x = self._bijector.inverse(head)
        ldj = self._bijector.inverse_log_det_jacobian(head, event_ndims=self._event_ndims)
        return tf.concat([x, tail], -1), ldj


class ElementwiseAffine(FlowBijector):
    """`x = loc + exp(log_scale) * z` with parameters that broadcast against the event.

    Direction: `forward` latent -> data, `inverse` data -> latent (see `tfflow.bijectors`).

    Inverse:  `z = (x - loc) * exp(-log_scale)`
    Log-det:  `forward_log_det_jacobian = sum over the event of log_scale`
              (broadcast to the event shape first).

    Parameters may carry batch dimensions (e.g. a class-conditional prior with
    `loc` of shape [N, 1, 1, C]); they broadcast against `[..., *event]`. Used
    for Glow's learned top prior and NICE's diagonal scaling layer.
    """

    def __init__(self, loc, log_scale, *, event_ndims: int = 3, validate_args: bool = False,
                 name: str = "elementwise_affine"):
        """Builds the bijector.

        Args:
          loc: float tensor broadcasting against `[..., *event]`.
          log_scale: float tensor broadcasting against `[..., *event]`.
          event_ndims: rank of one event.
          validate_args: check inputs for NaN/Inf at run time.
          name: name scope.
        """
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            dtype, (self._loc, self._log_scale) = self._convert_parameters(
                loc=loc, log_scale=log_scale)
            self._event_ndims = int(event_ndims)
            super().__init__(forward_min_event_ndims=self._event_ndims,
                             is_constant_jacobian=True, validate_args=validate_args,
                             dtype=dtype, parameters=parameters, name=name)

    def _log_det(self, x, log_scale):
        full = tf.broadcast_to(log_scale, tf.broadcast_dynamic_shape(tf.shape(x),
                                                                     tf.shape(log_scale)))
        return tf.reduce_sum(full, axis=list(range(-self._event_ndims, 0)))

    def _forward_and_log_det(self, x):
        loc, log_scale = read(self._loc), read(self._log_scale)
        return loc + tf.exp(log_scale) * x, self._log_det(x, log_scale)

    def _inverse_and_log_det(self, y):
        loc, log_scale = read(self._loc), read(self._log_scale)
        return (y - loc) * tf.exp(-log_scale), -self._log_det(y, log_scale)


#: The old name of `FactorOut`.
ApplyToChannels = deprecated_subclass(FactorOut, "ApplyToChannels")
