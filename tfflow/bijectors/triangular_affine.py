"""A full affine map on vectors with a lower-triangular scale: the Gaussian fit as a bijector."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfflow.bijectors import _validation
from tfflow.bijectors._base import FlowBijector, read

__all__ = ["TriangularAffine", "triangular_affine_parameters"]


class TriangularAffine(FlowBijector):
    """`x = loc + L z` with `L` lower triangular and a positive diagonal.

    Forward (latent z -> data x):  `x = loc + L z`
    Inverse (data x -> latent z):  `z = L^{-1} (x - loc)` (a triangular solve)
    Log-det:  `forward_log_det_jacobian = sum_i log_diag[i]`,
    where `L = tril(lower, -1) + diag(exp(log_diag))`: only the strict lower
    triangle of `lower` is read, so every value of the parameters is a valid,
    invertible map.

    Pushed through a standard normal, this is `N(loc, L L^T)`: with
    `triangular_affine_parameters(x)` (the mean and the Cholesky factor of the
    covariance of `x`) it is the maximum-likelihood Gaussian fit of `x`. tfflow's
    vector models start from it, so an untrained model is the Gaussian fit.
    Acts on [D] vectors (`event_ndims=1`) and compiles under XLA.
    """

    def __init__(self, loc, log_diag, lower, *, validate_args: bool = False,
                 name: str = "triangular_affine"):
        """Builds the bijector.

        Args:
          loc: [D] shift.
          log_diag: [D] log of the diagonal of `L`.
          lower: [D, D]; its strict lower triangle is that of `L` (the rest is ignored).
          validate_args: check inputs for NaN/Inf at run time.
          name: name scope.
        """
        parameters = dict(locals())
        owner = "TriangularAffine"
        with tf.name_scope(name) as name:
            dtype, (self._loc, self._log_diag, self._lower) = self._convert_parameters(
                loc=loc, log_diag=log_diag, lower=lower)
            dims = _validation.check_same_channels(
                owner, {"loc": self._loc, "log_diag": self._log_diag, "lower": self._lower})
            shape = _validation.static_shape(self._lower)
            if shape.rank is not None and (shape.rank != 2 or shape[0] != shape[1]):
                raise ValueError(f"{owner}: expected `lower` of shape [D, D], got "
                                 f"{shape.as_list()}.")
            super().__init__(channels=dims, forward_min_event_ndims=1,
                             is_constant_jacobian=True, validate_args=validate_args,
                             dtype=dtype, parameters=parameters, name=name)

    def scale_tril(self) -> tf.Tensor:
        """The current `L`, [D, D]."""
        lower = tf.linalg.band_part(read(self._lower), -1, 0)
        lower = tf.linalg.set_diag(lower, tf.zeros_like(read(self._log_diag)))
        return lower + tf.linalg.diag(tf.exp(read(self._log_diag)))

    def _log_det(self):
        return tf.reduce_sum(read(self._log_diag))

    def _forward_and_log_det(self, z):
        x = read(self._loc) + tf.linalg.matvec(self.scale_tril(), z)
        return x, self._log_det()

    def _inverse_and_log_det(self, x):
        dims = x.shape[-1]
        centred = tf.reshape(x - read(self._loc), [-1, dims])
        # One solve for the whole batch: L Z^T = (X - loc)^T.
        z = tf.transpose(tf.linalg.triangular_solve(self.scale_tril(), tf.transpose(centred),
                                                    lower=True))
        return tf.reshape(z, tf.shape(x)), -self._log_det()

    def _forward_log_det(self, z):
        return self._log_det()

    def _inverse_log_det(self, x):
        return -self._log_det()


def triangular_affine_parameters(x, *, context=None,
                                 ridge: float = 1e-6) -> dict[str, tf.Tensor]:
    """`loc`, `log_diag`, `lower` of the maximum-likelihood Gaussian fit of `x` [N, D].

    `loc` is the mean and `L` the Cholesky factor of the covariance (divided
    by N). `ridge` times the mean variance is added to the diagonal so that a
    singular covariance (a constant column, collinear columns, fewer rows than
    columns) still gives an invertible map. Computed in float64.

    With `context` [N, C], the fit is the linear-Gaussian regression
    `x | c ~ N(loc + c @ context_kernel, L L^T)` (least squares, `L` from the
    residuals' covariance), and `context_kernel` [C, D] is returned too.
    """
    x = tf.convert_to_tensor(x)
    dtype = x.dtype
    x64 = tf.cast(tf.reshape(x, [-1, x.shape[-1]]), tf.float64)
    mean = tf.reduce_mean(x64, axis=0)
    centred = x64 - mean
    count = tf.cast(tf.shape(x64)[0], tf.float64)
    extra = {}
    if context is not None:
        c64 = tf.cast(tf.reshape(context, [tf.shape(x64)[0], -1]), tf.float64)
        c_mean = tf.reduce_mean(c64, axis=0)
        c_centred = c64 - c_mean
        gram = tf.matmul(c_centred, c_centred, transpose_a=True)
        gram += ridge * tf.maximum(tf.linalg.trace(gram), 1.) * tf.eye(tf.shape(gram)[0],
                                                                       dtype=tf.float64)
        kernel = tf.linalg.solve(gram, tf.matmul(c_centred, centred, transpose_a=True))
        mean = mean - tf.linalg.matvec(kernel, c_mean, transpose_a=True)
        centred = centred - tf.matmul(c_centred, kernel)
        extra["context_kernel"] = tf.cast(kernel, dtype)
    covariance = tf.matmul(centred, centred, transpose_a=True) / count
    dims = x.shape[-1]
    mean_variance = tf.linalg.trace(covariance) / dims
    floor = ridge * tf.where(mean_variance > 0., mean_variance, 1.)
    covariance += floor * tf.eye(dims, dtype=tf.float64)
    scale = tf.linalg.cholesky(covariance)
    diag = tf.linalg.diag_part(scale)
    return {"loc": tf.cast(mean, dtype),
            "log_diag": tf.cast(tf.math.log(diag), dtype),
            "lower": tf.cast(tf.linalg.set_diag(scale, np.zeros(dims)), dtype), **extra}
