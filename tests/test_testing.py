"""An independent check of `tfflow.testing.check_bijector`.

Planted faults must fail with an `AssertionError` naming the bijector and the
property that broke; correct bijectors (TFP's and tfflow's) must pass, for any
batch shape (none, one or several batch dimensions) and event rank, eagerly and
traced with unknown batch dimensions.
"""

import functools

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfflow import bijectors as fb
from tfflow.testing import EAGER, BijectorReport, check_bijector, evaluate_bijector, in_function

tfb = tfp.bijectors
F64 = tf.float64

RUNNERS = {"eager": EAGER, "function_none_batch": in_function(unknown_batch=True)}


def _normal(shape, seed=0, scale=1.0):
    return tf.constant(np.random.default_rng(seed).normal(size=shape) * scale, F64)


def _image_actnorm(cls=fb.ActNorm, **kwargs):
    return cls(_normal([3], 1), _normal([3], 2, 0.3), **kwargs)


def _lu_matrix_parameters(d=3):
    matrix = _normal([d, d], 3) + 2. * tf.eye(d, dtype=F64)
    lower_upper, permutation = tf.linalg.lu(matrix)
    return lower_upper, permutation


# --- Planted faults ----------------------------------------------------------------------

OFFSET = 0.1


class OffsetLogDetExp(tfb.Exp):
    """exp, with both log-dets off by a constant, consistently: fldj + c, ildj - c."""

    def _forward_log_det_jacobian(self, x):
        return super()._forward_log_det_jacobian(x) + OFFSET

    def _inverse_log_det_jacobian(self, y):
        return super()._inverse_log_det_jacobian(y) - OFFSET


class OffsetLogDetActNorm(fb.ActNorm):
    """tfflow's ActNorm with its (shared) log-det off by a constant in both directions."""

    def _log_det(self, x, log_scale):
        return super()._log_det(x, log_scale) + OFFSET


class ScaledLogDetScale(tfb.Scale):
    """x * scale, with both log-dets 1% too large (consistent with each other)."""

    def _forward_log_det_jacobian(self, x):
        return 1.01 * super()._forward_log_det_jacobian(x)

    def _inverse_log_det_jacobian(self, y):
        return -1.01 * super()._forward_log_det_jacobian(y)


class ScaledLogDetActNorm(fb.ActNorm):
    """tfflow's ActNorm with its log-det 1% too large in both directions."""

    def _log_det(self, x, log_scale):
        return 1.01 * super()._log_det(x, log_scale)


class WrongForwardLogDetSoftplus(tfb.Softplus):
    """softplus whose forward log-det alone is wrong; the inverse one is right."""

    def _forward_log_det_jacobian(self, x):
        return super()._forward_log_det_jacobian(x) + OFFSET


class WrongForwardLogDetActNorm(fb.ActNorm):
    """tfflow's ActNorm whose forward log-det alone drops the number of positions."""

    def _forward_log_det_jacobian(self, x):
        return tf.reduce_sum(self.loc_and_log_scale()[1], axis=-1)


class WrongLogProbActNorm(fb.ActNorm):
    """tfflow's ActNorm whose inverse log-det is wrong only where it comes with the value.

    `TransformedDistribution.log_prob(x)` calls `inverse(x)` and then
    `inverse_log_det_jacobian(x)`, which TFP's cache answers with the log-det
    computed together with the value: the log-det that matters most.
    """

    def _inverse_and_log_det(self, y):
        z, ildj = super()._inverse_and_log_det(y)
        return z, ildj + OFFSET


class SlightlyWrongInverseScale(tfb.Scale):
    """x * scale, whose inverse is off by one part in 10^4."""

    def _inverse(self, y):
        return super()._inverse(y) * (1. + 1e-4)


class Identity(tfb.Bijector):
    """Forgets to transform: forward(x) = x, log-det 0."""

    def __init__(self):
        super().__init__(forward_min_event_ndims=0, is_constant_jacobian=True,
                         parameters={}, name="planted_identity")

    def _forward(self, x):
        return x

    def _inverse(self, y):
        return y

    def _forward_log_det_jacobian(self, x):
        return tf.zeros([], x.dtype)


class UnguardedInverseSoftplus(tfb.Bijector):
    """forward = log(expm1(x)): correct for x > 0, NaN for x < 0 (the domain is unguarded)."""

    def __init__(self):
        super().__init__(forward_min_event_ndims=0, parameters={},
                         name="unguarded_inverse_softplus")

    def _forward(self, x):
        return tf.math.log(tf.math.expm1(x))

    def _inverse(self, y):
        return tf.math.softplus(y)

    def _forward_log_det_jacobian(self, x):
        return x - tf.math.log(tf.math.expm1(x))


class NaNLogDetScale(tfb.Scale):
    """x * scale, with a log-det written as log|scale * x| - log|x|: NaN at x = 0."""

    def _forward_log_det_jacobian(self, x):
        return tf.math.log(tf.abs(self.scale * x)) - tf.math.log(tf.abs(x))


class Square(tfb.Bijector):
    """forward = x**2 (not injective) with the plausible inverse sqrt(y) and log|2x|."""

    def __init__(self):
        super().__init__(forward_min_event_ndims=0, parameters={}, name="square")

    def _forward(self, x):
        return x ** 2

    def _inverse(self, y):
        return tf.sqrt(y)

    def _forward_log_det_jacobian(self, x):
        return tf.math.log(tf.abs(2. * x))

    def _inverse_log_det_jacobian(self, y):
        return -tf.math.log(2. * tf.sqrt(y))


class Duplicate(tfb.Bijector):
    """[D] -> [2D]: invertible on its image, but not a bijection of R^D."""

    def __init__(self):
        super().__init__(forward_min_event_ndims=1, inverse_min_event_ndims=1,
                         is_constant_jacobian=True, parameters={}, name="duplicate")

    def _forward(self, x):
        return tf.concat([x, x], axis=-1)

    def _inverse(self, y):
        return y[..., :y.shape[-1] // 2]

    def _forward_log_det_jacobian(self, x):
        return tf.zeros([], x.dtype)


class Fold(tfb.Bijector):
    """forward = |x| + 1 on vectors: not injective, though its log-det 0 is right."""

    def __init__(self):
        super().__init__(forward_min_event_ndims=1, parameters={}, name="fold")

    def _forward(self, x):
        return tf.abs(x) + 1.

    def _inverse(self, y):
        return y - 1.

    def _forward_log_det_jacobian(self, x):
        return tf.zeros(tf.shape(x)[:-1], x.dtype)


ELEMENTWISE_X = _normal([2, 3], 4) + 0.5     # positive and negative entries, none at 0
IMAGE_X = _normal([2, 4, 4, 3], 5)

# name: (make bijector, x, accepted property names, event_ndims)
FAULTS = {
    "offset_log_det_exp": (OffsetLogDetExp, ELEMENTWISE_X, ["autodiff Jacobian"], None),
    "offset_log_det_exp_vector_event": (OffsetLogDetExp, ELEMENTWISE_X,
                                        ["autodiff Jacobian"], 1),
    "offset_log_det_actnorm": (functools.partial(_image_actnorm, OffsetLogDetActNorm), IMAGE_X,
                               ["autodiff Jacobian"], None),
    "scaled_log_det_scale": (lambda: ScaledLogDetScale(tf.constant(2., F64)), ELEMENTWISE_X,
                             ["autodiff Jacobian"], None),
    "scaled_log_det_actnorm": (functools.partial(_image_actnorm, ScaledLogDetActNorm), IMAGE_X,
                               ["autodiff Jacobian"], None),
    "wrong_forward_log_det_softplus": (WrongForwardLogDetSoftplus, ELEMENTWISE_X,
                                       ["log-det consistency", "autodiff Jacobian"], None),
    "wrong_forward_log_det_actnorm": (functools.partial(_image_actnorm, WrongForwardLogDetActNorm),
                                      IMAGE_X, ["log-det consistency", "autodiff Jacobian"],
                                      None),
    "wrong_log_prob_actnorm": (functools.partial(_image_actnorm, WrongLogProbActNorm), IMAGE_X,
                               ["log-det consistency"], None),
    "slightly_wrong_inverse": (lambda: SlightlyWrongInverseScale(tf.constant(3., F64)),
                               ELEMENTWISE_X, ["round trip"], None),
    "identity": (Identity, ELEMENTWISE_X, ["not the identity"], None),
    "identity_actnorm_at_zero": (lambda: fb.ActNorm(tf.zeros([3], F64), tf.zeros([3], F64)),
                                 IMAGE_X, ["not the identity"], None),
    "nan_forward": (UnguardedInverseSoftplus, ELEMENTWISE_X, ["finite"], None),
    "nan_log_det": (lambda: NaNLogDetScale(tf.constant(2., F64)),
                    tf.constant([[1., 0., -1.]], F64), ["finite"], None),
    "non_injective_square": (Square, ELEMENTWISE_X, ["round trip"], None),
    "non_injective_fold": (Fold, ELEMENTWISE_X, ["round trip"], None),
}


@pytest.mark.parametrize("runner", list(RUNNERS))
@pytest.mark.parametrize("fault", list(FAULTS))
def test_planted_fault_is_caught(fault, runner):
    make, x, properties, event_ndims = FAULTS[fault]
    bijector = make()
    with pytest.raises(AssertionError) as info:
        check_bijector(bijector, x, event_ndims=event_ndims, runner=RUNNERS[runner])
    message = str(info.value)
    assert message.startswith(f"check_bijector({bijector.name}) [{RUNNERS[runner]}]"), message
    assert any(p in message for p in properties), message
    assert "failed" in message or "not a bijection" in message, message


def test_offset_fault_reports_the_offset():
    with pytest.raises(AssertionError, match=r"autodiff Jacobian.*max error 0\.1 "):
        check_bijector(OffsetLogDetExp(), ELEMENTWISE_X)
    # Over a 3-vector event the three per-entry offsets add up.
    with pytest.raises(AssertionError, match=r"autodiff Jacobian.*max error 0\.3 "):
        check_bijector(OffsetLogDetExp(), ELEMENTWISE_X, event_ndims=1)


def test_faults_are_caught_in_float32_too():
    bijector = ScaledLogDetActNorm(tf.constant([0.1, 0.2, 0.3]), tf.constant([0.5, -0.4, 0.3]))
    with pytest.raises(AssertionError, match="autodiff Jacobian"):
        check_bijector(bijector, tf.cast(IMAGE_X, tf.float32))


def test_planted_faults_pass_the_ldj_sum_check_alone():
    """The point of the autodiff check: fldj(x) + ildj(y) == 0 holds for consistent faults."""
    for make, x in [(OffsetLogDetExp, ELEMENTWISE_X),
                    (functools.partial(_image_actnorm, ScaledLogDetActNorm), IMAGE_X)]:
        report = evaluate_bijector(make(), x)
        np.testing.assert_allclose(report.forward_log_det, -report.inverse_log_det_at_y,
                                   atol=1e-12)
        np.testing.assert_allclose(report.x_round_trip, report.x, atol=1e-12)


def test_wrong_log_prob_fault_is_real():
    """The planted fault changes log_prob, though each log-det computed alone is right."""
    bijector = _image_actnorm(WrongLogProbActNorm)
    x = _normal([2, 4, 4, 3], 9)
    report = evaluate_bijector(bijector, x)
    np.testing.assert_allclose(report.forward_log_det_alone, report.autodiff_log_det,
                               atol=1e-10)
    np.testing.assert_allclose(report.forward_log_det_alone, -report.inverse_log_det_alone,
                               atol=1e-10)
    dist = tfp.distributions.TransformedDistribution(
        tfp.distributions.Sample(tfp.distributions.Normal(tf.zeros([], F64), 1.), [4, 4, 3]),
        bijector)
    through_cache = dist.log_prob(x)
    by_hand = dist.distribution.log_prob(bijector.inverse(x)) + \
        bijector.inverse_log_det_jacobian(tf.identity(x), event_ndims=3)
    np.testing.assert_allclose(through_cache - by_hand, OFFSET, rtol=1e-10)


def test_changing_the_event_size_is_not_a_bijection():
    with pytest.raises(AssertionError, match="not a bijection"):
        check_bijector(Duplicate(), _normal([2, 3]))


# --- Correct bijectors pass ----------------------------------------------------------------

def _scale_matvec_lu():
    return tfb.ScaleMatvecLU(*_lu_matrix_parameters())


def _chain():
    return tfb.Chain([tfb.Exp(), tfb.Scale(tf.constant(1.5, F64)), _scale_matvec_lu(),
                      tfb.Softplus()])


# name: (make bijector, event shape at event_ndims=forward_min_event_ndims)
CORRECT = {
    "exp": (tfb.Exp, []),
    "scale": (lambda: tfb.Scale(tf.constant(-2.5, F64)), []),
    "softplus": (tfb.Softplus, []),
    "scale_matvec_lu": (_scale_matvec_lu, [3]),
    "chain": (_chain, [3]),
    "actnorm_image": (_image_actnorm, [4, 4, 3]),
}
BATCH_SHAPES = {"unbatched": [], "batch_2x3": [2, 3]}


@pytest.mark.parametrize("runner", list(RUNNERS))
@pytest.mark.parametrize("batch", list(BATCH_SHAPES))
@pytest.mark.parametrize("name", list(CORRECT))
def test_correct_bijector_passes(name, batch, runner):
    make, event_shape = CORRECT[name]
    batch_shape = BATCH_SHAPES[batch]
    x = _normal(batch_shape + event_shape, 6)
    report = check_bijector(make(), x, runner=RUNNERS[runner])
    assert isinstance(report, BijectorReport)
    assert report.forward_log_det.shape == tuple(batch_shape)
    assert report.autodiff_log_det.shape == tuple(batch_shape)
    assert report.y.shape == tuple(batch_shape + event_shape)


# name: (make bijector, x, event_ndims), event_ndims > forward_min_event_ndims
ABOVE_MINIMUM = {
    "exp_2d_event": (tfb.Exp, _normal([2, 3, 4], 7), 2),
    "exp_2d_event_unbatched": (tfb.Exp, _normal([3, 4], 7), 2),
    "softplus_3d_event_2_batch_dims": (tfb.Softplus, _normal([2, 3, 2, 2, 2], 7), 3),
    "scale_matvec_lu_2d_event": (_scale_matvec_lu, _normal([2, 5, 3], 7), 2),
    "actnorm_vector_as_image": (lambda: _image_actnorm(event_ndims=1), _normal([2, 4, 4, 3], 7),
                                3),
}


@pytest.mark.parametrize("runner", list(RUNNERS))
@pytest.mark.parametrize("name", list(ABOVE_MINIMUM))
def test_event_ndims_above_the_minimum(name, runner):
    make, x, event_ndims = ABOVE_MINIMUM[name]
    bijector = make()
    assert event_ndims > bijector.forward_min_event_ndims
    report = check_bijector(bijector, x, event_ndims=event_ndims, runner=RUNNERS[runner])
    batch_shape = tuple(x.shape[:x.shape.rank - event_ndims])
    assert report.forward_log_det.shape == batch_shape
    # The log-det sums over the extra event dimensions.
    np.testing.assert_allclose(
        report.forward_log_det,
        bijector.forward_log_det_jacobian(x, event_ndims=event_ndims), rtol=1e-12)


def test_single_scalar_input():
    report = check_bijector(tfb.Exp(), tf.constant(0.5, F64))
    assert report.forward_log_det.shape == ()
    np.testing.assert_allclose(report.forward_log_det, 0.5, rtol=1e-12)
