"""Conditional flows p(x | c): fitting on pairs, per-context sampling, exactness, errors, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfflow
from tfflow import bijectors as fb
from tfflow import layers as fl

from served import serve_conditional

MODELS = ["maf", "iaf", "nsf"]


def _pairs(rows=1200, seed=0):
    """x | c: a mean and a spread that move with c (c in odd units)."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(rows, 2)) * [1., 50.] + [0., 100.]
    c0, c1 = c[:, 0], (c[:, 1] - 100.) / 50.
    x = np.stack([2. * c0 + 0.3 * rng.normal(size=rows),
                  np.sin(c0) + c1 + 0.2 * (1. + c0 ** 2) * rng.normal(size=rows)], 1)
    return x.astype(np.float32), c.astype(np.float32)


def _small(name, **kwargs):
    return tfflow.models.build(name, (2,), transforms=2, hidden_units=(16, 16),
                               context_shape=(2,), **kwargs)


def _linear_gaussian_log_prob(x, c, x_fit, c_fit):
    """log N(x; a + c B, S) with (a, B, S) the least-squares fit on (x_fit, c_fit)."""
    design = np.concatenate([np.ones((len(c_fit), 1)), c_fit], 1).astype(np.float64)
    coef, *_ = np.linalg.lstsq(design, x_fit.astype(np.float64), rcond=None)
    residual = x_fit - design @ coef
    cov = residual.T @ residual / len(x_fit)
    diff = x - np.concatenate([np.ones((len(c), 1)), c], 1) @ coef
    maha = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)
    return -0.5 * (maha + np.linalg.slogdet(cov)[1] + x.shape[1] * np.log(2 * np.pi))


@pytest.mark.parametrize("name", MODELS)
def test_untrained_conditional_model_is_the_linear_gaussian_regression(name):
    x, c = _pairs()
    model = _small(name)
    model.initialize(x, context=c)
    np.testing.assert_allclose(model.log_prob(x[:50], context=c[:50]),
                               _linear_gaussian_log_prob(x[:50], c[:50], x, c),
                               rtol=1e-4, atol=2e-3)


@pytest.mark.parametrize("how", ["pair", "x_and_y", "dataset"])
def test_fit_takes_pairs_and_learns_beyond_the_linear_start(how):
    x, c = _pairs(2000)
    model = _small("maf")
    model.compile(learning_rate=3e-3, warmup_steps=10)
    data = {"pair": lambda: ((x[:1600], c[:1600]),), "x_and_y": lambda: (x[:1600], c[:1600]),
            "dataset": lambda: (tf.data.Dataset.from_tensor_slices(
                (x[:1600], c[:1600])).shuffle(1600, seed=1).batch(128),)}[how]()
    kwargs = {} if how == "dataset" else {"batch_size": 128}
    model.fit(*data, epochs=12, verbose=0, **kwargs)
    linear = -_linear_gaussian_log_prob(x[1600:], c[1600:], x[:1600], c[:1600]).mean()
    flow = -model.log_prob(x[1600:], context=c[1600:]).numpy().mean()
    assert flow < linear - 0.1, (flow, linear)


def test_sample_gives_n_draws_per_context_row_that_follow_the_context():
    x, c = _pairs()
    model = _small("nsf")
    model.initialize(x, context=c)
    contexts = np.array([[-1., 100.], [1., 100.]], np.float32)
    samples = model.sample(2000, context=contexts, seed=3).numpy()
    assert samples.shape == (2, 2000, 2)
    np.testing.assert_allclose(samples[:, :, 0].mean(1), [-2., 2.], atol=0.1)
    # Deterministic per seed; the TFP view agrees on shapes.
    np.testing.assert_array_equal(model.sample(3, context=contexts, seed=4),
                                  model.sample(3, context=contexts, seed=4))
    distribution = model.conditional_distribution(context=contexts)
    assert distribution.batch_shape == [2]
    assert distribution.sample(5, seed=(1, 2)).shape == (5, 2, 2)
    np.testing.assert_allclose(distribution.log_prob(x[:2]),
                               model.log_prob(x[:2], context=contexts), rtol=1e-5)


@pytest.mark.parametrize("cls", [fb.MaskedAutoregressive, fb.InverseAutoregressive])
def test_conditional_bijector_is_exact_for_a_fixed_context_and_split_invariant(cls):
    made = fl.MADE(3, 2, hidden_units=(8, 8), context_units=2, dtype="float64")
    made.build((None, 3))
    rng = np.random.default_rng(5)
    for weight in made.weights:
        weight.assign(0.5 * rng.normal(size=weight.shape))
    x = tf.constant(rng.normal(size=(6, 3)), tf.float64)
    context = tf.constant(rng.normal(size=(6, 2)), tf.float64)
    bijector = cls(lambda u: made(u, context), fb.AffineTransform(), dtype=tf.float64)
    tfflow.testing.check_bijector(bijector, x)
    whole = bijector.inverse_log_det_jacobian(x, event_ndims=1)
    halves = [cls(lambda u, k=k: made(u, context[k:k + 3]), fb.AffineTransform(),
                  dtype=tf.float64).inverse_log_det_jacobian(x[k:k + 3], event_ndims=1)
              for k in (0, 3)]
    np.testing.assert_allclose(whole, np.concatenate(halves), rtol=1e-12)


def test_conditional_model_reloads_with_its_context_standardisation(tmp_path):
    x, c = _pairs(600)
    model = _small("maf")
    model.compile(warmup_steps=1)
    model.fit(x, c, batch_size=200, epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert loaded.context_shape == (2,) and loaded.is_initialized
    np.testing.assert_allclose(loaded.log_prob(x[:10], context=c[:10]),
                               model.log_prob(x[:10], context=c[:10]), rtol=1e-6)


@pytest.mark.parametrize("call, message", [
    (lambda m, x, c: m.log_prob(x), r"this model is conditional; expected context=\[batch, 2\]"),
    (lambda m, x, c: m.log_prob(x, context=c[:4]), r"one row per example \(5 rows\)"),
    (lambda m, x, c: m.log_prob(x, context=c[:, :1]), r"context of shape \[batch, 2\]"),
    (lambda m, x, c: m.log_prob(x, context=np.full_like(c, np.nan)), r"finite context"),
    (lambda m, x, c: m.log_prob(x, context=c.astype(np.int32)), r"context"),
    (lambda m, x, c: m.sample(2), r"this model is conditional"),
    (lambda m, x, c: m.encode(x, context=c[:3]), r"one row per example"),
    (lambda m, x, c: m.distribution, r"conditional_distribution\(context=c\)"),
    (lambda m, x, c: m.fit(x, epochs=1, verbose=0), r"expected \(x, context\) pairs"),
])
def test_bad_contexts_are_clear_errors(call, message):
    x, c = _pairs(5)
    model = _small("maf")
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match=message):
        call(model, x, c)


def test_an_unconditional_model_refuses_a_context():
    x, c = _pairs(5)
    model = tfflow.models.MAF((2,))
    with pytest.raises(ValueError, match=r"unconditional \(no context_shape\); got a context"):
        model.log_prob(x, context=c)
    with pytest.raises(ValueError, match=r"expected a context_shape or num_classes, got both"):
        tfflow.FlowModel(fl.ChainLayer([fl.ActNormLayer(event_ndims=1)]), (2,), num_classes=3,
                         context_shape=(2,))




def test_export_takes_the_context_as_a_named_input(tmp_path):
    x, c = _pairs(400)
    model = _small("nsf")
    model.compile(warmup_steps=1)
    model.fit(x, c, batch_size=100, epochs=1, verbose=0)
    path = tfflow.export.export_saved_model(model, tmp_path / "export")
    out = serve_conditional(path, x[:6], c[:6], tmp_path, n=3, temperature=1.0)
    assert out["inputs"] == ["context", "x"]
    np.testing.assert_allclose(out["log_prob"], model.log_prob(x[:6], context=c[:6]),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["samples"], model.sample(3, context=c[:2], seed=(1, 2)),
                               rtol=1e-4, atol=1e-4)
    assert "one row per example" in out["mismatch"]
