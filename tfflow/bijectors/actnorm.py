"""ActNorm: Glow's per-channel affine normalisation, and its data-dependent init."""

from __future__ import annotations

import tensorflow as tf

from tfflow.bijectors import _validation
from tfflow.bijectors._base import FlowBijector, read
from tfflow.bijectors._validation import event_positions

__all__ = [
    "ActNorm",
    "actnorm_initial_parameters",
    "actnorm_parameters_from_moments",
]


class ChannelAffine(FlowBijector):
    """Per-channel affine map shared by `ActNorm` and `BatchNormalization`.

    Forward (latent z -> data x):  `x = loc + exp(log_scale) * z`
    Inverse (data x -> latent z):  `z = (x - loc) * exp(-log_scale)`
    Forward log-det:               `P * sum_c log_scale[c]`,
    where `P` is the number of positions in an event (H*W for a [H, W, C]
    image, 1 for a [D] vector): every position shares the channel parameters.
    Subclasses say how `(loc, log_scale)` follow from their parameters, read
    at every call so that variables passed in are never snapshotted.
    """

    def __init__(self, *, channels: int | None, event_ndims: int, validate_args: bool,
                 dtype: tf.DType, parameters: dict, name: str):
        self._event_ndims = _validation.channel_event_ndims(type(self).__name__, event_ndims)
        super().__init__(
            channels=channels,
            forward_min_event_ndims=self._event_ndims,
            is_constant_jacobian=True,
            validate_args=validate_args,
            dtype=dtype,
            parameters=parameters,
            name=name)

    def loc_and_log_scale(self) -> tuple[tf.Tensor, tf.Tensor]:
        """The current `(loc, log_scale)`, each [C]."""
        raise NotImplementedError

    def _log_det(self, x, log_scale):
        positions = event_positions(x, self._event_ndims, self.dtype)
        return positions * tf.reduce_sum(log_scale, axis=-1)

    def _forward_and_log_det(self, x):
        loc, log_scale = self.loc_and_log_scale()
        return loc + tf.exp(log_scale) * x, self._log_det(x, log_scale)

    def _inverse_and_log_det(self, y):
        loc, log_scale = self.loc_and_log_scale()
        return (y - loc) * tf.exp(-log_scale), -self._log_det(y, log_scale)

    def _forward_log_det(self, x):
        return self._log_det(x, self.loc_and_log_scale()[1])

    def _inverse_log_det(self, y):
        return -self._log_det(y, self.loc_and_log_scale()[1])


class ActNorm(ChannelAffine):
    """Activation normalisation (Glow, step 1): a learned per-channel affine map.

    Direction: `forward` latent -> data, `inverse` data -> latent (see `tfflow.bijectors`).

    Forward:  `x = loc + exp(log_scale) * z`
    Inverse:  `z = (x - loc) * exp(-log_scale)`
    Log-det:  `forward_log_det_jacobian = H * W * sum(log_scale)` for an
              [H, W, C] event (`event_ndims=3`), `sum(log_scale)` for a [D]
              vector (`event_ndims=1`).

    Glow initialises `loc` and `log_scale` from a batch of data so that the
    inverse outputs mean 0 and standard deviation 1 per channel:
    see `actnorm_initial_parameters`. The bijector itself holds no variables;
    pass tensors or variables (tfflow's Keras layers own them).

    #### Examples

    ```python
    x = tf.random.normal([16, 8, 8, 3]) * 3. + 1.
    loc, log_scale = tfflow.bijectors.actnorm_initial_parameters(x)
    actnorm = tfflow.bijectors.ActNorm(loc, log_scale)
    z = actnorm.inverse(x)   # per-channel mean 0, std 1
    ```

    #### References

    [1] Kingma & Dhariwal. Glow: Generative Flow with Invertible 1x1
        Convolutions. NeurIPS 2018. https://arxiv.org/abs/1807.03039
    """

    def __init__(self, loc, log_scale, *, event_ndims: int = 3,
                 validate_args: bool = False, name: str = "actnorm"):
        """Builds the bijector.

        Args:
          loc, log_scale: float tensors [C] (or [..., C]): the per-channel shift
            and log of the scale, shared by every position of an event (the map
            is `ElementwiseAffine`'s with parameters broadcast from [C]).
          event_ndims: rank of one event: 3 for [H, W, C] images, 1 for [D] vectors.
          validate_args, name: check inputs for NaN/Inf at run time; the name scope.
        """
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            dtype, (self._loc, self._log_scale) = self._convert_parameters(
                loc=loc, log_scale=log_scale)
            channels = _validation.check_same_channels(
                "ActNorm", {"loc": self._loc, "log_scale": self._log_scale})
            super().__init__(channels=channels, event_ndims=event_ndims,
                             validate_args=validate_args, dtype=dtype,
                             parameters=parameters, name=name)

    @property
    def loc(self):
        return self._loc

    @property
    def log_scale(self):
        return self._log_scale

    def loc_and_log_scale(self):
        return read(self._loc), read(self._log_scale)


def actnorm_parameters_from_moments(mean, variance, *, epsilon: float = 1e-6):
    """ActNorm `(loc, log_scale)` that standardise data with these channel moments.

    `loc = mean`, `log_scale = log(sqrt(variance))`. A channel whose standard
    deviation is below `epsilon` (a constant image border, say) gets
    `log_scale = 0`: dividing by its tiny std would blow the inputs of the
    next layer up by orders of magnitude for no gain in likelihood.

    Taking moments (rather than a batch) lets distributed code all-reduce the
    sums over replicas first.
    """
    mean = tf.convert_to_tensor(mean)
    variance = tf.convert_to_tensor(variance, dtype=mean.dtype)
    std = tf.sqrt(tf.maximum(variance, 0.))
    log_scale = tf.where(std > epsilon, tf.math.log(tf.maximum(std, epsilon)), tf.zeros_like(std))
    return mean, log_scale


def actnorm_initial_parameters(x, *, event_ndims: int = 3, epsilon: float = 1e-6):
    """Glow's data-dependent ActNorm initialisation from a batch `x`.

    Returns `(loc, log_scale)`, each [C], such that
    `ActNorm(loc, log_scale).inverse(x)` has mean 0 and standard deviation 1
    in every channel (over the batch and all positions), except channels with
    standard deviation below `epsilon`, which are centred and left unscaled.

    Args:
      x: float tensor [..., C] whose last `event_ndims` axes are one event.
      event_ndims: 3 for [H, W, C] images, 1 for vectors.
      epsilon: smallest standard deviation that is divided out.
    """
    x = tf.convert_to_tensor(x)
    _validation.check_rank("actnorm_initial_parameters", x, event_ndims)
    axes = list(range(x.shape.rank - 1))
    mean, variance = tf.nn.moments(x, axes=axes)
    return actnorm_parameters_from_moments(mean, variance, epsilon=epsilon)
