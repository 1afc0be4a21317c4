"""Coupling bijectors: NICE's additive and RealNVP/Glow's affine coupling.

One part of the event (chosen by a `Partition`) passes through unchanged and
conditions an elementwise invertible map of the other part. The conditioner is
any callable from the conditioning part to a tensor of parameters: a Keras
network in tfflow's models, a lambda in tests.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from tfflow._deprecation import deprecated_subclass
from tfflow.bijectors import _validation
from tfflow.bijectors._base import ConditionedBijector, Conditioner
from tfflow.bijectors.elementwise import (SplineTransform, affine_apply, affine_invert,
                                          glow_log_scale, tanh_log_scale)
from tfflow.bijectors.partitions import ChannelSplit, Partition

__all__ = [
    "AdditiveCoupling",
    "AffineCoupling",
    "Coupling",
    "RationalQuadraticSplineCoupling",
    "SplineCoupling",
]



class Coupling(ConditionedBijector):
    """Base of the couplings: partition, conditioner and checks.

    Subclasses give `params_per_channel` and the elementwise map in the
    normalising direction, `_normalize(x_t, h) -> (z_t, elementwise_ildj)`, and
    its inverse, `_generate(z_t, h) -> (x_t, elementwise_fldj)`.

    The classes own the rule for how wide a conditioner's output must be:
    `conditioner_outputs(channels, partition, ...)`, which layers and model
    factories ask before they build the network.
    """

    params_per_channel: int = 1

    @classmethod
    def params_per_channel_for(cls, **options) -> int:
        """Conditioner outputs per transformed channel, given the coupling's options.

        `options` are constructor arguments the count depends on (`num_bins`
        for splines); the affine and additive couplings need none and ignore them.
        """
        del options
        return cls.params_per_channel

    @classmethod
    def conditioner_outputs(cls, channels: int, partition: Partition | None = None,
                            **options) -> int:
        """How many channels the conditioner must return for an input of `channels` channels.

        `params_per_channel_for(**options)` per transformed channel of
        `partition` (default `ChannelSplit()`).
        """
        partition = ChannelSplit() if partition is None else partition
        return cls.params_per_channel_for(**options) * partition.transformed_channels(channels)

    def __init__(self, conditioner: Conditioner, partition: Partition | None, *,
                 event_ndims: int, is_constant_jacobian: bool, validate_args: bool,
                 parameters: dict, dtype, name: str):
        self._partition = partition if partition is not None else ChannelSplit()
        if not isinstance(self._partition, Partition):
            raise ValueError(f"{type(self).__name__}: partition must be a "
                             f"tfflow.bijectors.Partition, got {partition!r}.")
        self._event_ndims = int(event_ndims)
        super().__init__(conditioner, forward_min_event_ndims=self._event_ndims,
                         is_constant_jacobian=is_constant_jacobian,
                         validate_args=validate_args, dtype=dtype,
                         parameters=parameters, name=name)

    @property
    def partition(self) -> Partition:
        return self._partition

    def _validate_input(self, x, *, inverse):
        x = super()._validate_input(x, inverse=inverse)
        self._partition.check(type(self).__name__, x, self._event_ndims)
        return x

    def _conditioner_params(self, conditioning, channels):
        h = self._conditioner(conditioning)
        _validation.check_conditioner_output(
            type(self).__name__, h,
            self.params_per_channel * self._partition.transformed_channels(channels),
            f"channels ({self.params_per_channel} per transformed channel)")
        return tf.cast(h, conditioning.dtype)

    def _normalize(self, x_t, h):
        raise NotImplementedError

    def _generate(self, z_t, h):
        raise NotImplementedError

    def _apply(self, x, elementwise_map):
        conditioning, transformed = self._partition.split(x)
        h = self._conditioner_params(conditioning, x.shape[-1])
        out, elementwise_ldj = elementwise_map(transformed, h)
        return (self._partition.merge(x, out),
                self._partition.reduce(elementwise_ldj, self._event_ndims))

    def _inverse_and_log_det(self, y):
        return self._apply(y, self._normalize)

    def _replay_inverse(self, y, tape: tf.GradientTape):
        """`ReversibleChain`'s backward step with one conditioner call instead of two.

        The conditioning part passes through unchanged, so the conditioner's
        input is read off the output `y`: its parameters `h` serve both to
        rebuild the input `x` (the generating map) and to replay the
        normalising map under `tape`. Returns `(x, y_again, ildj, extra)` as
        `reversible.replay_inverse` documents; `extra` routes the gradient of
        the conditioner's input back into the gradient of `x`.
        """
        y = self._validate_input(y, inverse=False)  # the input of the generating map
        conditioning, transformed = self._partition.split(y)
        tape.watch(conditioning)
        h = self._conditioner_params(conditioning, y.shape[-1])
        x = tf.stop_gradient(self._partition.merge(y, self._generate(transformed, h)[0]))
        tape.watch(x)
        out, elementwise_ildj = self._normalize(self._partition.split(x)[1], h)
        y_again = self._partition.merge(x, out)
        ildj = self._partition.reduce(elementwise_ildj, self._event_ndims)

        def conditioning_vjp(gradient):
            with tf.GradientTape() as inner:
                inner.watch(x)
                part = self._partition.split(x)[0]
            return inner.gradient(part, x, output_gradients=gradient)
        return x, y_again, ildj, [(conditioning, conditioning_vjp)]

    def _forward_and_log_det(self, x):
        return self._apply(x, self._generate)


class AdditiveCoupling(Coupling):
    """NICE's additive coupling: a shift of one part conditioned on the other.

    Direction: `forward` latent -> data, `inverse` data -> latent (see `tfflow.bijectors`).
    With `(x_a, x_b) = partition.split(x)` and `t = conditioner(x_a)`:

    Inverse:  `z_a = x_a`,  `z_b = x_b + t`
    Forward:  `x_a = z_a`,  `x_b = z_b - t`
    Log-det:  0 (volume preserving; the Jacobian is constant).

    The conditioner returns one value per transformed channel.

    #### Examples

    ```python
    coupling = tfflow.bijectors.AdditiveCoupling(lambda x_a: x_a ** 2,
                                                 event_ndims=1)
    coupling.inverse(tf.constant([[1., 2.]]))   # [[1., 3.]]
    ```

    #### References

    [1] Dinh, Krueger & Bengio. NICE: Non-linear Independent Components
        Estimation. ICLR 2015 workshop. https://arxiv.org/abs/1410.8516
    """

    params_per_channel = 1

    def __init__(self, conditioner: Conditioner, partition: Partition | None = None, *,
                 event_ndims: int = 3, dtype=tf.float32, validate_args: bool = False,
                 name: str = "additive_coupling"):
        """Builds the bijector.

        Args:
          conditioner: callable, conditioning part -> shift of the transformed part.
          partition: how to split the event; default `ChannelSplit()`.
          event_ndims: 3 for [H, W, C] images, 1 for [D] vectors.
          dtype: dtype of the inputs (the conditioner is not inspected for it).
          validate_args: check inputs for NaN/Inf at run time.
          name: name scope.
        """
        parameters = dict(locals())
        super().__init__(conditioner, partition, event_ndims=event_ndims,
                         is_constant_jacobian=True, validate_args=validate_args,
                         parameters=parameters, dtype=dtype, name=name)

    def _normalize(self, x_t, h):
        return x_t + h, tf.zeros_like(x_t)

    def _generate(self, z_t, h):
        return z_t - h, tf.zeros_like(z_t)


class AffineCoupling(Coupling):
    """RealNVP/Glow's affine coupling: scale and shift one part given the other.

    Direction: `forward` latent -> data, `inverse` data -> latent (see `tfflow.bijectors`).
    With `(x_a, x_b) = partition.split(x)`, `[t, h] = conditioner(x_a)` (split in
    halves on the last axis) and `s = log_scale_fn(h)`:

    Inverse:  `z_a = x_a`,  `z_b = x_b * exp(s) + t`
    Forward:  `x_a = z_a`,  `x_b = (z_b - t) * exp(-s)`
    Log-det:  `inverse_log_det_jacobian = sum(s)` over the transformed entries.

    Numerical safety: `s` comes from a bounded function of the network output
    (`tanh_log_scale`, the default, gives s in (-2, 2); `glow_log_scale` gives
    Glow's log sigmoid(h + 2) < 0), so neither direction can overflow however
    large the conditioner's output grows, and `log_prob` stays finite for every
    finite input.

    The conditioner returns `2 * C_b` channels: shifts, then raw log-scales.

    #### Examples

    ```python
    coupling = tfflow.bijectors.AffineCoupling(
        lambda x_a: tf.concat([tf.sin(x_a), x_a ** 2], -1), event_ndims=1)
    ```

    #### References

    [1] Dinh, Sohl-Dickstein & Bengio. Density estimation using Real NVP.
        ICLR 2017. https://arxiv.org/abs/1605.08803
    [2] Kingma & Dhariwal. Glow. NeurIPS 2018. https://arxiv.org/abs/1807.03039
    """

    params_per_channel = 2

    def __init__(self, conditioner: Conditioner, partition: Partition | None = None, *,
                 log_scale_fn: Callable[[tf.Tensor], tf.Tensor] = tanh_log_scale,
                 event_ndims: int = 3, dtype=tf.float32, validate_args: bool = False,
                 name: str = "affine_coupling"):
        """Builds the bijector.

        Args:
          conditioner: callable, conditioning part -> [shift, raw log-scale]
            concatenated on the last axis.
          partition: how to split the event; default `ChannelSplit()`.
          log_scale_fn: bounded map from the raw output to the log-scale.
          event_ndims: 3 for [H, W, C] images, 1 for [D] vectors.
          dtype: dtype of the inputs.
          validate_args: check inputs for NaN/Inf at run time.
          name: name scope.
        """
        parameters = dict(locals())
        self._log_scale_fn = log_scale_fn
        super().__init__(conditioner, partition, event_ndims=event_ndims,
                         is_constant_jacobian=False, validate_args=validate_args,
                         parameters=parameters, dtype=dtype, name=name)

    def _shift_and_log_scale(self, h):
        shift, raw = tf.split(h, 2, axis=-1)
        return shift, self._log_scale_fn(raw)

    def _normalize(self, x_t, h):
        return affine_apply(x_t, *self._shift_and_log_scale(h))

    def _generate(self, z_t, h):
        return affine_invert(z_t, *self._shift_and_log_scale(h))


class SplineCoupling(Coupling):
    """Neural-spline coupling: a monotone rational-quadratic spline of one part given the other.

    Direction: `forward` latent -> data, `inverse` data -> latent (see `tfflow.bijectors`).
    With `(x_a, x_b) = partition.split(x)` and spline parameters from
    `conditioner(x_a)`:

    Inverse:  `z_a = x_a`,  `z_b = g(x_b)`, `g` a `SplineTransform`
              with `num_bins` bins on [-bound, bound] (identity outside)
    Forward:  `x_b = g^{-1}(z_b)`
    Log-det:  `inverse_log_det_jacobian = sum log g'(x_b)`.

    The conditioner returns `(3 * num_bins - 1) * C_b` channels, grouped per
    transformed channel: `num_bins` raw widths, `num_bins` raw heights and
    `num_bins - 1` raw inner-knot slopes. Widths and heights pass through a
    softmax, slopes through a shifted softplus, each with a floor, so a zero
    conditioner output gives the identity.

    #### References

    [1] Durkan, Bekasov, Murray & Papamakarios. Neural Spline Flows.
        NeurIPS 2019. https://arxiv.org/abs/1906.04032
    """

    def __init__(self, conditioner: Conditioner, partition: Partition | None = None, *,
                 num_bins: int = 8, bound: float = 3.0, event_ndims: int = 3,
                 dtype=tf.float32, validate_args: bool = False,
                 name: str = "spline_coupling"):
        """Builds the bijector.

        Args:
          conditioner: callable, conditioning part -> raw spline parameters.
          partition: how to split the event; default `ChannelSplit()`.
          num_bins: bins of the spline (>= 2).
          bound: the spline acts on [-bound, bound] and is the identity outside.
          event_ndims: 3 for [H, W, C] images, 1 for [D] vectors.
          dtype: dtype of the inputs.
          validate_args: check inputs for NaN/Inf at run time.
          name: name scope.
        """
        parameters = dict(locals())
        self._transform = SplineTransform(num_bins, bound,
                                          owner="SplineCoupling")
        self._num_bins, self._bound = self._transform.num_bins, self._transform.bound
        self.params_per_channel = self.params_per_channel_for(num_bins=self._num_bins)
        super().__init__(conditioner, partition, event_ndims=event_ndims,
                         is_constant_jacobian=False, validate_args=validate_args,
                         parameters=parameters, dtype=dtype, name=name)

    @classmethod
    def params_per_channel_for(cls, *, num_bins: int = 8, **options) -> int:
        """`3 * num_bins - 1`: `num_bins` widths and heights, `num_bins - 1` inner slopes."""
        del options
        return SplineTransform.params_for(num_bins)

    def _per_channel(self, h, channels):
        """[..., C_b * (3K-1)] -> [..., C_b, 3K-1]: the parameters of each transformed channel."""
        return tf.reshape(h, tf.concat([tf.shape(h)[:-1], [channels, self.params_per_channel]], 0))

    def _normalize(self, x_t, h):
        return self._transform.apply(x_t, self._per_channel(h, x_t.shape[-1]))

    def _generate(self, z_t, h):
        return self._transform.invert(z_t, self._per_channel(h, z_t.shape[-1]))


#: The old name of `SplineCoupling`.
RationalQuadraticSplineCoupling = deprecated_subclass(SplineCoupling,
                                                      "RationalQuadraticSplineCoupling")
