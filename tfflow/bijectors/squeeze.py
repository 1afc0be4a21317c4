"""Squeeze: Glow/RealNVP's 2x2 space-to-depth reshaping of image events."""

from __future__ import annotations

import tensorflow as tf

from tfflow.bijectors import _validation
from tfflow.bijectors._base import FlowBijector

__all__ = ["Squeeze"]


def _flatten_batch(x: tf.Tensor):
    """[..., H, W, C] -> ([B, H, W, C], batch_shape): tf.nn ops want rank 4."""
    batch_shape = tf.shape(x)[:-3]
    return tf.reshape(x, tf.concat([[-1], tf.shape(x)[-3:]], 0)), batch_shape


def _unflatten_batch(x: tf.Tensor, batch_shape: tf.Tensor, static_batch: tf.TensorShape):
    out = tf.reshape(x, tf.concat([batch_shape, tf.shape(x)[1:]], 0))
    return tf.ensure_shape(out, static_batch.concatenate(x.shape[1:]))


class Squeeze(FlowBijector):
    """Trade spatial size for channels: [H, W, C] <-> [H/f, W/f, f*f*C].

    Direction: `forward` latent -> data, `inverse` data -> latent (see `tfflow.bijectors`).
    So the squeeze itself, data [H, W, C] -> latent [H/f, W/f, f^2 C]
    (`tf.nn.space_to_depth`), is `inverse`, and `forward` is
    `tf.nn.depth_to_space`. Inside `tfd.TransformedDistribution` the base
    distribution therefore has the squeezed event shape.

    Log-det: 0 (a permutation of the entries).

    Errors: `inverse` needs H and W divisible by `factor`; `forward` needs C
    divisible by `factor**2` (`ValueError` for static shapes; under
    `validate_args=True`, `InvalidArgumentError` for dynamic ones).

    #### References

    [1] Dinh, Sohl-Dickstein & Bengio. Density estimation using Real NVP.
        ICLR 2017, section 3.6.
    """

    def __init__(self, factor: int = 2, *, validate_args: bool = False,
                 name: str = "squeeze"):
        """Builds the bijector.

        Args:
          factor: spatial block size (2 in Glow and RealNVP).
          validate_args: check dynamic shapes and finiteness at run time.
          name: name scope.
        """
        parameters = dict(locals())
        if not isinstance(factor, int) or factor < 2:
            raise ValueError(f"Squeeze: factor must be an integer >= 2, got {factor!r}.")
        self._factor = factor
        with tf.name_scope(name) as name:
            super().__init__(forward_min_event_ndims=3, is_constant_jacobian=True,
                             validate_args=validate_args, parameters=parameters, name=name)

    @property
    def factor(self) -> int:
        return self._factor

    # Shapes -------------------------------------------------------------------
    def _event_shape_after(self, shape: tf.TensorShape, *, inverse: bool) -> tf.TensorShape:
        """The static shape after `inverse` (space-to-depth) or `forward` (depth-to-space)."""
        if shape.rank is None:
            return shape
        _validation.check_rank("Squeeze", shape, 3)
        f = self._factor
        if inverse:
            self._require_divisible_hw(shape)
            spatial, depth = (lambda d: d // f), (lambda d: d * f * f)
        else:
            self._require_divisible_c(shape)
            spatial, depth = (lambda d: d * f), (lambda d: d // (f * f))
        h, w, c = shape[-3:]
        return shape[:-3].concatenate([None if d is None else op(d)
                                       for d, op in ((h, spatial), (w, spatial), (c, depth))])

    def _require_divisible_hw(self, shape: tf.TensorShape):
        h, w = shape[-3], shape[-2]
        if (h is not None and h % self._factor) or (w is not None and w % self._factor):
            raise ValueError(
                f"Squeeze: expected H and W divisible by {self._factor} for "
                f"space-to-depth, got event [H, W, C] = {shape[-3:].as_list()}.")

    def _require_divisible_c(self, shape: tf.TensorShape):
        c = shape[-1]
        if c is not None and c % (self._factor ** 2):
            raise ValueError(
                f"Squeeze: expected C divisible by {self._factor ** 2} for depth-to-space, "
                f"got event [H, W, C] = {shape[-3:].as_list()}.")

    def _forward_event_shape(self, input_shape):
        return self._event_shape_after(input_shape, inverse=False)

    def _inverse_event_shape(self, output_shape):
        return self._event_shape_after(output_shape, inverse=True)

    def _forward_event_shape_tensor(self, input_shape):
        f = self._factor
        return tf.concat([input_shape[:-3], input_shape[-3:-1] * f,
                          input_shape[-1:] // (f * f)], 0)

    def _inverse_event_shape_tensor(self, output_shape):
        f = self._factor
        return tf.concat([output_shape[:-3], output_shape[-3:-1] // f,
                          output_shape[-1:] * f * f], 0)

    # Values -------------------------------------------------------------------
    def _validate_input(self, x, *, inverse):
        # inverse (space-to-depth) needs H and W divisible by f; forward needs C by f^2.
        x = super()._validate_input(x, inverse=inverse)
        if inverse:
            self._require_divisible_hw(x.shape)
            axes, divisor = [0, 1], self._factor
        else:
            self._require_divisible_c(x.shape)
            axes, divisor = [2], self._factor ** 2
        if not self.validate_args:
            return x
        sizes = tf.shape(x)[-3:]
        bad = tf.reduce_any(tf.not_equal(tf.gather(sizes, axes) % divisor, 0))
        check = tf.debugging.Assert(tf.logical_not(bad), [
            f"Squeeze: expected event dimensions {axes} (of [H, W, C]) "
            f"divisible by {divisor}, got event shape", sizes])
        with tf.control_dependencies([check]):
            return tf.identity(x)

    def _forward_and_log_det(self, x):
        flat, batch_shape = _flatten_batch(x)
        y = _unflatten_batch(tf.nn.depth_to_space(flat, self._factor), batch_shape,
                             x.shape[:-3])
        return y, tf.zeros([], x.dtype)

    def _inverse_and_log_det(self, y):
        flat, batch_shape = _flatten_batch(y)
        x = _unflatten_batch(tf.nn.space_to_depth(flat, self._factor), batch_shape,
                             y.shape[:-3])
        return x, tf.zeros([], y.dtype)
