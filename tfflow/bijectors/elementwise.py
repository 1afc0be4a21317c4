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

__all__ = ["AffineTransform", "ElementwiseTransform", "SplineTransform", "glow_log_scale",
           "tanh_log_scale"]


def affine_apply(u: tf.Tensor, shift: tf.Tensor,
                 log_scale: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """`(v, log dv/du)` of `v = u * exp(s) + t`: `(u * exp(s) + t, s)`.

    The one affine map of tfflow's couplings and autoregressive layers
    (`AffineTransform`, `AffineCoupling`; shared within `tfflow.bijectors`, not
    re-exported); `affine_invert` is its inverse.
    """
    return u * tf.exp(log_scale) + shift, log_scale


def affine_invert(v: tf.Tensor, shift: tf.Tensor,
                  log_scale: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """`(u, log du/dv)` of `u = (v - t) * exp(-s)`, the inverse of `affine_apply`."""
    return (v - shift) * tf.exp(-log_scale), -log_scale


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
        return affine_apply(u, *self._shift_and_log_scale(h))

    def invert(self, v, h):
        return affine_invert(v, *self._shift_and_log_scale(h))


class SplineTransform(ElementwiseTransform):
    """A monotone rational-quadratic spline (Neural Spline Flows) with linear tails.

    `num_bins` bins on [-bound, bound]; outside it the map is the identity
    (slope 1, matching the spline's boundary slopes), so every real input is
    valid. Raw parameters per entry: `num_bins` widths, `num_bins` heights
    (each through a softmax, with a floor) and `num_bins - 1` inner-knot slopes
    (a shifted softplus, with a floor), so `h = 0` gives the identity.

    In bin k, with knots (x_k, y_k), (x_k+1, y_k+1), width w, height h,
    s = h / w, knot slopes d_k, d_k+1 and xi = (x - x_k) / w (Durkan et al., eq. 4):

        g(x)  = y_k + h (s xi^2 + d_k xi (1 - xi)) / (s + c xi (1 - xi)),  c = d_k+1 + d_k - 2 s
        g'(x) = s^2 (d_k+1 xi^2 + 2 s xi (1 - xi) + d_k (1 - xi)^2) / (s + c xi (1 - xi))^2

    and the inverse solves that quadratic in xi with the numerically stable
    root. The bin is found by counting the inner knots below the input (no
    sort or search op), which keeps the traced graph small and compiles
    under XLA.
    """

    def __init__(self, num_bins: int = 8, bound: float = 3.0, *, owner: str = "SplineTransform"):
        if int(num_bins) < 2 or not float(bound) > 0.:
            raise ValueError(f"{owner}: expected num_bins >= 2 and bound > 0, got "
                             f"num_bins={num_bins}, bound={bound}.")
        self.num_bins = int(num_bins)
        self.bound = float(bound)
        self.params_per_dim = self.params_for(self.num_bins)

    @staticmethod
    def params_for(num_bins: int) -> int:
        """Raw parameters per entry for a spline of `num_bins` bins."""
        return 3 * int(num_bins) - 1

    def knots(self, h: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Knot abscissae, ordinates [..., K+1] and slopes [..., K+1] from raw `h` [..., 3K-1]."""
        k, bound = self.num_bins, self.bound
        min_size, min_slope = 1e-3, 1e-3
        dtype = h.dtype
        span = 2. * bound - k * min_size

        def positions(raw):
            sizes = tf.math.softmax(raw, axis=-1) * span + min_size
            inner = tf.math.cumsum(sizes[..., :-1], axis=-1) - bound
            edge = tf.ones_like(sizes[..., :1]) * bound
            return tf.concat([-edge, inner, edge], axis=-1)

        # softplus(0 + c) = 1 - min_slope: a zero network output gives slope 1.
        offset = tf.constant(np.log(np.expm1(1. - min_slope)), dtype)
        inner_slopes = tf.math.softplus(h[..., 2 * k:] + offset) + min_slope
        ones = tf.ones_like(inner_slopes[..., :1])
        return (positions(h[..., :k]), positions(h[..., k:2 * k]),
                tf.concat([ones, inner_slopes, ones], axis=-1))

    def _bin(self, value, knots, slopes_and_other):
        """Per entry: the bin's left/right knots of `knots` and of the other arrays."""
        index = tf.reduce_sum(tf.cast(value[..., None] >= knots[..., 1:-1], tf.int32), axis=-1)
        left = tf.one_hot(index, self.num_bins, dtype=value.dtype)
        right = tf.one_hot(index + 1, self.num_bins + 1, dtype=value.dtype)
        left = tf.pad(left, [[0, 0]] * (left.shape.rank - 1) + [[0, 1]])
        pick = lambda array, mask: tf.reduce_sum(array * mask, axis=-1)  # noqa: E731
        return [(pick(a, left), pick(a, right)) for a in (knots,) + slopes_and_other]

    def _cell(self, value, h, *, inverse: bool):
        """Where each entry of `value` falls: (inside the bound, value clipped, its bin).

        The bin is (x0, w, y0, height, s, d0, d1): the left knot, width,
        bottom, height, mean slope and end slopes; `value` is an input, or an
        output if `inverse`. Outside [-bound, bound] the map is the identity,
        and the clipped value keeps the unused branch finite.
        """
        xs, ys, ds = self.knots(h)
        inside = tf.abs(value) < self.bound
        clipped = tf.where(inside, value, tf.zeros_like(value))
        if inverse:
            (y0, y1), (x0, x1), (d0, d1) = self._bin(clipped, ys, (xs, ds))
        else:
            (x0, x1), (y0, y1), (d0, d1) = self._bin(clipped, xs, (ys, ds))
        w, height = x1 - x0, y1 - y0
        return inside, clipped, (x0, w, y0, height, height / w, d0, d1)

    def apply(self, u, h):
        inside, clipped, (x0, w, y0, height, s, d0, d1) = self._cell(u, h, inverse=False)
        xi = (clipped - x0) / w
        mixed = xi * (1. - xi)
        denominator = s + (d1 + d0 - 2. * s) * mixed
        v = y0 + height * (s * tf.square(xi) + d0 * mixed) / denominator
        log_deriv = _log_derivative(xi, s, d0, d1, denominator)
        return tf.where(inside, v, u), tf.where(inside, log_deriv, tf.zeros_like(u))

    def invert(self, v, h):
        inside, clipped, (x0, w, y0, height, s, d0, d1) = self._cell(v, h, inverse=True)
        rise = clipped - y0
        c_term = d1 + d0 - 2. * s
        a = height * (s - d0) + rise * c_term
        b = height * d0 - rise * c_term
        c = -s * rise
        xi = 2. * c / (-b - tf.sqrt(tf.maximum(tf.square(b) - 4. * a * c, 0.)))
        u = xi * w + x0
        log_deriv = _log_derivative(xi, s, d0, d1, s + c_term * xi * (1. - xi))
        return tf.where(inside, u, v), tf.where(inside, -log_deriv, tf.zeros_like(v))


def _log_derivative(xi, s, d0, d1, denominator):
    """log g'(x) of the rational-quadratic bin (see `SplineTransform`)."""
    mixed = xi * (1. - xi)
    return (2. * tf.math.log(s) + tf.math.log(d1 * tf.square(xi) + 2. * s * mixed +
                                              d0 * tf.square(1. - xi))
            - 2. * tf.math.log(denominator))
