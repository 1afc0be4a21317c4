"""RealNVP's batch normalisation as a bijector, statistics passed in."""

from __future__ import annotations

import tensorflow as tf

from tfflow.bijectors import _validation
from tfflow.bijectors._base import read
from tfflow.bijectors.actnorm import ChannelAffine

__all__ = ["BatchNormalization"]


class BatchNormalization(ChannelAffine):
    """Batch normalisation with given statistics, as an invertible per-channel map.

    Direction: `forward` latent -> data, `inverse` data -> latent (see `tfflow.bijectors`).

    Inverse:  `z = (x - mean) / sqrt(variance + epsilon) * exp(log_gamma) + beta`
    Forward:  `x = (z - beta) * exp(-log_gamma) * sqrt(variance + epsilon) + mean`
    Log-det:  `inverse_log_det_jacobian =
               P * sum_c [log_gamma[c] - 0.5 * log(variance[c] + epsilon)]`
    with `P` positions per event (H*W for images, 1 for vectors).

    The bijector holds no statistics of its own: during training RealNVP
    passes the batch's moments (and the log-det treats them as constants of the
    batch, as the paper does), at test time the running averages. tfflow's
    Keras layer (`tfflow.layers.BatchNormalizationLayer`) owns those running
    averages as non-trainable weights and chooses which to pass.

    #### References

    [1] Dinh, Sohl-Dickstein & Bengio. Density estimation using Real NVP.
        ICLR 2017, section 3.7.
    """

    def __init__(self, mean, variance, log_gamma=None, beta=None, *,
                 epsilon: float = 1e-3, event_ndims: int = 3,
                 validate_args: bool = False, name: str = "batch_normalization"):
        """Builds the bijector.

        Args:
          mean: float [C], the statistics' mean.
          variance: float [C], the statistics' variance.
          log_gamma: float [C] learned log-scale after normalising (default 0).
          beta: float [C] learned shift after normalising (default 0).
          epsilon: added to the variance, as in `keras.layers.BatchNormalization`.
          event_ndims: 3 for [H, W, C] images, 1 for [D] vectors.
          validate_args: check inputs for NaN/Inf at run time.
          name: name scope.
        """
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            dtype, (self._mean, self._variance, self._log_gamma, self._beta) = \
                self._convert_parameters(mean=mean, variance=variance, log_gamma=log_gamma,
                                         beta=beta)
            self._epsilon = float(epsilon)
            channels = _validation.check_same_channels("BatchNormalization", {
                "mean": self._mean, "variance": self._variance,
                "log_gamma": self._log_gamma, "beta": self._beta})
            super().__init__(channels=channels, event_ndims=event_ndims,
                             validate_args=validate_args, dtype=dtype,
                             parameters=parameters, name=name)

    def loc_and_log_scale(self):
        # The inverse z = (x - mean) / std * gamma + beta, written as
        # x = loc + exp(log_scale) * z.
        mean = read(self._mean)
        log_std = 0.5 * tf.math.log(read(self._variance) + self._epsilon)
        log_gamma = tf.zeros_like(mean) if self._log_gamma is None else read(self._log_gamma)
        beta = tf.zeros_like(mean) if self._beta is None else read(self._beta)
        log_scale = log_std - log_gamma
        return mean - beta * tf.exp(log_scale), log_scale
