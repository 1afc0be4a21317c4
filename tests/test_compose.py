"""A trained tfflow model composes with the rest of TFP (the README's examples, tested)."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfflow

tfb, tfd = tfp.bijectors, tfp.distributions


@pytest.fixture(scope="module")
def flow():
    model = tfflow.models.RealNVP((2,), num_couplings=2, hidden_units=(16,))
    x = tf.random.stateless_normal([256, 2], seed=(1, 2)) * [1., 0.5]
    model.initialize(x)
    for v in model.trainable_variables:  # as if trained: nothing is the identity
        v.assign(v + 0.05 * tf.random.stateless_normal(v.shape, seed=(3, 4)))
    return model


def test_bijector_inside_another_transformed_distribution(flow):
    base = tfd.MultivariateNormalDiag(loc=[0., 0.], scale_diag=[1., 1.])
    dist = tfd.TransformedDistribution(base, flow.bijector)
    x = dist.sample(5, seed=(5, 6))
    np.testing.assert_allclose(dist.log_prob(x), flow.log_prob(x), rtol=1e-5, atol=1e-5)


def test_chain_with_tfp_bijectors(flow):
    squashed = tfd.TransformedDistribution(flow.distribution.distribution,
                                           tfb.Chain([tfb.Sigmoid(), flow.bijector]))
    y = squashed.sample(4, seed=(7, 8))
    assert np.all((y.numpy() > 0) & (y.numpy() < 1))
    x = tfb.Sigmoid().inverse(y)
    expected = flow.log_prob(x) + tfb.Sigmoid().inverse_log_det_jacobian(y, event_ndims=1)
    np.testing.assert_allclose(squashed.log_prob(y), expected, rtol=1e-4, atol=1e-4)


def test_distribution_as_prior_in_a_joint_distribution(flow):
    joint = tfd.JointDistributionSequential([
        flow.distribution,                                       # prior p(theta)
        lambda theta: tfd.Independent(tfd.Normal(theta, 0.1), 1),  # likelihood p(y | theta)
    ])
    theta, y = joint.sample(3, seed=(9, 10))
    lp = joint.log_prob([theta, y])
    expected = flow.log_prob(theta) + tfd.Independent(tfd.Normal(theta, 0.1), 1).log_prob(y)
    np.testing.assert_allclose(lp, expected, rtol=1e-5, atol=1e-4)


def test_distribution_in_a_mixture(flow):
    mixture = tfd.Mixture(tfd.Categorical(probs=[0.3, 0.7]),
                          [flow.distribution, tfd.MultivariateNormalDiag([3., 3.], [0.5, 0.5])])
    x = tf.constant([[0., 0.], [3., 3.]])
    expected = tf.reduce_logsumexp(tf.stack([
        np.log(0.3) + flow.log_prob(x),
        np.log(0.7) + tfd.MultivariateNormalDiag([3., 3.], [0.5, 0.5]).log_prob(x)]), axis=0)
    np.testing.assert_allclose(mixture.log_prob(x), expected, rtol=1e-5, atol=1e-5)
    assert mixture.sample(4, seed=(11, 12)).shape == [4, 2]


@pytest.mark.parametrize("factory", [
    lambda: tfflow.models.Glow((4, 4, 1), scales=1, steps_per_scale=1, hidden_channels=4,
                               num_levels=17),
    lambda: tfflow.models.RealNVP((4, 4, 1), scales=1, hidden_channels=4, blocks=1,
                                   num_levels=17),
    lambda: tfflow.models.NICE((3,), hidden_units=(8,)),
], ids=["glow", "realnvp_image", "nice"])
def test_unbatched_and_multi_batch_events(factory):
    model = factory()
    x = tf.random.stateless_uniform((6,) + model.event_shape, seed=(1, 1))
    model.initialize(x)
    dist = model.distribution
    batched = dist.log_prob(x)
    np.testing.assert_allclose(dist.log_prob(x[0]), batched[0], rtol=1e-5, atol=1e-4)
    grid = tf.reshape(x, (2, 3) + model.event_shape)
    np.testing.assert_allclose(dist.log_prob(grid), tf.reshape(batched, [2, 3]), rtol=1e-5,
                               atol=1e-4)
