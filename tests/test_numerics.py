"""Numerical health: log_prob is finite for every finite input; ActNorm survives constant data.

* Far out: points 1e2, 1e4 and 1e6 standard deviations from the data (float32:
  log N(z) = -z^2 / 2 overflows only past |z| ~ 1e19) get a finite log-density
  from every model whose domain is all of R^D: RealNVP and NICE on vectors,
  and the Glow and NICE image flows through their bijector (the public
  `log_prob` of an image model rejects data outside [0, 1], see
  `tests/test_bad_input.py`). RealNVP on images starts with a logit, whose
  domain is [0, 1]: it is checked at the edges of that domain instead.
* At the edges of the data range: all 0, all 1, checkerboards of 0 and 1 and
  the 1e-3 slack, through the public `log_prob` of every image model.
* Each model is checked as initialised, after a few real training steps, and
  with every weight moved by N(0, 0.5) (large conditioner outputs: the bounded
  scales must keep everything finite).
* ActNorm's data-dependent initialisation on a zero-variance channel (a
  constant input channel, all-constant images) gives finite scales, through
  `FlowModel.initialize`.
"""

import numpy as np
import pytest
import tensorflow as tf

import tfflow
from tfflow.layers import ActNormLayer, GlowStepsLayer

IMAGE = (4, 4, 1)
MODELS = {
    "glow": lambda: tfflow.models.Glow(IMAGE, scales=1, steps_per_scale=2, hidden_channels=4,
                                       num_levels=17),
    "realnvp_image": lambda: tfflow.models.RealNVP(IMAGE, scales=1, hidden_channels=4, blocks=1,
                                                   num_levels=17),
    "nice_image": lambda: tfflow.models.NICE(IMAGE, num_couplings=2, hidden_units=(8,),
                                             num_levels=17),
    "realnvp_vector": lambda: tfflow.models.RealNVP((2,), num_couplings=2, hidden_units=(8,)),
    "nice_vector": lambda: tfflow.models.NICE((2,), num_couplings=2, hidden_units=(8,)),
}
UNBOUNDED_DOMAIN = ("glow", "nice_image", "realnvp_vector", "nice_vector")
DISTANCES = (1e2, 1e4, 1e6)


def _data(model, n=32, seed=0):
    rng = np.random.default_rng(seed)
    if model.num_levels:
        return rng.uniform(0., 1., (n,) + model.event_shape).astype(np.float32)
    return rng.normal(size=(n,) + model.event_shape).astype(np.float32)


def _initialised(name):
    model = MODELS[name]()
    model.initialize(_data(model))
    return model


def _trained(name):
    model = _initialised(name)
    model.compile(learning_rate=1e-2, warmup_steps=0, run_eagerly=True)
    model.fit(tf.data.Dataset.from_tensor_slices(_data(model, seed=1)).batch(8), epochs=1,
              verbose=0)
    return model


def _perturbed(name):
    model = _initialised(name)
    rng = np.random.default_rng(2)
    for v in model.trainable_variables:
        v.assign(v.numpy() + 0.5 * rng.normal(size=v.shape).astype(np.float32))
    return model


STATES = {"initialised": _initialised, "trained": _trained, "perturbed": _perturbed}


@pytest.fixture(scope="module", params=[(m, s) for m in MODELS for s in STATES],
                ids=lambda p: f"{p[0]}-{p[1]}")
def model(request):
    name, state = request.param
    return name, state, STATES[state](name)


def test_log_prob_is_finite_far_from_the_data(model):
    name, _, model = model
    if name not in UNBOUNDED_DOMAIN:
        pytest.skip("the logit's domain is [0, 1]: checked at its edges below")
    rng = np.random.default_rng(3)
    centre = 0.5 if model.num_levels else 0.
    for distance in DISTANCES:
        direction = rng.normal(size=(8,) + model.event_shape).astype(np.float32)
        x = tf.constant(centre + distance * direction)
        if model.num_levels:  # outside [0, 1]: the public log_prob refuses it
            log_prob = model.distribution.log_prob(x)
        else:
            log_prob = model.log_prob(x)
        assert np.all(np.isfinite(log_prob)), (distance, log_prob.numpy())
        # Far out means unlikely: the density falls with the distance.
        assert np.max(log_prob) < np.min(model.log_prob(_data(model)[:8])) if not \
            model.num_levels else True


def _edges():
    checker = (np.indices(IMAGE[:2]).sum(0) % 2).astype(np.float32)[..., None]
    return np.stack([np.zeros(IMAGE), np.ones(IMAGE), checker, 1. - checker,
                     np.full(IMAGE, 1. + 9e-4), np.full(IMAGE, -9e-4)]).astype(np.float32)


def test_log_prob_is_finite_at_the_edges_of_the_data_range(model):
    name, state, model = model
    if not model.num_levels:
        pytest.skip("continuous data has no range")
    log_prob = model.log_prob(_edges())
    assert np.all(np.isfinite(log_prob)), log_prob.numpy()
    # And the round trip holds there too (not asserted for the randomly perturbed
    # RealNVP: its deep ResNet conditioners with N(0, 0.5) weights amplify float32
    # rounding to ~0.3 even inside [0, 1] (measured); perturbed Glow reached 1.3e-4).
    x = _edges()
    if name != "realnvp_image" or state != "perturbed":
        np.testing.assert_allclose(model.decode(model.encode(x)), x,
                                   atol=1e-3 if state == "perturbed" else 1e-4)


def _actnorms(model):
    return [l for _, l in model.flow.walk() if isinstance(l, (ActNormLayer, GlowStepsLayer))]


@pytest.mark.parametrize("data", ["constant_channel", "all_constant"])
def test_actnorm_initialises_finitely_on_zero_variance_channels(data):
    rng = np.random.default_rng(4)
    x = rng.uniform(0., 1., (32, 4, 4, 2)).astype(np.float32)
    if data == "constant_channel":
        x[..., 1] = 0.25  # e.g. an unused colour channel
    else:
        x[:] = 0.  # e.g. the constant border of every digit, everywhere
    model = tfflow.models.Glow((4, 4, 2), scales=1, steps_per_scale=2, hidden_channels=4,
                               num_levels=17)
    assert model.initialize(x)
    layers = _actnorms(model)
    assert layers
    for layer in layers:
        for weight in layer.weights:
            assert np.all(np.isfinite(weight.numpy())), weight.path
    # The first ActNorm sees the squeezed data (8 channels): the constant ones (4 of
    # them, or all) are centred and left unscaled (log-scale exactly 0). Glow's steps
    # stack their ActNorms' log-scales [K, C]: one row per ActNorm.
    log_scales = [row for l in layers
                  for row in np.reshape([w for w in l.trainable_weights
                                         if "scale" in w.path][0].numpy(), (-1, 8))]
    unscaled = max(int(np.sum(s == 0.)) for s in log_scales)
    assert unscaled == (4 if data == "constant_channel" else 8), log_scales
    assert np.all(np.isfinite(model.log_prob(x)))
    assert np.all(np.isfinite(model.sample(4, seed=1)))


def test_a_vector_model_refuses_a_constant_column_at_initialisation():
    # A point mass has no density: the standardisation names the column instead of
    # dividing by a zero standard deviation (tfflow.data.table.check_columns).
    model = MODELS["realnvp_vector"]()
    x = _data(model)
    x[..., -1] = 0.25
    with pytest.raises(ValueError, match=r"column 1: expected a column that varies, got the "
                                         r"constant 0.25"):
        model.initialize(x)


@pytest.mark.parametrize("name", ["realnvp_image", "nice_image"])
def test_other_models_initialise_finitely_on_constant_data(name):
    model = MODELS[name]()
    x = _data(model)
    x[..., -1] = 0.25  # a constant last channel / feature
    model.initialize(x)
    for weight in model.weights:
        assert np.all(np.isfinite(weight.numpy())), weight.path
    assert np.all(np.isfinite(model.log_prob(x)))
