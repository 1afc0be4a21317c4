"""Every registered bijector through tfflow.testing's checks, and each one's specifics."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfflow
from tfflow import bijectors as fb
from tfflow.testing import EAGER, check_bijector, in_function

from bijector_registry import REGISTRY

tfb = tfp.bijectors
tfd = tfp.distributions

RUNNERS = {
    "eager": EAGER,
    "function": in_function(),
    "function_none_batch": in_function(unknown_batch=True),
}


@pytest.mark.parametrize("runner", list(RUNNERS))
@pytest.mark.parametrize("name", list(REGISTRY))
def test_check_bijector_float64(name, runner):
    bijector, x = REGISTRY[name](tf.float64)
    check_bijector(bijector, x, runner=RUNNERS[runner])


@pytest.mark.parametrize("name", list(REGISTRY))
def test_check_bijector_xla(name):
    bijector, x = REGISTRY[name](tf.float64)
    check_bijector(bijector, x, runner=in_function(jit_compile=True))


@pytest.mark.parametrize("name", list(REGISTRY))
def test_float32_round_trip_and_dtype(name):
    bijector, x = REGISTRY[name](tf.float32)
    y = bijector.forward(x)
    assert y.dtype == tf.float32
    check_bijector(bijector, x, rtol=1e-4, atol=1e-4)


def _base_for(event_shape, dtype, kind, batch=None):
    """A TFP base distribution over `event_shape`; `batch` adds a batch shape [N]."""
    zeros = tf.zeros(([batch] if batch else []) + list(event_shape), dtype)
    if kind == "sample_normal":
        loc = tf.zeros([batch] if batch else [], dtype)
        return tfd.Sample(tfd.Normal(loc, tf.ones_like(loc)), event_shape)
    if kind == "mvn_diag":
        size = int(np.prod(event_shape))
        flat = tfd.MultivariateNormalDiag(
            tf.reshape(zeros, zeros.shape[:len(zeros.shape) - len(event_shape)].as_list() + [size]))
        return tfd.TransformedDistribution(flat, tfb.Reshape(event_shape))
    if kind == "mixture":
        logits = tf.zeros(([batch] if batch else []) + [2], dtype)
        comps = tfd.Independent(
            tfd.Normal(tf.stack([zeros - 1., zeros + 1.], axis=-len(event_shape) - 1),
                       tf.ones([], dtype)),
            reinterpreted_batch_ndims=len(event_shape))
        return tfd.MixtureSameFamily(tfd.Categorical(logits=logits), comps)
    raise ValueError(kind)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
@pytest.mark.parametrize("kind", ["sample_normal", "mvn_diag", "mixture"])
@pytest.mark.parametrize("batch", [None, 2])
@pytest.mark.parametrize("name", ["glow_step_chain", "affine_checkerboard", "squeeze",
                                  "affine_alternating_vector", "logit_preprocessing"])
def test_inside_transformed_distribution(name, kind, batch, dtype):
    bijector, z = REGISTRY[name](dtype)
    latent_event = z.shape[1:]
    if name == "affine_alternating_vector":
        latent_event = z.shape[-1:]
    dist = tfd.TransformedDistribution(_base_for(latent_event, dtype, kind, batch), bijector)
    x = dist.sample(3, seed=(1, 2))
    expected_batch = [3] + ([batch] if batch else [])
    assert x.shape[:len(expected_batch)] == expected_batch
    log_prob = dist.log_prob(x)
    assert log_prob.shape == expected_batch
    assert log_prob.dtype == dtype
    # log p(x) = log p_base(f^{-1}(x)) + ildj, computed by hand, without the cache.
    x_fresh = tf.identity(x)
    z_back = bijector.inverse(x_fresh)
    manual = dist.distribution.log_prob(z_back) + bijector.inverse_log_det_jacobian(
        tf.identity(x), event_ndims=len(dist.event_shape))
    np.testing.assert_allclose(log_prob, manual, rtol=1e-4 if dtype == tf.float32 else 1e-10)
    assert np.all(np.isfinite(log_prob))


def test_invert_and_chain_with_tfp_bijectors():
    an, x = REGISTRY["actnorm_vector"](tf.float64)
    check_bijector(tfb.Invert(an), an.forward(x))
    check_bijector(tfb.Chain([tfb.Sigmoid(), an]), x)
    coupling, x = REGISTRY["affine_alternating_vector"](tf.float64)
    check_bijector(tfb.Chain([tfb.Shift(tf.constant(1., tf.float64)), tfb.Invert(coupling)]), x)


def test_keras_runs_tfp_sample_and_log_prob_in_jit_compiled_function():
    bijector, z = REGISTRY["glow_step_chain"](tf.float32)
    dist = tfd.TransformedDistribution(_base_for(z.shape[1:], tf.float32, "sample_normal"),
                                       bijector)

    @tf.function(jit_compile=True)
    def log_prob(x):
        return dist.log_prob(x)
    x = dist.sample(4, seed=(3, 4))
    np.testing.assert_allclose(log_prob(x), dist.log_prob(tf.identity(x)), rtol=1e-4, atol=1e-4)


# --- TFP's cache must never return stale values ------------------------------------------

@pytest.mark.parametrize("make_variable", [
    lambda v: tf.Variable(v),
    lambda v: __import__("keras").Variable(v),
], ids=["tf.Variable", "keras.Variable"])
def test_cache_not_stale_when_variables_change(make_variable):
    loc = make_variable(np.zeros([3], np.float32))
    log_scale = make_variable(np.zeros([3], np.float32))
    actnorm = fb.ActNorm(loc, log_scale, event_ndims=1)
    y = tf.constant([[1., 2., 3.]])
    z_before = actnorm.inverse(y)
    ildj_before = actnorm.inverse_log_det_jacobian(y, event_ndims=1)
    loc.assign([1., 1., 1.])
    log_scale.assign([1., 1., 1.])
    np.testing.assert_allclose(actnorm.inverse(y), (y - 1.) * np.exp(-1.), rtol=1e-6)
    np.testing.assert_allclose(actnorm.inverse_log_det_jacobian(y, event_ndims=1), -3., rtol=1e-6)
    assert not np.allclose(z_before, actnorm.inverse(y))
    assert ildj_before == 0.
    # A second instance built from the same variables must not share cache entries either.
    twin = fb.ActNorm(loc, log_scale, event_ndims=1)
    assert twin != actnorm and hash(twin) != hash(actnorm)
    dist = tfd.TransformedDistribution(tfd.Sample(tfd.Normal(0., 1.), [3]), twin)
    lp1 = dist.log_prob(y)
    loc.assign([0., 0., 0.])
    lp2 = tfd.TransformedDistribution(tfd.Sample(tfd.Normal(0., 1.), [3]),
                                      fb.ActNorm(loc, log_scale, event_ndims=1)).log_prob(y)
    assert not np.allclose(lp1, lp2)


def test_coupling_conditioner_runs_once_per_log_prob_in_graph():
    calls = []
    net = REGISTRY["affine_channel_image"](tf.float32)[0].conditioner

    def counting(x):
        calls.append(1)
        return net(x)
    coupling = fb.AffineCoupling(counting, fb.ChannelSplit())
    dist = tfd.TransformedDistribution(tfd.Sample(tfd.Normal(0., 1.), [4, 4, 4]), coupling)
    tf.function(dist.log_prob).get_concrete_function(tf.TensorSpec([None, 4, 4, 4]))
    assert len(calls) == 1


# --- ActNorm initialisation -------------------------------------------------------------

def test_actnorm_initialisation_standardises_each_channel():
    x = tf.random.stateless_normal([64, 5, 5, 3], seed=(1, 1)) * [1., 5., 0.1] + [3., -2., 0.5]
    loc, log_scale = fb.actnorm_initial_parameters(x)
    z = fb.ActNorm(loc, log_scale).inverse(x)
    mean, var = tf.nn.moments(z, axes=[0, 1, 2])
    np.testing.assert_allclose(mean, 0., atol=1e-5)
    np.testing.assert_allclose(var, 1., atol=1e-4)


def test_actnorm_initialisation_zero_variance_channel_is_finite():
    x = tf.concat([tf.random.stateless_normal([32, 4, 4, 1], seed=(2, 2)),
                   tf.fill([32, 4, 4, 1], 0.25)], axis=-1)
    loc, log_scale = fb.actnorm_initial_parameters(x)
    assert np.all(np.isfinite(log_scale))
    assert log_scale[1] == 0.
    z = fb.ActNorm(loc, log_scale).inverse(x)
    assert np.all(np.isfinite(z))
    np.testing.assert_allclose(z[..., 1], 0., atol=1e-7)


def test_lu_parameters_reconstruct_the_matrix():
    w = tf.linalg.qr(tf.random.stateless_normal([6, 6], seed=(3, 3), dtype=tf.float64))[0]
    conv = fb.LUInvertible1x1Conv(**fb.lu_parameters(w))
    np.testing.assert_allclose(conv.weight(), w, atol=1e-12)
    np.testing.assert_allclose(conv.log_abs_det_weight(), 0., atol=1e-12)
    full = fb.Invertible1x1Conv(w)
    np.testing.assert_allclose(full.inverse_weight(), tf.transpose(w), atol=1e-12)


def test_squeeze_shapes_and_order():
    x = tf.reshape(tf.range(2 * 4 * 4 * 3, dtype=tf.float32), [2, 4, 4, 3])
    squeeze = fb.Squeeze()
    z = squeeze.inverse(x)
    assert z.shape == [2, 2, 2, 12]
    np.testing.assert_array_equal(z, tf.nn.space_to_depth(x, 2))
    assert squeeze.inverse_event_shape([4, 4, 3]) == [2, 2, 12]
    assert squeeze.forward_event_shape([2, 2, 12]) == [4, 4, 3]
    np.testing.assert_array_equal(squeeze.inverse_event_shape_tensor([4, 6, 3]), [2, 3, 12])
    unbatched = squeeze.inverse(x[0])
    np.testing.assert_array_equal(unbatched, z[0])


def test_logit_preprocessing_matches_formula():
    x = tf.constant([0., 0.3, 1.], tf.float64)
    bij = fb.LogitPreprocessing(0.05)
    p = 0.05 + 0.9 * x.numpy()
    np.testing.assert_allclose(bij.inverse(x), np.log(p / (1 - p)), rtol=1e-12)
    np.testing.assert_allclose(bij.inverse_log_det_jacobian(x, event_ndims=1),
                               np.sum(np.log(0.9) - np.log(p) - np.log(1 - p)), rtol=1e-12)


def test_batch_norm_inverse_normalises_with_given_statistics():
    x = tf.random.stateless_normal([256, 3], seed=(4, 4), dtype=tf.float64) * 3. + 2.
    mean, var = tf.nn.moments(x, axes=[0])
    z = fb.BatchNormalization(mean, var, epsilon=0., event_ndims=1).inverse(x)
    np.testing.assert_allclose(tf.math.reduce_std(z, 0), 1., rtol=1e-10)


def test_additive_coupling_doc_example():
    coupling = fb.AdditiveCoupling(lambda x_a: x_a ** 2, event_ndims=1)
    np.testing.assert_allclose(coupling.inverse(tf.constant([[1., 2.]])), [[1., 3.]])
    assert coupling.is_constant_jacobian


def test_public_names():
    for name in ["ActNorm", "Invertible1x1Conv", "AdditiveCoupling", "AffineCoupling", "Squeeze"]:
        cls = getattr(tfflow.bijectors, name)
        assert issubclass(cls, tfb.Bijector)
        assert "latent -> data" in cls.__doc__
    assert callable(tfflow.testing.check_bijector)


@pytest.mark.parametrize("cls, options, partition, channels, want", [
    (fb.AffineCoupling, {}, fb.ChannelSplit(), 5, 2 * 3),
    (fb.AdditiveCoupling, {}, fb.ChannelSplit(1), 5, 1 * 3),
    (fb.AffineCoupling, {}, fb.Checkerboard(0), 4, 2 * 4),
    (fb.SplineCoupling, {"num_bins": 4}, fb.AlternatingMask(0), 3, 11 * 3),
    (fb.SplineCoupling, {}, None, 6, 23 * 3),  # 8 bins, ChannelSplit
])
def test_couplings_own_their_conditioner_width(cls, options, partition, channels, want):
    assert cls.conditioner_outputs(channels, partition, **options) == want
    # ... and the bijector accepts a conditioner of exactly that width.
    conditioner = lambda x_a: tf.zeros(tf.concat([tf.shape(x_a)[:-1], [want]], 0))
    event_ndims = 3 if isinstance(partition, fb.Checkerboard) else 1
    shape = [2, 4, 4, channels] if event_ndims == 3 else [2, channels]
    bijector = cls(conditioner, partition, event_ndims=event_ndims, **options)
    x = tf.random.uniform(shape, -1., 1.)
    np.testing.assert_allclose(bijector.inverse(x), x, atol=1e-6)  # zero output: identity


@pytest.mark.parametrize("make", [lambda: fb.PermuteChannels.reverse(4, validate_args=True),
                                  lambda: fb.Squeeze(validate_args=True)],
                         ids=["PermuteChannels", "Squeeze"])
def test_log_det_inputs_pass_the_same_validation_as_values(make):
    # One hook checks the input of all four methods: a NaN fed to the log-det alone is
    # rejected under validate_args, as it is for forward and inverse.
    bijector = make()
    x = np.full([2, 4, 4, 4], 0.5, np.float32)
    x[1, 0, 0, 0] = np.nan
    for method in ["forward_log_det_jacobian", "inverse_log_det_jacobian"]:
        with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or Inf"):
            getattr(bijector, method)(tf.constant(x), event_ndims=3)


def test_flow_bijector_validation_hook_and_parameter_conversion():
    class Scale(fb.FlowBijector):
        """`x = exp(log_scale) * z` per channel: a bijector written against the base class."""

        def __init__(self, log_scale, validate_args=False):
            parameters = dict(locals())
            dtype, (self._log_scale,) = self._convert_parameters(log_scale=log_scale)
            super().__init__(channels=int(self._log_scale.shape[-1]), forward_min_event_ndims=1,
                             is_constant_jacobian=True, validate_args=validate_args,
                             dtype=dtype, parameters=parameters, name="scale")

        def _forward_and_log_det(self, x):
            return x * tf.exp(self._log_scale), tf.reduce_sum(self._log_scale)

        def _inverse_and_log_det(self, y):
            return y * tf.exp(-self._log_scale), -tf.reduce_sum(self._log_scale)

    bijector = Scale(np.array([0.5, -1.], np.float64), validate_args=True)
    assert bijector.dtype == tf.float64
    check_bijector(bijector, tf.constant([[1., 2.], [3., -4.]], tf.float64), event_ndims=1)
    with pytest.raises(ValueError, match=r"Scale: expected 2 channels"):
        bijector.forward(tf.zeros([3, 5], tf.float64))
    with pytest.raises(ValueError, match=r"Scale: expected an input whose last 1"):
        bijector.inverse(tf.zeros([], tf.float64))
    with pytest.raises(tf.errors.InvalidArgumentError, match="Scale: expected a finite input"):
        bijector.inverse(tf.constant([[np.nan, 0.]], tf.float64))
    with pytest.raises(ValueError, match="Scale: expected parameters of one dtype"):
        # The base class's conversion hook, called here as a subclass's __init__ calls it.
        bijector._convert_parameters(a=tf.zeros([2]), b=tf.zeros([2], tf.float64))
