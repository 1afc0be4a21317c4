"""Elementwise monotone maps whose parameters come from a conditioner.

Couplings and autoregressive bijectors share them: both split into "a network
gives parameters `h` for every transformed entry" and "a monotone scalar map of
each entry given its parameters". A transform knows how many raw parameters
each entry needs (`params_per_dim`) and maps in both directions, returning the
log-derivative of the map it applied, entry by entry:

    apply(u, h)  -> (v, log dv/du)     v = tau(u; h)
    invert(v, h) -> (u, log du/dv)     u = tau^{-1}(v; h)

`h` has shape `[..., D, params_per_dim]`: the parameters of entry `d` are
`h[..., d, :]`. With all-zero parameters every transform is the identity, so a
zero-initialised network starts its flow as the identity.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf
from tensorflow_probability import bijectors as tfb

__all__ = ["AffineTransform", "ElementwiseTransform", "SplineTransform", "glow_log_scale",
           "tanh_log_scale"]


def glow_log_scale(h: tf.Tensor) -> tf.Tensor:
    """Glow's scale: `log(sigmoid(h + 2))`, in (-inf, 0).

    The data -> latent direction multiplies by a scale below 1, so nothing can
    overflow there; `h = 0` gives scale 0.88, not the identity.
    """
    return tf.math.log_sigmoid(h + 2.)


def tanh_log_scale(h: tf.Tensor) -> tf.Tensor:
    """A soft-clamped log-scale: `2 * tanh(h / 2)`, in (-2, 2).

    Bounded in both directions (a factor of at most e^2 = 7.4 per map), and
    the identity at `h = 0`, so a zero-initialised conditioner starts the flow
    as the identity. tfflow's default.
    """
    return 2. * tf.tanh(h / 2.)


class ElementwiseTransform:
    """A monotone scalar map per entry, parametrised by `params_per_dim` raw values."""

    params_per_dim: int = 1

    def apply(self, u: tf.Tensor, h: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        raise NotImplementedError

    def invert(self, v: tf.Tensor, h: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        raise NotImplementedError


class AffineTransform(ElementwiseTransform):
    """`v = u * exp(s) + t`, with `[t, raw] = h` and `s = log_scale_fn(raw)` bounded.

    log dv/du = s. The bound keeps both directions from overflowing however
    large the network's output grows.
    """

    params_per_dim = 2

    def __init__(self, log_scale_fn: Callable[[tf.Tensor], tf.Tensor] = tanh_log_scale):
        self.log_scale_fn = log_scale_fn

    def _shift_and_log_scale(self, h):
        return h[..., 0], self.log_scale_fn(h[..., 1])

    def apply(self, u, h):
        shift, log_scale = self._shift_and_log_scale(h)
        return u * tf.exp(log_scale) + shift, log_scale

    def invert(self, v, h):
        shift, log_scale = self._shift_and_log_scale(h)
        return (v - shift) * tf.exp(-log_scale), -log_scale


class SplineTransform(ElementwiseTransform):
    """A monotone rational-quadratic spline (Neural Spline Flows) with linear tails.

    `num_bins` bins on [-bound, bound]; outside it the map is the identity
    (slope 1, matching the spline's boundary slopes), so every real input is
    valid. Raw parameters per entry: `num_bins` widths, `num_bins` heights
    (each through a softmax, with a floor) and `num_bins - 1` inner-knot slopes
    (a shifted softplus, with a floor), so `h = 0` gives the identity.
    """

    def __init__(self, num_bins: int = 8, bound: float = 3.0, *, owner: str = "SplineTransform"):
        if int(num_bins) < 2 or not float(bound) > 0.:
            raise ValueError(f"{owner}: expected num_bins >= 2 and bound > 0, got "
                             f"num_bins={num_bins}, bound={bound}.")
        self.num_bins = int(num_bins)
        self.bound = float(bound)
        self.params_per_dim = 3 * self.num_bins - 1

    @staticmethod
    def params_for(num_bins: int) -> int:
        """Raw parameters per entry for a spline of `num_bins` bins."""
        return 3 * int(num_bins) - 1

    def spline(self, h: tf.Tensor) -> tfb.RationalQuadraticSpline:
        """TFP's spline with the knots that `h` ([..., D, 3K-1]) describes."""
        k, bound = self.num_bins, self.bound
        min_size, min_slope = 1e-3, 1e-3
        dtype = h.dtype
        span = tf.constant(2. * bound - k * min_size, dtype)
        widths = tf.math.softmax(h[..., :k], axis=-1) * span + min_size
        heights = tf.math.softmax(h[..., k:2 * k], axis=-1) * span + min_size
        # softplus(0 + c) = 1 - min_slope: a zero network output gives slope 1.
        offset = tf.constant(np.log(np.expm1(1. - min_slope)), dtype)
        slopes = tf.math.softplus(h[..., 2 * k:] + offset) + min_slope
        return tfb.RationalQuadraticSpline(widths, heights, slopes,
                                           range_min=tf.constant(-bound, dtype))

    def apply(self, u, h):
        spline = self.spline(h)
        return spline.forward(u), spline.forward_log_det_jacobian(u, event_ndims=0)

    def invert(self, v, h):
        spline = self.spline(h)
        return spline.inverse(v), spline.inverse_log_det_jacobian(v, event_ndims=0)
