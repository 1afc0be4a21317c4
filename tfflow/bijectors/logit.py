"""RealNVP's logit preprocessing of data in [0, 1]."""

from __future__ import annotations

import tensorflow as tf

from tfflow.bijectors._base import FlowBijector

__all__ = ["LogitPreprocessing"]


class LogitPreprocessing(FlowBijector):
    """Maps data in [0, 1] to the real line: `z = logit(alpha + (1 - 2 alpha) x)`.

    Direction: `forward` latent -> data, `inverse` data -> latent (see `tfflow.bijectors`).

    Inverse:  `z = logit(p)`, `p = alpha + (1 - 2 alpha) x`
    Forward:  `x = (sigmoid(z) - alpha) / (1 - 2 alpha)`
    Log-det:  `inverse_log_det_jacobian = log(1 - 2 alpha) - log(p) - log(1 - p)`
              per entry (elementwise: `forward_min_event_ndims=0`; TFP sums it
              over the event inside a `TransformedDistribution`).

    `alpha` keeps the logit away from the infinities at 0 and 1. Include this
    log-det in reported likelihoods (tfflow's models do) so that bits/dim are
    measured in data space. Under `validate_args=True`, inputs to `inverse`
    outside [0, 1] (or NaN), and NaN or Inf inputs to `forward`, raise
    `InvalidArgumentError`.

    #### References

    [1] Dinh, Sohl-Dickstein & Bengio. Density estimation using Real NVP.
        ICLR 2017, section 4.1 (alpha = 0.05).
    """

    def __init__(self, alpha: float = 0.05, *, validate_args: bool = False,
                 name: str = "logit_preprocessing"):
        """Builds the bijector.

        Args:
          alpha: in (0, 0.5): how far from 0 and 1 the data are squeezed.
          validate_args: check at run time that inverse inputs lie in [0, 1] and
            that inputs are finite.
          name: name scope.
        """
        parameters = dict(locals())
        if not 0. < float(alpha) < 0.5:
            raise ValueError(f"LogitPreprocessing: alpha must lie in (0, 0.5), got {alpha!r}.")
        self._alpha = float(alpha)
        with tf.name_scope(name) as name:
            super().__init__(forward_min_event_ndims=0, validate_args=validate_args,
                             parameters=parameters, name=name)

    @property
    def alpha(self) -> float:
        return self._alpha

    def _validate_input(self, x, *, inverse):
        x = super()._validate_input(x, inverse=inverse)
        if not (inverse and self.validate_args):
            return x
        with tf.control_dependencies([
                tf.debugging.assert_greater_equal(
                    x, tf.zeros([], x.dtype),
                    message="LogitPreprocessing: expected data in [0, 1], got values < 0"),
                tf.debugging.assert_less_equal(
                    x, tf.ones([], x.dtype),
                    message="LogitPreprocessing: expected data in [0, 1], got values > 1")]):
            return tf.identity(x)

    def _forward_and_log_det(self, z):
        a = tf.constant(self._alpha, z.dtype)
        x = (tf.sigmoid(z) - a) / (1. - 2. * a)
        fldj = tf.math.log_sigmoid(z) + tf.math.log_sigmoid(-z) - tf.math.log1p(-2. * a)
        return x, fldj

    def _inverse_and_log_det(self, x):
        a = tf.constant(self._alpha, x.dtype)
        p = a + (1. - 2. * a) * x
        z = tf.math.log(p) - tf.math.log1p(-p)
        ildj = tf.math.log1p(-2. * a) - tf.math.log(p) - tf.math.log1p(-p)
        return z, ildj
