"""Glow's invertible 1x1 convolution, as a full matrix or in LU form."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfflow.bijectors import _validation
from tfflow.bijectors._base import FlowBijector, read

__all__ = ["Invertible1x1Conv", "LUInvertible1x1Conv", "lu_parameters"]


def _apply_per_position(x: tf.Tensor, matrix: tf.Tensor) -> tf.Tensor:
    """`out[..., i] = sum_j matrix[i, j] * x[..., j]` at every position."""
    channels = matrix.shape[-1]
    flat = tf.reshape(x, [-1, channels])
    return tf.reshape(tf.matmul(flat, matrix, transpose_b=True), tf.shape(x))


@tf.custom_gradient
def _log_abs_det(kernel):
    """log|det W| = sum(log|R_ii|) from the QR decomposition W = QR.

    `tf.linalg.slogdet` and `tf.linalg.lu` have no XLA kernel; QR and the
    inverse do. The gradient is written out (d log|det W| / dW = W^{-T}) rather
    than differentiated through the factorisation.
    """
    value = tf.reduce_sum(tf.math.log(tf.abs(tf.linalg.diag_part(tf.linalg.qr(kernel).r))))

    def grad(upstream):
        return upstream * tf.transpose(tf.linalg.inv(kernel))
    return value, grad


def _assert_invertible(kernel):
    """InvalidArgumentError unless `kernel` is invertible to working precision."""
    abs_diag_r = tf.abs(tf.linalg.diag_part(tf.linalg.qr(kernel).r))
    eps = tf.constant(np_finfo_eps(kernel.dtype), kernel.dtype)
    channels = tf.cast(tf.shape(kernel)[-1], kernel.dtype)
    singular = tf.reduce_min(abs_diag_r) <= eps * channels * tf.reduce_max(abs_diag_r)
    return tf.debugging.Assert(tf.logical_not(singular), [
        "Invertible1x1Conv: expected an invertible kernel, but it is singular to "
        "working precision; |diag(R)| of its QR decomposition:", abs_diag_r])


def np_finfo_eps(dtype: tf.DType) -> float:
    return float(np.finfo(dtype.as_numpy_dtype).eps)


class _ChannelMixing(FlowBijector):
    """z = W x at every position (inverse); subclasses say how W is stored."""

    def __init__(self, *, channels, event_ndims, validate_args, dtype, parameters, name):
        self._event_ndims = _validation.channel_event_ndims(type(self).__name__, event_ndims)
        super().__init__(channels=channels, forward_min_event_ndims=self._event_ndims,
                         is_constant_jacobian=True, validate_args=validate_args, dtype=dtype,
                         parameters=parameters, name=name)

    # Subclasses: W, W^{-1}, log|det W| (and run-time checks of them).
    def weight(self) -> tf.Tensor:
        raise NotImplementedError

    def inverse_weight(self) -> tf.Tensor:
        raise NotImplementedError

    def log_abs_det_weight(self) -> tf.Tensor:
        raise NotImplementedError

    def _log_det(self, x):
        return _validation.event_positions(x, self._event_ndims, self.dtype) * \
            self.log_abs_det_weight()

    def _forward_and_log_det(self, x):
        return _apply_per_position(x, self.inverse_weight()), -self._log_det(x)

    def _inverse_and_log_det(self, y):
        return _apply_per_position(y, self.weight()), self._log_det(y)

    def _forward_log_det(self, x):
        return -self._log_det(x)

    def _inverse_log_det(self, y):
        return self._log_det(y)


class Invertible1x1Conv(_ChannelMixing):
    """Invertible 1x1 convolution (Glow, step 2) with a full CxC matrix `W`.

    Direction: `forward` latent -> data, `inverse` data -> latent (see `tfflow.bijectors`).

    Inverse:  `z[h, w, :] = W @ x[h, w, :]` at every position
    Forward:  `x[h, w, :] = W^{-1} @ z[h, w, :]`
    Log-det:  `inverse_log_det_jacobian = H * W_img * log|det W|` for an
              [H, W_img, C] event (`event_ndims=3`); `log|det W|` for a [D]
              vector (`event_ndims=1`), where this is a learned linear map.

    `log|det W|` comes from a QR decomposition (`tf.linalg.slogdet` has no XLA
    kernel), so this bijector also compiles under `jit_compile=True`; its cost
    is O(C^3) per call, where `LUInvertible1x1Conv` needs only a sum. Under
    `validate_args=True` a singular `W` raises `InvalidArgumentError` at run
    time.

    #### Examples

    ```python
    w = tf.linalg.qr(tf.random.normal([4, 4]))[0]   # a random rotation
    conv = tfflow.bijectors.Invertible1x1Conv(w)
    z = conv.inverse(tf.random.normal([2, 8, 8, 4]))
    ```

    #### References

    [1] Kingma & Dhariwal. Glow: Generative Flow with Invertible 1x1
        Convolutions. NeurIPS 2018. https://arxiv.org/abs/1807.03039
    """

    def __init__(self, kernel, *, event_ndims: int = 3, validate_args: bool = False,
                 name: str = "invertible_1x1_conv"):
        """Builds the bijector.

        Args:
          kernel: float tensor [C, C], the matrix `W` (a tensor or variable).
          event_ndims: rank of one event: 3 for [H, W, C] images, 1 for [D] vectors.
          validate_args: check at run time that `W` is invertible and inputs finite.
          name: name scope.
        """
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            dtype, (self._kernel,) = self._convert_parameters(kernel=kernel)
            shape = _validation.static_shape(self._kernel)
            if shape.rank != 2 or (shape.is_fully_defined() and shape[0] != shape[1]):
                raise ValueError(
                    f"Invertible1x1Conv: expected a square [C, C] kernel, got shape "
                    f"{shape.as_list() if shape.rank is not None else shape}.")
            super().__init__(channels=shape[-1], event_ndims=event_ndims,
                             validate_args=validate_args, dtype=dtype,
                             parameters=parameters, name=name)

    @property
    def kernel(self) -> tf.Tensor:
        return self._kernel

    def weight(self):
        return read(self._kernel)

    def inverse_weight(self):
        kernel = read(self._kernel)
        if not self.validate_args:
            return tf.linalg.inv(kernel)
        # Check first: MatrixInverse's own error does not say which bijector failed.
        with tf.control_dependencies([_assert_invertible(kernel)]):
            return tf.linalg.inv(tf.identity(kernel))

    def log_abs_det_weight(self):
        kernel = read(self._kernel)
        if not self.validate_args:
            return _log_abs_det(kernel)
        with tf.control_dependencies([_assert_invertible(kernel)]):
            return _log_abs_det(tf.identity(kernel))


class LUInvertible1x1Conv(_ChannelMixing):
    """Invertible 1x1 convolution in Glow's LU parametrisation.

    Direction: `forward` latent -> data, `inverse` data -> latent (see `tfflow.bijectors`).

    `W = P @ L @ (U + diag(sign_s * exp(log_abs_s)))`
    with `P` a fixed permutation matrix, `L` unit lower-triangular (the strict
    lower part of `lower`), `U` strictly upper-triangular (the strict upper
    part of `upper`). Then

    Inverse:  `z = W @ x` at every position
    Forward:  `x = W^{-1} @ z`, by two triangular solves
    Log-det:  `inverse_log_det_jacobian = H * W_img * sum(log_abs_s)`

    The log-det is a sum and the inverse two triangular solves, so the
    bijector compiles under XLA (`jit_compile=True`, TPU); `W` can never become
    singular while `log_abs_s` is finite. `lu_parameters` decomposes a given
    matrix (e.g. a random rotation, Glow's initialisation).

    #### References

    [1] Kingma & Dhariwal. Glow: Generative Flow with Invertible 1x1
        Convolutions. NeurIPS 2018, section 3.2.
    """

    def __init__(self, permutation, lower, upper, sign_s, log_abs_s, *,
                 event_ndims: int = 3, validate_args: bool = False,
                 name: str = "lu_invertible_1x1_conv"):
        """Builds the bijector.

        Args:
          permutation: int32 [C]: `P = tf.gather(eye(C), permutation)`.
          lower: float [C, C]; only its strict lower triangle is used.
          upper: float [C, C]; only its strict upper triangle is used.
          sign_s: float [C] of +1/-1, the signs of the diagonal of U.
          log_abs_s: float [C], log of the absolute diagonal of U.
          event_ndims: 3 for [H, W, C] images, 1 for [D] vectors.
          validate_args: check inputs for NaN/Inf at run time.
          name: name scope.
        """
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            _, (self._permutation,) = self._convert_parameters(dtype=tf.int32,
                                                               permutation=permutation)
            dtype, (self._lower, self._upper, self._sign_s, self._log_abs_s) = \
                self._convert_parameters(lower=lower, upper=upper, sign_s=sign_s,
                                         log_abs_s=log_abs_s)
            channels = _validation.static_channels("LUInvertible1x1Conv", self._log_abs_s,
                                                   "log_abs_s")
            expected = {"lower": [channels, channels], "upper": [channels, channels],
                        "permutation": [channels], "sign_s": [channels]}
            for what, want in expected.items():
                got = _validation.static_shape(getattr(self, "_" + what))
                if got.rank != len(want) or not got.is_compatible_with(want):
                    raise ValueError(
                        f"LUInvertible1x1Conv: expected `{what}` of shape {want} to match "
                        f"log_abs_s, got {got}.")
            super().__init__(channels=channels, event_ndims=event_ndims,
                             validate_args=validate_args, dtype=dtype,
                             parameters=parameters, name=name)

    def _factors(self):
        """(P, L, U') with U' = U + diag(s)."""
        lower, upper, log_abs_s = read(self._lower), read(self._upper), read(self._log_abs_s)
        # Constant masks for the static channel count: a Glow step traces this in each of
        # its loops and their gradients, where band_part and a dynamic eye took more ops
        # (68 more in the digits Glow's first training step).
        channels = self._input_channels
        eye = tf.constant(np.eye(channels), self.dtype)
        # Two constants, not a transpose: oneDNN's transpose logs an error for bool tensors.
        strictly_lower = np.tri(channels, k=-1, dtype=bool)
        perm = tf.gather(eye, read(self._permutation))
        lower = tf.where(tf.constant(strictly_lower), lower, 0.) + eye
        upper = tf.where(tf.constant(strictly_lower.T), upper, 0.) + \
            tf.linalg.diag(read(self._sign_s) * tf.exp(log_abs_s))
        return perm, lower, upper

    def weight(self):
        perm, lower, upper = self._factors()
        return tf.matmul(perm, tf.matmul(lower, upper))

    def inverse_weight(self):
        # W^{-1} = U'^{-1} L^{-1} P^T, from two triangular solves (XLA has both).
        perm, lower, upper = self._factors()
        l_inv_pt = tf.linalg.triangular_solve(lower, tf.transpose(perm), lower=True)
        return tf.linalg.triangular_solve(upper, l_inv_pt, lower=False)

    def log_abs_det_weight(self):
        return tf.reduce_sum(read(self._log_abs_s), axis=-1)


def lu_parameters(kernel) -> dict[str, tf.Tensor]:
    """Decomposes an invertible [C, C] matrix into `LUInvertible1x1Conv`'s arguments.

    Returns a dict with keys `permutation`, `lower`, `upper`, `sign_s`,
    `log_abs_s` such that `LUInvertible1x1Conv(**lu_parameters(w)).weight()`
    equals `w` up to round-off.
    """
    kernel = tf.convert_to_tensor(kernel)
    if kernel.shape.rank != 2 or kernel.shape[0] != kernel.shape[1]:
        raise ValueError(f"lu_parameters: expected a square [C, C] matrix, got shape "
                         f"{kernel.shape.as_list()}.")
    lu, row_order = tf.linalg.lu(kernel)
    # tf.linalg.lu gives kernel[row_order] = L U, i.e. kernel = P L U with
    # P = gather(eye, invert_permutation(row_order)).
    permutation = tf.math.invert_permutation(row_order)
    diag = tf.linalg.diag_part(lu)
    return {
        "permutation": tf.cast(permutation, tf.int32),
        "lower": tf.linalg.band_part(lu, -1, 0) - tf.linalg.diag(diag),
        "upper": tf.linalg.band_part(lu, 0, -1) - tf.linalg.diag(diag),
        "sign_s": tf.sign(diag),
        "log_abs_s": tf.math.log(tf.abs(diag)),
    }
