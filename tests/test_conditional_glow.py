"""Conditional Glow p(x | c): a continuous context reaches every step, split prior and top prior.

Tiny models (8x8 digits, 2 levels x 2 steps, 8 hidden channels). One model is
fitted once (module fixture) and shared by the lifecycle tests: fit on
(x, c) pairs, per-context log_prob / sample / encode / decode, .keras
round trip, export served from a fresh process, clear errors. The math:
`check_bijector` on conditional `GlowSteps` and on the whole conditional flow
for fixed contexts, batch-split invariance, and the memory-saving gradient
(also with respect to the context) against plain autodiff in float64.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfflow
from tfflow import bijectors as fb
from tfflow import layers as fl
from tfflow.layers.base import FlowContext
from tfflow.testing import EAGER, check_bijector, in_function

from bijector_registry import glow_steps
from served import serve_conditional

CONTEXT_UNITS = 2


def _digit_pairs(rows=640, seed=0):
    """Dequantised digits in [0, 1) and a continuous context per image, in odd units.

    The context is (ink, vertical centre of the ink): real covariates of each
    image, so p(x | c) genuinely moves with c.
    """
    levels = tfflow.data.load_array("digits", "train")[:rows].astype(np.float64)
    rng = np.random.default_rng(seed)
    x = ((levels + rng.uniform(size=levels.shape)) / 17.).astype(np.float32)
    ink = levels.sum(axis=(1, 2, 3))
    rows_index = np.arange(8.)[None, :, None, None]
    centre = (levels * rows_index).sum(axis=(1, 2, 3)) / np.maximum(ink, 1.)
    c = np.stack([ink * 10., centre - 3.5], 1).astype(np.float32)
    return x, c


def _glow(memory_saving=False, dtype=None, **kwargs):
    return tfflow.models.Glow((8, 8, 1), scales=2, steps_per_scale=2, hidden_channels=8,
                              num_levels=17, context_shape=(CONTEXT_UNITS,),
                              memory_saving=memory_saving, dtype=dtype, **kwargs)


@pytest.fixture(scope="module")
def fitted():
    x, c = _digit_pairs()
    model = _glow()
    model.compile(learning_rate=3e-3, warmup_steps=1)
    model.initialize(x[:512], context=c[:512])
    before = float(-tf.reduce_mean(model.log_prob(x[512:], context=c[512:])))
    history = model.fit((x[:512], c[:512]), batch_size=64, epochs=2, verbose=0)
    return model, x, c, before, history


def test_fit_on_pairs_learns(fitted):
    model, x, c, before, history = fitted
    losses = history.history["loss"]
    assert len(losses) == 2 and np.all(np.isfinite(losses))
    after = float(-tf.reduce_mean(model.log_prob(x[512:], context=c[512:])))
    assert after < before - 1., (before, after)  # held-out NLL in nats per image
    # The context reaches every coupling network, every split prior and the top prior.
    paths = sorted(w.path for w in model.weights if w.path.endswith("context_kernel"))
    assert len(paths) == 4, paths
    assert any("split_prior" in p for p in paths) and any("top_prior" in p for p in paths)
    assert sum("networks" in p for p in paths) == 2


def test_log_prob_depends_on_the_context(fitted):
    model, x, c, _, _ = fitted
    base = model.log_prob(x[:8], context=c[:8]).numpy()
    for column in range(CONTEXT_UNITS):
        moved = c[:8].copy()
        moved[:, column] += 2. * c[:, column].std()
        assert np.abs(model.log_prob(x[:8], context=moved).numpy() - base).max() > 1e-2
    # Each example is scored with its own context row: permuting the rows changes it.
    shuffled = model.log_prob(x[:8], context=c[:8][::-1]).numpy()
    assert np.abs(shuffled - base).max() > 1e-2


def test_sample_gives_n_draws_per_context_row(fitted):
    model, _, c, _, _ = fitted
    samples = model.sample(5, context=c[:3], seed=4, temperature=0.7)
    assert samples.shape == (3, 5, 8, 8, 1)
    assert np.all(np.isfinite(samples))
    np.testing.assert_array_equal(samples, model.sample(5, context=c[:3], seed=4,
                                                        temperature=0.7))
    distribution = model.conditional_distribution(context=c[:3])
    assert distribution.batch_shape == [3]
    assert distribution.sample(2, seed=(1, 2)).shape == (2, 3, 8, 8, 1)


def test_encode_decode_round_trip_with_context(fitted):
    model, x, c, _, _ = fitted
    z = model.encode(x[:6], context=c[:6])
    np.testing.assert_allclose(model.decode(z, context=c[:6]), x[:6], atol=1e-4)
    # Another context gives another latent: the steps are conditional.
    assert np.abs(model.encode(x[:6], context=c[6:12]).numpy() - z.numpy()).max() > 1e-3


def test_log_det_does_not_depend_on_how_the_batch_is_split(fitted):
    model, x, c, _, _ = fitted
    whole = model.log_prob(x[:6], context=c[:6]).numpy()
    halves = np.concatenate([model.log_prob(x[:4], context=c[:4]),
                             model.log_prob(x[4:6], context=c[4:6])])
    np.testing.assert_allclose(whole, halves, rtol=1e-5, atol=1e-4)


def test_saves_to_keras_and_reloads_with_equal_log_prob(fitted, tmp_path):
    model, x, c, _, _ = fitted
    model.save(tmp_path / "glow.keras")
    loaded = keras.models.load_model(tmp_path / "glow.keras")
    assert loaded.context_shape == (CONTEXT_UNITS,) and loaded.is_initialized
    np.testing.assert_allclose(loaded.log_prob(x[:5], context=c[:5]),
                               model.log_prob(x[:5], context=c[:5]), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("call, message", [
    (lambda m, x, c: m.log_prob(x), r"this model is conditional; expected context=\[batch, 2\]"),
    (lambda m, x, c: m.log_prob(x, context=c[:, :1]), r"context of shape \[batch, 2\]"),
    (lambda m, x, c: m.log_prob(x, context=c[:2]), r"one row per example"),
    (lambda m, x, c: m.sample(2), r"this model is conditional"),
    (lambda m, x, c: m.encode(x), r"this model is conditional"),
    (lambda m, x, c: m.bijector_for(), r"GlowStepsLayer 'steps_0': this layer is conditional "
                                       r"\(2 context units\)"),
])
def test_missing_or_wrong_context_is_a_clear_error(fitted, call, message):
    model, x, c, _, _ = fitted
    with pytest.raises(ValueError, match=message):
        call(model, x[:5], c[:5])


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match=r"Glow: expected a context_shape of positive sizes"):
        tfflow.models.Glow((8, 8, 1), scales=1, steps_per_scale=1, hidden_channels=4,
                           context_shape=(0,))
    with pytest.raises(ValueError, match="expected a context_shape or num_classes, got both"):
        tfflow.models.Glow((8, 8, 1), scales=1, steps_per_scale=1, hidden_channels=4,
                           num_classes=3, context_shape=(2,))
    bijector, x = glow_steps(tf.float64)
    params = bijector.stacked_params
    kernel = tf.zeros([3, CONTEXT_UNITS, 5], tf.float64)
    with pytest.raises(ValueError, match=r"expected a context \[\.\.\., 2\].*got none"):
        fb.GlowSteps({**params, "context_kernel": kernel})
    with pytest.raises(ValueError, match=r"expected a context \[\.\.\., 2\].*got shape \[3, 5\]"):
        fb.GlowSteps({**params, "context_kernel": kernel}, context=tf.zeros([3, 5], tf.float64))
    with pytest.raises(ValueError, match="expected no context"):
        fb.GlowSteps(params, context=tf.zeros([3, 2], tf.float64))
    layer = fl.GlowStepsLayer(2, 4, context_units=CONTEXT_UNITS)
    layer.build((None, 4, 4, 4))
    with pytest.raises(ValueError, match=r"GlowStepsLayer .*needs FlowContext\(context="):
        layer.bijector(FlowContext())
    prior = fl.LearnedPriorLayer(context_units=CONTEXT_UNITS)
    prior.build((None, 2, 2, 4))
    with pytest.raises(ValueError, match=r"LearnedPriorLayer .*needs FlowContext\(context="):
        prior.bijector(FlowContext())


def test_unconditional_glow_has_no_context_weights():
    model = tfflow.models.Glow((8, 8, 1), scales=2, steps_per_scale=2, hidden_channels=8)
    assert not [w.path for w in model.weights if "context" in w.path]


# --- The math: conditional steps for a fixed context -----------------------------------------

def _conditional_steps(context, *, memory_saving=False, unroll=None, coupling="affine",
                       permutation="lu", seed=30):
    """The registry's K=3 random Glow steps (4 channels, 5 hidden) with a random context kernel."""
    plain, x = glow_steps(tf.float64, coupling=coupling, permutation=permutation)
    params = plain.stacked_params
    params["context_kernel"] = tf.constant(
        np.random.default_rng(seed).normal(size=(3, CONTEXT_UNITS, 5)) * 0.7, tf.float64)
    return fb.GlowSteps(params, coupling=coupling, permutation=permutation, num_bins=4,
                        memory_saving=memory_saving, unroll=unroll, context=context), x


_CONTEXT = tf.constant(np.random.default_rng(7).normal(size=(3, CONTEXT_UNITS)), tf.float64)


# (steps, runner): unrolled eagerly and under XLA, a tf.while_loop in tf.function.
CHECKS = {
    "affine_lu_eager": (lambda: _conditional_steps(_CONTEXT), EAGER),
    "affine_lu_loop_batch_none": (lambda: _conditional_steps(_CONTEXT),
                                  in_function(unknown_batch=True)),
    "affine_lu_xla": (lambda: _conditional_steps(_CONTEXT), in_function(jit_compile=True)),
    # check_bijector's autodiff Jacobian goes through the memory-saving gradient.
    "affine_conv_memory_saving_loop": (lambda: _conditional_steps(
        _CONTEXT, permutation="conv", memory_saving=True), in_function()),
    "spline_shuffle_eager": (lambda: _conditional_steps(
        _CONTEXT, coupling="spline", permutation="shuffle"), EAGER),
    # One context [C_c] for the whole batch.
    "additive_one_context_row_eager": (lambda: _conditional_steps(
        _CONTEXT[0], coupling="additive", permutation="reverse"), EAGER),
}


@pytest.mark.parametrize("name", list(CHECKS))
def test_conditional_steps_pass_check_bijector(name):
    make, runner = CHECKS[name]
    bijector, x = make()
    check_bijector(bijector, x, runner=runner)


def test_conditional_steps_are_conditional_and_split_invariant():
    bijector, x = _conditional_steps(_CONTEXT)
    other, _ = _conditional_steps(_CONTEXT + 1.)
    assert np.abs(bijector.inverse(x).numpy() - other.inverse(x).numpy()).max() > 1e-3
    whole = bijector.inverse_log_det_jacobian(x, event_ndims=3)
    halves = [_conditional_steps(_CONTEXT[k:k + n])[0].inverse_log_det_jacobian(
        x[k:k + n], event_ndims=3) for k, n in ((0, 1), (1, 2))]
    np.testing.assert_allclose(whole, np.concatenate(halves), rtol=1e-12, atol=1e-12)
    # The looped steps (graph mode) equal the unrolled ones.
    looped, _ = _conditional_steps(_CONTEXT, unroll=False)
    np.testing.assert_allclose(looped.inverse_log_det_jacobian(x, event_ndims=3), whole,
                               rtol=1e-12)


def _perturbed(model, x, c):
    """The model initialised on (x, c) with every trained weight moved off its initial value.

    (Zero-initialised output layers and context kernels would leave the
    couplings the identity and the priors independent of the context.)
    """
    model.initialize(x, context=c)
    rng = np.random.default_rng(0)
    for variable in model.trainable_variables:
        variable.assign(variable + 0.05 * rng.normal(size=variable.shape))
    return model


def test_whole_conditional_flow_passes_check_bijector():
    x, c = _digit_pairs(6)
    model = _perturbed(_glow(dtype="float64"), x.astype(np.float64), c.astype(np.float64))
    context = tf.constant(c[:3], tf.float64)
    bijector = model.bijector_for(context=tf.reshape(context, [-1, CONTEXT_UNITS]))
    z = tf.random.stateless_normal([3, 8, 8, 1], seed=(5, 6), dtype=tf.float64)
    check_bijector(bijector, z)


def _loss_and_gradients(model, x, c):
    c = tf.constant(c)
    with tf.GradientTape() as tape:
        tape.watch(c)
        # fit's loss from public parts: the training-mode bijector over the base.
        flow = tfp.distributions.TransformedDistribution(
            model.base_distribution(), model.bijector_for(training=True, context=c))
        loss = -tf.reduce_mean(flow.log_prob(x))
    return [loss] + tape.gradient(loss, model.trainable_variables + [c])


@pytest.mark.parametrize("traced", [False, True], ids=["eager_unrolled", "graph_loop"])
def test_memory_saving_gives_the_same_loss_and_gradients_with_a_context(traced):
    x, c = _digit_pairs(6)
    x, c = x.astype(np.float64), c.astype(np.float64)
    plain = _perturbed(_glow(dtype="float64"), x, c)
    saving = _glow(memory_saving=True, dtype="float64")
    saving.set_weights(plain.get_weights())
    assert all(layer.memory_saving for layer in (l for _, l in saving.flow.walk())
               if isinstance(layer, fl.GlowStepsLayer))
    run = (lambda m: tf.function(lambda: _loss_and_gradients(m, x, c), autograph=False)()) \
        if traced else (lambda m: _loss_and_gradients(m, x, c))
    want, got = run(plain), run(saving)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-10)
    names = [v.path for v in saving.trainable_variables] + ["context"]
    assert len(got) == len(want) == len(names) + 1
    for name, g, w in zip(names, got[1:], want[1:]):
        assert g is not None and w is not None, name
        g, w = tf.convert_to_tensor(g).numpy(), tf.convert_to_tensor(w).numpy()
        scale = max(float(np.abs(w).max()), 1e-12)
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-6 * scale, err_msg=name)
    # The context kernels of the steps do receive a gradient.
    for name, w in zip(names, want[1:]):
        if "networks/context_kernel" in name or name == "context":
            assert np.abs(tf.convert_to_tensor(w).numpy()).max() > 0., name


# --- Export: served from a fresh process without tfflow or TFP -------------------------------



def test_export_serves_log_prob_and_samples_per_context(fitted, tmp_path):
    model, x, c, _, _ = fitted
    path = tfflow.export.export_saved_model(model, tmp_path / "export")
    out = serve_conditional(path, x[:5], c[:5], tmp_path, n=2, temperature=0.7)
    assert out["inputs"] == ["context", "x"]
    np.testing.assert_allclose(out["log_prob"], model.log_prob(x[:5], context=c[:5]),
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out["samples"],
                               model.sample(2, context=c[:2], seed=(1, 2), temperature=0.7),
                               atol=1e-4)
