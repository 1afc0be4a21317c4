"""Bad input gets a clear error: the bijector's class name, what it expected, what it got.

Static facts (rank, channel counts, divisibility, parameter shapes and dtypes)
raise `ValueError` at construction or trace time; values (NaN, range,
singularity, dynamic shapes) raise `tf.errors.InvalidArgumentError` at run time
under `validate_args=True`, and cost nothing without it.
"""

import contextlib

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfflow import bijectors as fb

tfb = tfp.bijectors


@contextlib.contextmanager
def raises(error, *fragments):
    """`pytest.raises(error)` whose message must also contain every fragment."""
    with pytest.raises(error) as info:
        yield info
    message = str(info.value) if error is ValueError else info.value.message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in the message:\n{message}"


def _ones(*shape, dtype=tf.float32):
    return tf.ones(shape, dtype)


def _double(x_a):
    """A conditioner giving an affine coupling its 2 parameters per channel."""
    return tf.concat([tf.sin(x_a), 0.1 * x_a], -1)


def _spline_params(x_a, num_bins=4):
    """A conditioner giving a spline coupling its 3 * num_bins - 1 parameters per channel."""
    return 0.1 * tf.concat([x_a] * (3 * num_bins - 1), -1)


def _invertible(c=3, dtype=tf.float32):
    return tf.constant(np.eye(c) * 2. + np.triu(np.ones([c, c]), 1), dtype)


# --- Wrong event rank --------------------------------------------------------------------

RANK_CASES = {
    "ActNorm": lambda: fb.ActNorm(tf.zeros([8]), tf.zeros([8])),
    "Invertible1x1Conv": lambda: fb.Invertible1x1Conv(_invertible(8)),
    "LUInvertible1x1Conv": lambda: fb.LUInvertible1x1Conv(**fb.lu_parameters(_invertible(8))),
    "PermuteChannels": lambda: fb.PermuteChannels.reverse(8),
    "AffineCoupling": lambda: fb.AffineCoupling(_double),
    "AdditiveCoupling": lambda: fb.AdditiveCoupling(tf.sin),
    "SplineCoupling": lambda: fb.SplineCoupling(
        _spline_params, num_bins=4),
    "Squeeze": fb.Squeeze,
    "BatchNormalization": lambda: fb.BatchNormalization(tf.zeros([8]), tf.ones([8])),
}
METHODS = ["forward", "inverse", "forward_log_det_jacobian", "inverse_log_det_jacobian"]


def _call(bijector, method, x, **kwargs):
    if method.endswith("log_det_jacobian"):
        kwargs.setdefault("event_ndims", bijector.forward_min_event_ndims)
    return getattr(bijector, method)(x, **kwargs)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", list(RANK_CASES))
def test_wrong_event_rank(name, method):
    # An image bijector (event [H, W, C], event_ndims=3) given a batch of vectors [N, 8].
    bijector = RANK_CASES[name]()
    with raises(ValueError, name, "3 dimension(s)", "[H, W, C]", "[5, 8]", "rank 2"):
        _call(bijector, method, _ones(5, 8))


def test_wrong_event_rank_at_trace_time():
    actnorm = fb.ActNorm(tf.zeros([8]), tf.zeros([8]))
    with raises(ValueError, "ActNorm", "[5, 8]", "rank 2"):
        tf.function(actnorm.inverse).get_concrete_function(tf.TensorSpec([5, 8]))


def test_wrong_event_rank_through_tfp_wrappers():
    actnorm = fb.ActNorm(tf.zeros([8]), tf.zeros([8]))
    with raises(ValueError, "ActNorm", "[5, 8]"):
        tfb.Invert(actnorm).forward_log_det_jacobian(_ones(5, 8), event_ndims=3)
    with raises(ValueError, "ActNorm", "[5, 8]"):
        tfb.Chain([actnorm]).inverse_log_det_jacobian(_ones(5, 8), event_ndims=3)


def test_event_ndims_below_minimum():
    actnorm = fb.ActNorm(tf.zeros([8]), tf.zeros([8]))
    with raises(ValueError, "ActNorm", "event_ndims >= 3", "event_ndims=1"):
        actnorm.forward_log_det_jacobian(_ones(2, 4, 4, 8), event_ndims=1)
    with raises(ValueError, "ActNorm", "event_ndims must be >= 1", "got 0"):
        fb.ActNorm(tf.zeros([8]), tf.zeros([8]), event_ndims=0)
    with raises(ValueError, "Invertible1x1Conv", "event_ndims must be >= 1", "got 0"):
        fb.Invertible1x1Conv(_invertible(), event_ndims=0)


@pytest.mark.parametrize("method", ["forward_event_shape", "inverse_event_shape"])
def test_squeeze_event_shape_of_wrong_rank(method):
    with raises(ValueError, "Squeeze", "[4, 4]", "rank 2"):
        getattr(fb.Squeeze(), method)([4, 4])


# --- Channel mismatch -------------------------------------------------------------------

CHANNEL_CASES = {
    "ActNorm": lambda: fb.ActNorm(tf.zeros([3]), tf.zeros([3])),
    "BatchNormalization": lambda: fb.BatchNormalization(tf.zeros([3]), tf.ones([3])),
    "Invertible1x1Conv": lambda: fb.Invertible1x1Conv(_invertible(3)),
    "LUInvertible1x1Conv": lambda: fb.LUInvertible1x1Conv(**fb.lu_parameters(_invertible(3))),
    "PermuteChannels": lambda: fb.PermuteChannels.reverse(3),
}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", list(CHANNEL_CASES))
def test_channel_mismatch(name, method):
    bijector = CHANNEL_CASES[name]()
    with raises(ValueError, name, "expected 3 channels", "[2, 4, 4, 4]"):
        _call(bijector, method, _ones(2, 4, 4, 4))


def test_channel_mismatch_at_trace_time():
    actnorm = fb.ActNorm(tf.zeros([3]), tf.zeros([3]))
    with raises(ValueError, "ActNorm", "expected 3 channels", "[None, 4, 4, 4]"):
        tf.function(actnorm.forward).get_concrete_function(tf.TensorSpec([None, 4, 4, 4]))


@pytest.mark.parametrize("make, name, fragments", [
    (lambda: fb.ActNorm(tf.zeros([4]), tf.zeros([3])), "ActNorm", ["loc: 4", "log_scale: 3"]),
    (lambda: fb.BatchNormalization(tf.zeros([3]), tf.ones([3]), beta=tf.zeros([2])),
     "BatchNormalization", ["mean: 3", "beta: 2"]),
], ids=["actnorm", "batch_norm"])
def test_parameters_with_different_channel_counts(make, name, fragments):
    with raises(ValueError, name, "same number of channels", *fragments):
        make()


def test_scalar_parameter_has_no_channel_axis():
    with raises(ValueError, "ActNorm", "log_scale", "scalar"):
        fb.ActNorm(tf.zeros([3]), 0.)


# --- Squeeze -----------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [[2, 5, 4, 3], [2, 4, 3, 3], [5, 7, 3]],
                         ids=["odd_height", "odd_width", "unbatched"])
def test_squeeze_spatial_size_not_divisible(shape):
    event = str(shape[-3:])
    with raises(ValueError, "Squeeze", "H and W divisible by 2", event):
        fb.Squeeze().inverse(_ones(*shape))
    with raises(ValueError, "Squeeze", "H and W divisible by 2", event):
        fb.Squeeze().inverse_event_shape(shape[-3:])
    with raises(ValueError, "Squeeze", "H and W divisible by 2", event):
        fb.Squeeze().inverse_log_det_jacobian(_ones(*shape), event_ndims=3)


def test_squeeze_factor_3_names_its_factor():
    with raises(ValueError, "Squeeze", "divisible by 3", "[4, 6, 2]"):
        fb.Squeeze(3).inverse(_ones(1, 4, 6, 2))
    with raises(ValueError, "Squeeze", "C divisible by 9", "[2, 2, 6]"):
        fb.Squeeze(3).forward(_ones(1, 2, 2, 6))


@pytest.mark.parametrize("channels", [2, 6])
def test_squeeze_channels_not_divisible_for_forward(channels):
    event = str([4, 4, channels])
    with raises(ValueError, "Squeeze", "C divisible by 4", event):
        fb.Squeeze().forward(_ones(2, 4, 4, channels))
    with raises(ValueError, "Squeeze", "C divisible by 4", event):
        fb.Squeeze().forward_event_shape([4, 4, channels])
    with raises(ValueError, "Squeeze", "C divisible by 4", event):
        fb.Squeeze().forward_log_det_jacobian(_ones(2, 4, 4, channels), event_ndims=3)


def test_squeeze_dynamic_spatial_size_under_validate_args():
    squeeze = fb.Squeeze(validate_args=True)
    inverse = tf.function(squeeze.inverse, input_signature=[tf.TensorSpec([None, None, None, 3])])
    assert inverse(_ones(2, 4, 6, 3)).shape == [2, 2, 3, 12]
    with raises(tf.errors.InvalidArgumentError, "Squeeze", "divisible by 2", "[5 4 3]"):
        inverse(_ones(2, 5, 4, 3))
    with raises(tf.errors.InvalidArgumentError, "Squeeze", "divisible by 2", "[4 7 3]"):
        inverse(_ones(1, 4, 7, 3))


def test_squeeze_dynamic_channels_under_validate_args():
    squeeze = fb.Squeeze(validate_args=True)
    forward = tf.function(squeeze.forward,
                          input_signature=[tf.TensorSpec([None, None, None, None])])
    assert forward(_ones(2, 2, 2, 8)).shape == [2, 4, 4, 2]
    with raises(tf.errors.InvalidArgumentError, "Squeeze", "divisible by 4", "[2 2 6]"):
        forward(_ones(2, 2, 2, 6))


@pytest.mark.parametrize("factor", [1, 0, -2, 2.0, "2"])
def test_squeeze_factor_must_be_an_integer_at_least_2(factor):
    with raises(ValueError, "Squeeze", "integer >= 2", repr(factor)):
        fb.Squeeze(factor)


# --- Couplings ---------------------------------------------------------------------------

@pytest.mark.parametrize("partition", [fb.ChannelSplit(), fb.ChannelSplit(1),
                                       fb.AlternatingMask(), fb.AlternatingMask(1)], ids=repr)
@pytest.mark.parametrize("cls", [fb.AdditiveCoupling, fb.AffineCoupling,
                                 fb.SplineCoupling], ids=lambda c: c.__name__)
@pytest.mark.parametrize("method", ["forward", "inverse"])
def test_coupling_cannot_split_one_channel(cls, partition, method):
    coupling = cls(lambda x_a: tf.concat([x_a, x_a], -1), partition, event_ndims=1)
    with raises(ValueError, cls.__name__, type(partition).__name__, "at least 2", "[3, 1]"):
        getattr(coupling, method)(_ones(3, 1))


@pytest.mark.parametrize("cls, want, conditioner", [
    (fb.AffineCoupling, "must return 4 channels", lambda x_a: x_a),
    (fb.AffineCoupling, "must return 4 channels", lambda x_a: tf.concat([x_a] * 3, -1)),
    (fb.AdditiveCoupling, "must return 2 channels", lambda x_a: tf.concat([x_a, x_a], -1)),
    (fb.SplineCoupling, "must return 46 channels", lambda x_a: x_a),
], ids=["affine_too_few", "affine_too_many", "additive_too_many", "spline_too_few"])
@pytest.mark.parametrize("method", ["forward", "inverse", "inverse_log_det_jacobian"])
def test_conditioner_returns_wrong_number_of_channels(cls, want, conditioner, method):
    coupling = cls(conditioner, fb.ChannelSplit(), event_ndims=1)
    with raises(ValueError, cls.__name__, want, "got output shape [2, "):
        _call(coupling, method, _ones(2, 4))


def test_conditioner_wrong_channels_for_images_and_masks():
    # An alternating mask transforms every channel: the conditioner owes 2 * C.
    coupling = fb.AffineCoupling(lambda x_a: x_a, fb.AlternatingMask(), event_ndims=1)
    with raises(ValueError, "AffineCoupling", "must return 10 channels", "[2, 5]"):
        coupling.inverse(_ones(2, 5))
    coupling = fb.AffineCoupling(lambda x_a: x_a, fb.ChannelSplit())
    with raises(ValueError, "AffineCoupling", "must return 4 channels", "[2, 4, 4, 2]"):
        coupling.inverse(_ones(2, 4, 4, 4))


@pytest.mark.parametrize("num_bins, bound", [(1, 3.), (0, 3.), (4, 0.), (4, -1.)])
def test_spline_bins_and_bound(num_bins, bound):
    with raises(ValueError, "SplineCoupling", "num_bins >= 2 and bound > 0",
                f"num_bins={num_bins}, bound={bound}"):
        fb.SplineCoupling(_spline_params, num_bins=num_bins, bound=bound)


# ids: the same in every process (a repr of [tf.sin] holds its address; pytest-xdist's
# workers must collect the same test names).
@pytest.mark.parametrize("conditioner", [3, None, "net", [tf.sin]],
                         ids=["3", "None", "'net'", "[tf.sin]"])
@pytest.mark.parametrize("cls", [fb.AdditiveCoupling, fb.AffineCoupling,
                                 fb.SplineCoupling], ids=lambda c: c.__name__)
def test_non_callable_conditioner(cls, conditioner):
    with raises(ValueError, cls.__name__, "conditioner must be callable", repr(conditioner)):
        cls(conditioner)


@pytest.mark.parametrize("partition", ["channels", 0, fb.ChannelSplit], ids=repr)
@pytest.mark.parametrize("cls", [fb.AdditiveCoupling, fb.AffineCoupling],
                         ids=lambda c: c.__name__)
def test_invalid_partition_object(cls, partition):
    with raises(ValueError, cls.__name__, "partition must be a tfflow.bijectors.Partition",
                repr(partition)):
        cls(tf.sin, partition)


@pytest.mark.parametrize("parity", [2, -1, "0"], ids=repr)
@pytest.mark.parametrize("cls", [fb.ChannelSplit, fb.Checkerboard, fb.AlternatingMask],
                         ids=lambda c: c.__name__)
def test_invalid_partition_parity(cls, parity):
    with raises(ValueError, cls.__name__, "parity must be 0 or 1", repr(parity)):
        cls(parity)


@pytest.mark.parametrize("method", ["forward", "inverse"])
def test_checkerboard_on_vectors(method):
    coupling = fb.AffineCoupling(_double, fb.Checkerboard(), event_ndims=1)
    with raises(ValueError, "AffineCoupling", "Checkerboard needs [H, W, C] events", "[2, 4]"):
        getattr(coupling, method)(_ones(2, 4))
    # Rank 3 with event_ndims=1: the shape could be an image, but the event is a vector.
    with raises(ValueError, "AffineCoupling", "Checkerboard needs event_ndims=3", "got 1"):
        getattr(coupling, method)(_ones(2, 3, 4))


def test_channel_split_needs_a_static_channel_axis():
    coupling = fb.AffineCoupling(_double, event_ndims=1)
    with raises(ValueError, "AffineCoupling", "channel axis", "must be known statically"):
        tf.function(coupling.inverse).get_concrete_function(tf.TensorSpec([2, None]))


# --- 1x1 convolutions ----------------------------------------------------------------------

@pytest.mark.parametrize("shape", [[3, 4], [4, 3], [3], [2, 3, 3]], ids=str)
def test_non_square_kernel(shape):
    with raises(ValueError, "Invertible1x1Conv", "square [C, C] kernel", str(shape)):
        fb.Invertible1x1Conv(tf.zeros(shape))


@pytest.mark.parametrize("method", METHODS)
def test_singular_kernel_under_validate_args(method):
    conv = fb.Invertible1x1Conv(tf.ones([3, 3]), validate_args=True)
    with raises(tf.errors.InvalidArgumentError, "Invertible1x1Conv",
                "expected an invertible kernel", "singular"):
        _call(conv, method, _ones(2, 4, 4, 3))


def test_singular_kernel_under_validate_args_in_function():
    conv = fb.Invertible1x1Conv(tf.Variable(tf.eye(3)), validate_args=True)
    inverse = tf.function(conv.inverse)
    x = _ones(2, 4, 4, 3)
    inverse(x)
    conv.kernel.assign(tf.ones([3, 3]))
    with raises(tf.errors.InvalidArgumentError, "Invertible1x1Conv", "invertible kernel"):
        inverse(x)


def test_singular_kernel_without_validate_args_does_not_check():
    # The cheap path: no QR of the kernel for an assertion, and no error (the value is junk).
    conv = fb.Invertible1x1Conv(tf.ones([3, 3]))
    conv.inverse(_ones(2, 4, 4, 3))


@pytest.mark.parametrize("what, bad, fragments", [
    ("lower", tf.zeros([4, 4]), ["`lower` of shape [3, 3]", "(4, 4)"]),
    ("upper", tf.zeros([3]), ["`upper` of shape [3, 3]", "(3,)"]),
    ("permutation", tf.constant([0, 1], tf.int32), ["`permutation` of shape [3]", "(2,)"]),
    ("sign_s", tf.ones([2]), ["`sign_s` of shape [3]", "(2,)"]),
], ids=["lower", "upper", "permutation", "sign_s"])
def test_lu_parameters_with_mismatched_shapes(what, bad, fragments):
    params = dict(fb.lu_parameters(_invertible(3)), **{what: bad})
    with raises(ValueError, "LUInvertible1x1Conv", *fragments):
        fb.LUInvertible1x1Conv(**params)


def test_lu_log_abs_s_must_have_a_channel_axis():
    params = dict(fb.lu_parameters(_invertible(3)), log_abs_s=tf.zeros([]))
    with raises(ValueError, "LUInvertible1x1Conv", "log_abs_s", "scalar"):
        fb.LUInvertible1x1Conv(**params)


@pytest.mark.parametrize("shape", [[3, 4], [3], [2, 2, 2]], ids=str)
def test_lu_parameters_of_non_square_matrix(shape):
    with raises(ValueError, "lu_parameters", "square [C, C] matrix", str(shape)):
        fb.lu_parameters(tf.zeros(shape))


# --- NaN input: InvalidArgumentError under validate_args, free without ---------------------

NAN_CASES = {
    "ActNorm": lambda v: fb.ActNorm(tf.zeros([4]), tf.zeros([4]), validate_args=v),
    "Invertible1x1Conv": lambda v: fb.Invertible1x1Conv(_invertible(4), validate_args=v),
    "LUInvertible1x1Conv": lambda v: fb.LUInvertible1x1Conv(
        **fb.lu_parameters(_invertible(4)), validate_args=v),
    "AdditiveCoupling": lambda v: fb.AdditiveCoupling(tf.sin, validate_args=v),
    "AffineCoupling": lambda v: fb.AffineCoupling(_double, validate_args=v),
    "SplineCoupling": lambda v: fb.SplineCoupling(
        _spline_params, num_bins=4, validate_args=v),
    "Squeeze": lambda v: fb.Squeeze(validate_args=v),
    "PermuteChannels": lambda v: fb.PermuteChannels.reverse(4, validate_args=v),
    "BatchNormalization": lambda v: fb.BatchNormalization(tf.zeros([4]), tf.ones([4]),
                                                          validate_args=v),
    "LogitPreprocessing": lambda v: fb.LogitPreprocessing(validate_args=v),
}


def _with_bad_value(value):
    x = np.full([2, 4, 4, 4], 0.5, np.float32)
    x[1, 2, 3, 1] = value
    return tf.constant(x)


@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("method", ["forward", "inverse"])
@pytest.mark.parametrize("name", list(NAN_CASES))
def test_non_finite_input_under_validate_args(name, method, value):
    bijector = NAN_CASES[name](True)
    with raises(tf.errors.InvalidArgumentError, name, "NaN or Inf"):
        getattr(bijector, method)(_with_bad_value(value))


@pytest.mark.parametrize("name", ["ActNorm", "AffineCoupling", "LUInvertible1x1Conv",
                                  "LogitPreprocessing"])
def test_nan_input_to_log_det_under_validate_args(name):
    bijector = NAN_CASES[name](True)
    ndims = bijector.forward_min_event_ndims
    for method in ["forward_log_det_jacobian", "inverse_log_det_jacobian"]:
        with raises(tf.errors.InvalidArgumentError, name, "NaN or Inf"):
            getattr(bijector, method)(_with_bad_value(np.nan), event_ndims=ndims)


@pytest.mark.parametrize("method", ["forward", "inverse"])
@pytest.mark.parametrize("name", list(NAN_CASES))
def test_nan_input_without_validate_args_is_not_checked(name, method):
    bijector = NAN_CASES[name](False)
    out = getattr(bijector, method)(_with_bad_value(np.nan))
    assert np.any(np.isnan(out))
    # And the graph holds no CheckNumerics op: the cheap path is really cheap.
    graph = tf.function(getattr(bijector, method)).get_concrete_function(
        tf.TensorSpec([2, 4, 4, 4])).graph
    assert not [op for op in graph.get_operations() if op.type in ("CheckNumerics", "Assert")]


# --- LogitPreprocessing ------------------------------------------------------------------

@pytest.mark.parametrize("values, fragments", [
    ([0.5, 1.5], ["expected data in [0, 1]", "> 1", "1.5"]),
    ([0.5, -0.25], ["expected data in [0, 1]", "< 0", "-0.25"]),
], ids=["above_one", "below_zero"])
def test_logit_data_outside_unit_interval(values, fragments):
    logit = fb.LogitPreprocessing(validate_args=True)
    with raises(tf.errors.InvalidArgumentError, "LogitPreprocessing", *fragments):
        logit.inverse(tf.constant(values))
    with raises(tf.errors.InvalidArgumentError, "LogitPreprocessing", *fragments):
        logit.inverse_log_det_jacobian(tf.constant(values), event_ndims=1)
    # The endpoints themselves are fine.
    assert np.all(np.isfinite(logit.inverse(tf.constant([0., 1.]))))


def test_logit_data_outside_unit_interval_in_function():
    logit = fb.LogitPreprocessing(validate_args=True)
    inverse = tf.function(logit.inverse, input_signature=[tf.TensorSpec([None])])
    with raises(tf.errors.InvalidArgumentError, "LogitPreprocessing", "> 1"):
        inverse(tf.constant([2.]))


@pytest.mark.parametrize("alpha", [0., 0.5, -0.1, 0.7], ids=repr)
def test_logit_alpha_outside_open_interval(alpha):
    with raises(ValueError, "LogitPreprocessing", "alpha must lie in (0, 0.5)", repr(alpha)):
        fb.LogitPreprocessing(alpha)


# --- PermuteChannels -----------------------------------------------------------------------

@pytest.mark.parametrize("permutation", [[0, 0, 1], [1, 2, 3], [[0, 1]], [0, 2]], ids=str)
def test_permute_channels_not_a_permutation(permutation):
    with raises(ValueError, "PermuteChannels", "permutation of range(C)", str(permutation)):
        fb.PermuteChannels(permutation)


# --- Mixed parameter dtypes ---------------------------------------------------------------

@pytest.mark.parametrize("make, name, fragments", [
    (lambda: fb.ActNorm(tf.zeros([3]), tf.zeros([3], tf.float64)),
     "ActNorm", ["loc: float32", "log_scale: float64"]),
    (lambda: fb.ActNorm(tf.Variable(tf.zeros([3])), np.zeros([3])),
     "ActNorm", ["loc: float32", "log_scale: float64"]),
    (lambda: fb.BatchNormalization(tf.zeros([3]), tf.ones([3], tf.float64)),
     "BatchNormalization", ["mean: float32", "variance: float64"]),
    (lambda: fb.BatchNormalization(tf.zeros([3]), tf.ones([3]),
                                   log_gamma=tf.zeros([3], tf.float16)),
     "BatchNormalization", ["mean: float32", "log_gamma: float16"]),
    (lambda: fb.LUInvertible1x1Conv(**dict(fb.lu_parameters(_invertible(3)),
                                           log_abs_s=tf.zeros([3], tf.float64))),
     "LUInvertible1x1Conv", ["lower: float32", "log_abs_s: float64"]),
], ids=["actnorm", "actnorm_variable", "batch_norm", "batch_norm_float16", "lu_conv"])
def test_parameters_of_mixed_dtypes(make, name, fragments):
    with raises(ValueError, name, "expected parameters of one dtype", *fragments):
        make()


def test_lu_permutation_variable_of_wrong_dtype():
    params = dict(fb.lu_parameters(_invertible(3)))
    params["permutation"] = tf.Variable(tf.cast(params["permutation"], tf.int64))
    with raises(ValueError, "LUInvertible1x1Conv", "`permutation` of dtype int32", "int64"):
        fb.LUInvertible1x1Conv(**params)


# --- FlowModel and fit: every bad input, one clear error ----------------------------------------
#
# One table of bad inputs, checked through every entry point: the eager methods
# (`ValueError`), a user's `tf.function` and `fit` on a dataset, plain and under
# `jit_compile=True` (`InvalidArgumentError` when the bad batch runs). The rule
# for quantised data (`num_levels` set): training data (`fit`, `initialize`) in
# [0, 1] with 1e-3 slack; scored values (every other entry point) in [-8, 9] for
# 17 levels: wide enough for the model's own samples, narrow enough for 0..16 data.

import keras  # noqa: E402  (model-level section)

import tfflow  # noqa: E402

IMAGE = (4, 4, 1)


def _image_model():
    """A tiny class-conditional Glow on 4x4x1 data quantised to 17 levels."""
    return tfflow.models.Glow(IMAGE, scales=1, steps_per_scale=1, hidden_channels=4,
                              num_levels=17, num_classes=3)


@pytest.fixture(scope="module")
def image_model():
    model = _image_model()
    model.initialize(_good_x(), _good_labels())
    model.compile()  # for evaluate
    return model


@pytest.fixture(scope="module")
def vector_model():
    model = tfflow.models.RealNVP((2,), num_couplings=2, hidden_units=(4,))
    model.initialize(np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32))
    return model


def _good_x(n=6):
    return np.random.default_rng(1).uniform(0., 1., (n,) + IMAGE).astype(np.float32)


def _good_labels(n=6):
    return np.arange(n, dtype=np.int32) % 3


def _set(x, value, index=(1, 2, 3, 0)):
    x = x.copy()
    x[index] = value
    return x


# id: (x, labels, fragments); static cases are ValueErrors even inside a traced function.
STATIC_X = {
    "rank_too_low": (np.zeros([6, 4, 4], np.float32), ["expected x of shape [batch, 4, 4, 1]",
                                                       "[6, 4, 4]"]),
    "rank_too_high": (np.zeros([6, 4, 4, 1, 1], np.float32), ["[batch, 4, 4, 1]",
                                                               "[6, 4, 4, 1, 1]"]),
    "wrong_height_width": (np.zeros([6, 8, 8, 1], np.float32), ["[batch, 4, 4, 1]",
                                                                 "[6, 8, 8, 1]"]),
    "wrong_channels": (np.zeros([6, 4, 4, 3], np.float32), ["[batch, 4, 4, 1]",
                                                             "[6, 4, 4, 3]"]),
    "integer_dtype": (np.zeros([6, 4, 4, 1], np.int32), ["floating point", "got int32"]),
    "uint8_pixels": (np.full([6, 4, 4, 1], 200, np.uint8), ["floating point", "got uint8"]),
}
VALUE_X = {
    "nan": (_set(_good_x(), np.nan), ["expected finite x"], ["1 NaN and 0 Inf",
                                                              "index [1, 2, 3, 0]"]),
    "inf": (_set(_good_x(), np.inf), ["expected finite x"], ["0 NaN and 1 Inf"]),
    "minus_inf": (_set(_good_x(), -np.inf), ["expected finite x"], ["1 Inf"]),
    "above_range": (_set(_good_x(), 9.5), ["expected x in RANGE", "num_levels=17"],
                    ["to 9.5", "1 of 96 outside"]),
    "below_range": (_set(_good_x(), -8.25), ["expected x in RANGE", "num_levels=17"],
                    ["from -8.25"]),
    "pixels_0_255": (_good_x() * 255., ["expected x in RANGE"], ["outside"]),
    "pixels_0_16": (np.floor(_good_x() * 17.), ["expected x in RANGE"], ["outside"]),
}
# Outside the training data's [0, 1] but inside the scoring range (a model's own samples
# stray there): refused by the entry points that train, scored by the others.
TRAINING_ONLY_X = {
    "above_one": (_set(_good_x(), 1.5), ["expected x in [0, 1]", "num_levels=17"],
                  ["to 1.5", "1 of 96 outside"]),
    "below_zero": (_set(_good_x(), -0.25), ["expected x in [0, 1]", "num_levels=17"],
                   ["from -0.25"]),
    "pixels_minus_1_1": (_good_x() * 2. - 1., ["expected x in [0, 1]"], ["from -"]),
}
BAD_LABELS = {
    "too_large": (np.array([0, 1, 2, 3, 1, 2]), ["expected labels in [0, 3)", "num_classes=3"],
                  ["[3]"]),
    "negative": (np.array([0, -1, 2, 0, 1, 2]), ["expected labels in [0, 3)"], ["[-1]"]),
    "wrong_count": (np.array([0, 1, 2]), ["one label per example"], ["(6), got 3 labels"]),
    "wrong_shape": (np.zeros([6, 1], np.int32), ["expected labels of shape [batch]"],
                    ["[6, 1]"]),
    "float_labels": (np.zeros([6], np.float32), ["integer class indices", "float32"], []),
}
EAGER_METHODS = {
    "log_prob": lambda m, x, labels: m.log_prob(x, labels),
    "bits_per_dim": lambda m, x, labels: m.bits_per_dim(x, labels),
    "encode": lambda m, x, labels: m.encode(x, labels),
    "initialize": lambda m, x, labels: m.initialize(x, labels, force=True),
    "call": lambda m, x, labels: m((x, labels)),
    "predict": lambda m, x, labels: m.predict((x, labels), verbose=0),
    "evaluate": lambda m, x, labels: m.evaluate(x, labels, verbose=0),
}
SCORING_METHODS = [m for m in EAGER_METHODS if m != "initialize"]


def _in_range(method, fragments):
    """The case's fragments with the method's range: training data or scored values."""
    shown = "[0, 1]" if method in ("initialize", "fit") else "[-8, 9]"
    return [f.replace("RANGE", shown) for f in fragments]


def _message(info):
    value = info.value
    return value.message if isinstance(value, tf.errors.OpError) else str(value)


def _assert_in(fragments, message):
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in the message:\n{message}"


@pytest.mark.parametrize("method", list(EAGER_METHODS))
@pytest.mark.parametrize("case", list(STATIC_X) + list(VALUE_X) + ["empty_batch"])
def test_model_rejects_bad_x(image_model, method, case):
    if case == "empty_batch":
        x, fragments = np.zeros([0, 4, 4, 1], np.float32), ["at least one example",
                                                            "[0, 4, 4, 1]"]
    elif case in STATIC_X:
        x, fragments = STATIC_X[case]
    else:
        x, fragments, details = VALUE_X[case]
        fragments = _in_range(method, fragments + details)
    labels = _good_labels(len(x))
    with pytest.raises(ValueError) as info:
        EAGER_METHODS[method](image_model, x, labels)
    _assert_in([f"FlowModel.{method}:"] + fragments, _message(info))


@pytest.mark.parametrize("case", list(TRAINING_ONLY_X))
def test_training_data_must_lie_in_the_unit_interval_but_scoring_is_wider(image_model, case):
    x, fragments, details = TRAINING_ONLY_X[case]
    with pytest.raises(ValueError) as info:
        image_model.initialize(x, _good_labels(), force=True)
    _assert_in(["FlowModel.initialize:"] + fragments + details, _message(info))
    for method in SCORING_METHODS:
        result = EAGER_METHODS[method](image_model, x, _good_labels())
        assert np.all(np.isfinite(result)), (method, result)


def test_the_model_scores_its_own_samples(image_model):
    # A flow's samples stray past [0, 1]; every scoring entry point takes them back.
    samples = image_model.sample(512, temperature=1.5, seed=4, labels=1).numpy()
    assert samples.min() < 0. or samples.max() > 1.  # the case the range must allow
    labels = np.ones(512, np.int32)
    for method in SCORING_METHODS:
        assert np.all(np.isfinite(EAGER_METHODS[method](image_model, samples, labels))), method


@pytest.mark.parametrize("method", list(EAGER_METHODS))
@pytest.mark.parametrize("case", list(BAD_LABELS) + ["missing"])
def test_model_rejects_bad_labels(image_model, method, case):
    labels, fragments = (None, ["class-conditional (3 classes); pass labels"]) \
        if case == "missing" else BAD_LABELS[case][:2]
    fragments = fragments + ([] if case == "missing" else BAD_LABELS[case][2])
    with pytest.raises(ValueError) as info:
        EAGER_METHODS[method](image_model, _good_x(), labels)
    _assert_in([f"FlowModel.{method}:"] + fragments, _message(info))


def test_model_accepts_the_edges_of_its_data_range(image_model):
    # [0, 1] with 1e-3 slack: 1.0 itself (float rounding of (k + u) / B) and a hair past.
    for value in (0., 1., -9e-4, 1. + 9e-4):
        assert np.all(np.isfinite(image_model.log_prob(_set(_good_x(), value),
                                                       _good_labels())))
    # A scalar label serves every example.
    assert image_model.log_prob(_good_x(), 2).shape == [6]


@pytest.mark.parametrize("case", list(VALUE_X) + ["label_too_large", "label_count"])
def test_model_rejects_bad_values_inside_a_tf_function(image_model, case):
    log_prob = tf.function(image_model.log_prob)
    x, labels = _good_x(), _good_labels()
    if case == "label_too_large":
        labels, fragments = labels * 2, ["FlowModel.log_prob: expected labels in [0, 3)",
                                         "from", "[0] [to] [4]"]
    elif case == "label_count":
        log_prob = tf.function(image_model.log_prob, input_signature=[
            tf.TensorSpec([None, *IMAGE]), tf.TensorSpec([None], tf.int32)])
        labels, fragments = labels[:4], ["FlowModel.log_prob: expected one label per example"]
    else:
        x, fragments, _ = VALUE_X[case]
        fragments = ["FlowModel.log_prob:"] + _in_range("log_prob", fragments)
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        log_prob(tf.constant(x), tf.constant(labels))
    _assert_in(fragments, _message(info))


def test_model_rejects_a_static_bad_shape_inside_a_tf_function(image_model):
    with pytest.raises(ValueError, match=r"FlowModel.log_prob: .*\[batch, 4, 4, 1\]"):
        tf.function(image_model.log_prob).get_concrete_function(
            tf.TensorSpec([None, 4, 4, 2]), tf.TensorSpec([None], tf.int32))


@pytest.mark.parametrize("method, call, fragments", [
    ("decode", lambda m: m.decode(np.full([2, 4, 4, 1], np.nan, np.float32), [0, 1]),
     ["expected finite z", "32 NaN"]),
    ("decode", lambda m: m.decode(np.zeros([2, 2, 2, 4], np.float32), [0, 1]),
     ["expected z of shape [batch, 4, 4, 1]"]),  # the latent has the data's shape
    ("decode", lambda m: m.decode(np.zeros([2, 4, 4, 1], np.int64), [0, 1]),
     ["expected z as floating point", "int64"]),
    ("decode", lambda m: m.decode(np.zeros([0, 4, 4, 1], np.float32), []),
     ["at least one example"]),
    ("decode", lambda m: m.decode(np.zeros([2, 4, 4, 1], np.float32), [0, 5]),
     ["expected labels in [0, 3)", "[5]"]),
    ("sample", lambda m: m.sample(0, labels=1), ["expected n an integer >= 1, got 0"]),
    ("sample", lambda m: m.sample(-3, labels=1), ["got -3"]),
    ("sample", lambda m: m.sample(2.5, labels=1), ["got 2.5"]),
    ("sample", lambda m: m.sample(2, temperature=-0.5, labels=1),
     ["expected temperature a finite number >= 0, got -0.5"]),
    ("sample", lambda m: m.sample(2, temperature=float("nan"), labels=1), ["got nan"]),
    ("sample", lambda m: m.sample(2, labels=[0, 1, 2]), ["one label per example (2)"]),
    ("sample", lambda m: m.sample(2, labels=3), ["expected labels in [0, 3)"]),
    ("sample", lambda m: m.sample(2), ["class-conditional"]),
    ("sample", lambda m: m.sample(2, seed=[1, 2, 3], labels=1), ["expected seed", "[3]"]),
    ("interpolate", lambda m: m.interpolate(_good_x(1)[0], _good_x(1)[0] * 30., labels=1),
     ["expected x1/x2 in [-8, 9]"]),
    ("interpolate", lambda m: m.interpolate(_good_x(1)[0], _good_x(1)[0], steps=1, labels=1),
     ["expected steps an integer >= 2, got 1"]),
], ids=lambda v: v if isinstance(v, str) else "")
def test_model_rejects_bad_latents_and_sampling_arguments(image_model, method, call, fragments):
    with pytest.raises(ValueError) as info:
        call(image_model)
    _assert_in([f"FlowModel.{method}:"] + fragments, _message(info))


@pytest.mark.parametrize("x, fragments", [
    (np.array([[0., np.nan]], np.float32), ["FlowModel.log_prob: expected finite x", "1 NaN"]),
    (np.array([[np.inf, 0.]], np.float32), ["1 Inf"]),
    (np.zeros([3, 3], np.float32), ["expected x of shape [batch, 2]", "[3, 3]"]),
    (np.zeros([0, 2], np.float32), ["at least one example"]),
    (np.zeros([3, 2], np.int64), ["floating point", "int64"]),
], ids=["nan", "inf", "wrong_dims", "empty", "integer"])
def test_continuous_model_checks_finiteness_not_range(vector_model, x, fragments):
    with pytest.raises(ValueError) as info:
        vector_model.log_prob(x)
    _assert_in(fragments, _message(info))
    # No data range for continuous data: far values are fine (and get a finite density).
    assert np.all(np.isfinite(vector_model.log_prob(np.array([[1e4, -1e4]], np.float32))))
    # Unconditional models ignore labels, whatever they are (tfflow.training relies on it).
    vector_model.log_prob(np.zeros([2, 2], np.float32), labels=np.array([7.5]))


# fit: a dataset's bad batch surfaces as InvalidArgumentError from the tf.data pipeline,
# under jit_compile=True too (XLA compiles the train step's own asserts to no-ops, measured).

@pytest.fixture(scope="module", params=[False, True], ids=["graph", "jit_compile"])
def fitted_image_model(request):
    """A model whose train step is traced once; every bad dataset below reuses the trace."""
    keras.utils.set_random_seed(0)
    model = _image_model()
    model.compile(jit_compile=request.param, warmup_steps=0)
    model.fit(_dataset(_good_x(), _good_labels()), epochs=1, verbose=0)
    return model


def _dataset(x, labels):
    return tf.data.Dataset.from_tensor_slices((x, labels)).batch(3)


FIT_CASES = {
    "nan": (_set(_good_x(), np.nan), _good_labels(), ["expected finite x"]),
    "inf": (_set(_good_x(), np.inf), _good_labels(), ["expected finite x"]),
    "above_one": (_set(_good_x(), 1.5), _good_labels(), ["expected x in [0, 1]", "1.5"]),
    "below_zero": (_set(_good_x(), -0.25), _good_labels(), ["expected x in [0, 1]", "-0.25"]),
    "label_too_large": (_good_x(), _good_labels() + 1, ["expected labels in [0, 3)"]),
    "label_negative": (_good_x(), _good_labels() - 1, ["expected labels in [0, 3)"]),
}


@pytest.mark.parametrize("case", list(FIT_CASES))
def test_fit_rejects_a_bad_batch_of_a_dataset(fitted_image_model, case):
    x, labels, fragments = FIT_CASES[case]
    weights = [v.numpy() for v in fitted_image_model.trainable_variables]
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        fitted_image_model.fit(_dataset(x, labels), epochs=1, verbose=0)
    _assert_in(["FlowModel.fit:"] + fragments, _message(info))
    # The bad example (in the first batch) never reached the weights.
    for before, v in zip(weights, fitted_image_model.trainable_variables):
        np.testing.assert_array_equal(before, v.numpy())


@pytest.mark.parametrize("case", ["nan", "above_one", "label_too_large"])
def test_fit_rejects_bad_arrays_before_training(case):
    x, labels, fragments = FIT_CASES[case]
    model = _image_model()
    model.compile()
    with pytest.raises(ValueError) as info:
        model.fit(x, labels, batch_size=3, epochs=1, verbose=0)
    _assert_in(["FlowModel.fit:"] + fragments, _message(info))
    assert not model.is_initialized  # rejected before the initialisation too


def test_fit_rejects_bad_validation_data(fitted_image_model):
    x, labels, fragments = FIT_CASES["nan"]
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        fitted_image_model.fit(_dataset(_good_x(), _good_labels()), epochs=1, verbose=0,
                               validation_data=_dataset(x, labels))
    _assert_in(["FlowModel.fit:"] + fragments, _message(info))


def test_fit_rejects_static_bad_data_at_once(fitted_image_model):
    with pytest.raises(ValueError, match=r"FlowModel.fit: .*floating point.*uint8"):
        fitted_image_model.fit(_dataset((_good_x() * 255).astype(np.uint8), _good_labels()),
                               epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"FlowModel.fit: .*\[batch, 4, 4, 1\].*\[None, 4, 4\]"):
        fitted_image_model.fit(_dataset(_good_x()[..., 0], _good_labels()), epochs=1,
                               verbose=0)


# Generators and PyDatasets: each batch is checked in Python before Keras reads it, so a
# bad batch is a ValueError naming it, under jit_compile=True too (where the step's own
# asserts are no-ops).

class _Batches(keras.utils.PyDataset):
    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        return self.batches[index]


def _generator(batches):
    yield from batches


@pytest.mark.parametrize("kind", ["generator", "py_dataset"])
@pytest.mark.parametrize("case", ["nan", "above_one", "label_too_large"])
def test_fit_rejects_a_bad_batch_of_a_generator_or_py_dataset(fitted_image_model, kind, case):
    x, labels, fragments = FIT_CASES[case]
    batches = [(_good_x(3), _good_labels(3)), (x[:3], labels[:3])]
    data = _generator(batches) if kind == "generator" else _Batches(batches)
    with pytest.raises(ValueError) as info:
        fitted_image_model.fit(data, epochs=1, verbose=0, shuffle=False,
                               steps_per_epoch=2 if kind == "generator" else None)
    where = "batch 1 of the generator" if kind == "generator" else "batch 1 of the _Batches"
    _assert_in(["FlowModel.fit:", where] + fragments, _message(info))
    # A bad first batch never reaches the weights.
    first = _generator(batches[::-1]) if kind == "generator" else _Batches(batches[::-1])
    weights = [v.numpy() for v in fitted_image_model.trainable_variables]
    with pytest.raises(ValueError):
        fitted_image_model.fit(first, epochs=1, verbose=0, shuffle=False,
                               steps_per_epoch=2 if kind == "generator" else None)
    for before, v in zip(weights, fitted_image_model.trainable_variables):
        np.testing.assert_array_equal(before, v.numpy())


@pytest.mark.parametrize("method", ["predict", "evaluate"])
@pytest.mark.parametrize("case", ["nan", "label_too_large"])
def test_predict_and_evaluate_reject_a_bad_batch_of_a_dataset(fitted_image_model, method, case):
    x, labels, fragments = FIT_CASES[case]
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        getattr(fitted_image_model, method)(_dataset(x, labels), verbose=0)
    _assert_in([f"FlowModel.{method}:"] + fragments, _message(info))


def test_predict_scores_like_log_prob(fitted_image_model):
    x, labels = _good_x(), _good_labels()
    expected = fitted_image_model.log_prob(x, labels).numpy()
    np.testing.assert_allclose(fitted_image_model.predict((x, labels), verbose=0), expected,
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(fitted_image_model.predict(_dataset(x, labels), verbose=0),
                               expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(fitted_image_model((x, labels)), expected, rtol=1e-5, atol=1e-4)


# Conditional models: the context is checked at every entry point like x.

@pytest.fixture(scope="module")
def conditional_model():
    model = tfflow.models.MAF((2,), context_shape=(3,), transforms=1, hidden_units=(8,))
    rng = np.random.default_rng(2)
    model.initialize(rng.normal(size=(32, 2)).astype(np.float32),
                     context=rng.normal(size=(32, 3)).astype(np.float32))
    model.compile()
    return model


_X2 = np.zeros([4, 2], np.float32)
_C3 = np.zeros([4, 3], np.float32)
CONTEXT_CASES = {
    "missing": (None, ["this model is conditional", "[batch, 3]"]),
    "wrong_width": (np.zeros([4, 2], np.float32), ["expected context of shape [batch, 3]",
                                                   "[4, 2]"]),
    "wrong_rows": (np.zeros([3, 3], np.float32), ["one row per example (4 rows)", "[3, 3]"]),
    "integer": (np.zeros([4, 3], np.int32), ["expected context as floating point", "int32"]),
    "nan": (np.full([4, 3], np.nan, np.float32), ["expected finite context", "12 NaN"]),
}
CONTEXT_METHODS = {
    "log_prob": lambda m, c: m.log_prob(_X2, context=c),
    "encode": lambda m, c: m.encode(_X2, context=c),
    "decode": lambda m, c: m.decode(_X2, context=c),
    "call": lambda m, c: m(_X2 if c is None else (_X2, c)),
    "predict": lambda m, c: m.predict(_X2 if c is None else (_X2, c), verbose=0),
    "evaluate": lambda m, c: m.evaluate(_X2, c, verbose=0),
    "fit": lambda m, c: m.fit(_X2, c, epochs=1, verbose=0),
}


@pytest.mark.parametrize("method", list(CONTEXT_METHODS))
@pytest.mark.parametrize("case", list(CONTEXT_CASES))
def test_conditional_model_rejects_bad_contexts(conditional_model, method, case):
    context, fragments = CONTEXT_CASES[case]
    with pytest.raises(ValueError) as info:
        CONTEXT_METHODS[method](conditional_model, context)
    _assert_in([f"FlowModel.{method}:"] + fragments, _message(info))


def test_conditional_model_scores_through_call_and_predict(conditional_model):
    expected = conditional_model.log_prob(_X2, context=_C3).numpy()
    np.testing.assert_allclose(conditional_model((_X2, _C3)), expected, rtol=1e-5)
    np.testing.assert_allclose(conditional_model.predict((_X2, _C3), verbose=0), expected,
                               rtol=1e-5)
    dataset = tf.data.Dataset.from_tensor_slices((_X2, _C3)).batch(2)
    np.testing.assert_allclose(conditional_model.predict(dataset, verbose=0), expected,
                               rtol=1e-5)
