"""MAF, IAF, NSF: the MADE's masks, the Gaussian start, the data's units, save/load, export."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfflow
from tfflow import bijectors as fb
from tfflow import layers as fl

MODELS = ["maf", "iaf", "nsf"]


def _table(rows=600, seed=0):
    """A correlated 4-column table in odd units: offsets of 1e3, scales from 1e-3 to 1e2."""
    rng = np.random.default_rng(seed)
    mixing = np.array([[1., .5, 0., 0.], [0., 1., .3, 0.], [0., 0., 2., 0.], [.2, 0., 0., .1]])
    x = rng.normal(size=(rows, 4)) @ mixing
    x[:, 0] = np.abs(x[:, 0]) ** 1.5  # skewed: not Gaussian
    return (x * [1e-3, 1., 1e2, 10.] + [1e3, -5., 0., 3.]).astype(np.float32)


def _gaussian_log_prob(train, x):
    train = train.astype(np.float64)
    mean, cov = train.mean(0), np.cov(train.T, bias=True)
    diff = x.astype(np.float64) - mean
    _, logdet = np.linalg.slogdet(cov)
    maha = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)
    return -0.5 * (maha + logdet + len(mean) * np.log(2 * np.pi))


def _small(name, dims=4, **kwargs):
    return tfflow.models.build(name, (dims,), transforms=2, hidden_units=(16, 16), **kwargs)


@pytest.mark.parametrize("dims", [1, 3, 7])
def test_made_output_depends_only_on_earlier_inputs(dims):
    made = fl.MADE(dims, 3, hidden_units=(12, 12))
    made.build((None, dims))
    for weight in made.weights:  # the output layer starts at zero: make every path live
        weight.assign(np.random.default_rng(0).normal(size=weight.shape))
    x = tf.random.stateless_normal([2, dims], seed=(1, 2))
    with tf.GradientTape() as tape:
        tape.watch(x)
        h = tf.reshape(made(x), [2, dims, 3])
    jacobian = tape.batch_jacobian(h, x).numpy()       # [batch, out entry, param, in entry]
    for out in range(dims):
        assert np.all(jacobian[:, out, :, out:] == 0.), f"entry {out} sees itself or later"
        if out:
            assert np.any(jacobian[:, out, :, :out] != 0.), f"entry {out} sees nothing"


def test_made_rejects_too_narrow_hidden_layers_and_wrong_inputs():
    with pytest.raises(ValueError, match=r"MADE: every hidden layer needs at least dims - 1"):
        fl.MADE(10, 2, hidden_units=(4,))
    made = fl.MADE(3, 2)
    with pytest.raises(ValueError, match=r"MADE: expected inputs with 3 entries"):
        made.build((None, 4))


@pytest.mark.parametrize("name", MODELS)
def test_untrained_model_is_the_gaussian_fit_in_the_data_units(name):
    x = _table()
    model = _small(name)
    model.initialize(x)
    np.testing.assert_allclose(model.log_prob(x[:20]), _gaussian_log_prob(x, x[:20]),
                               rtol=1e-4, atol=2e-3)
    # encode/decode and sample speak the data's units.
    np.testing.assert_allclose(model.decode(model.encode(x[:20])), x[:20], rtol=1e-5, atol=2e-3)
    samples = model.sample(4000, seed=3).numpy()
    np.testing.assert_allclose(samples.mean(0), x.mean(0), rtol=0.05,
                               atol=0.1 * x.std(0).max())
    np.testing.assert_allclose(samples.std(0), x.std(0), rtol=0.1)


def test_maf_fit_beats_the_gaussian_fit_on_a_non_gaussian_table():
    x = _table(1500)
    train, test = x[:1200], x[1200:]
    model = _small("maf")
    model.compile(learning_rate=3e-3, warmup_steps=10)
    model.fit(train, batch_size=128, epochs=30, verbose=0)
    gaussian = -_gaussian_log_prob(train, test).mean()
    flow = -model.log_prob(test).numpy().mean()
    assert flow < gaussian - 0.1, (flow, gaussian)


@pytest.mark.parametrize("cls", [fb.MaskedAutoregressive, fb.InverseAutoregressive])
@pytest.mark.parametrize("traced", [False, True], ids=["eager", "function"])
def test_many_entries_invert_in_a_loop(cls, traced):
    dims = fb.autoregressive.UNROLL_LIMIT + 9   # past the unrolled passes: the while_loop
    made = fl.MADE(dims, 2, hidden_units=(dims, dims), dtype="float64")
    made.build((None, dims))
    for weight in made.weights:
        weight.assign(0.3 * np.random.default_rng(1).normal(size=weight.shape))
    bijector = cls(made, fb.AffineTransform(), dtype=tf.float64)
    z = tf.random.stateless_normal([5, dims], seed=(4, 5), dtype=tf.float64)

    def round_trip(z):
        x = bijector.forward(z)
        return (bijector.inverse(tf.identity(x)), bijector.forward_log_det_jacobian(z, 1),
                bijector.inverse_log_det_jacobian(tf.identity(x), 1))
    run = tf.function(round_trip, input_signature=[tf.TensorSpec([None, dims], tf.float64)]) \
        if traced else round_trip
    back, fldj, ildj = run(z)
    np.testing.assert_allclose(back, z, atol=1e-9)
    np.testing.assert_allclose(fldj, -ildj, atol=1e-9)


@pytest.mark.parametrize("name", MODELS)
def test_trained_model_reloads_from_keras_file(tmp_path, name):
    x = _table(300)
    model = _small(name)
    model.compile(warmup_steps=1)
    model.fit(x, batch_size=100, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.is_initialized
    np.testing.assert_allclose(loaded.log_prob(x[:10]), model.log_prob(x[:10]), rtol=1e-6)
    np.testing.assert_allclose(loaded.sample(3, seed=2), model.sample(3, seed=2), rtol=1e-5)


_LOADER = r"""
import json, sys
sys.modules["tensorflow_probability"] = None
sys.modules["tfflow"] = None
import numpy as np
import tensorflow as tf
path, rows_file, out_file = sys.argv[1:4]
sig = tf.saved_model.load(path).signatures
rows = tf.constant(np.load(rows_file))
out = {"log_prob": sig["log_prob"](x=rows)["log_prob"].numpy().tolist(),
       "samples": sig["sample"](n=tf.constant(4), seed=tf.constant([1, 2]),
                                temperature=tf.constant(1.0))["samples"].numpy().tolist()}
json.dump(out, open(out_file, "w"))
"""


def test_exported_maf_scores_raw_rows_like_the_model(tmp_path):
    x = _table(300)
    model = _small("maf")
    model.compile(warmup_steps=1)
    model.fit(x, batch_size=100, epochs=1, verbose=0)
    path = tfflow.export.export_saved_model(model, tmp_path / "maf")
    np.save(tmp_path / "rows.npy", x[:16])
    subprocess.run([sys.executable, "-c", _LOADER, str(path), str(tmp_path / "rows.npy"),
                    str(tmp_path / "out.json")], check=True, timeout=300)
    out = json.loads((tmp_path / "out.json").read_text())
    np.testing.assert_allclose(out["log_prob"], model.log_prob(x[:16]), rtol=1e-5, atol=1e-5)
    samples = np.array(out["samples"])
    assert samples.shape == (4, 4) and np.all(np.isfinite(samples))
    assert abs(samples[:, 0].mean() - 1e3) < 1.  # the data's units, not standardised ones


@pytest.mark.parametrize("name", MODELS)
def test_vector_models_reject_images_and_bad_arguments(name):
    with pytest.raises(ValueError, match=r"expected a vector event_shape \(D,\)"):
        tfflow.models.build(name, (8, 8, 1))
    with pytest.raises(ValueError, match=r"mixing must be one of"):
        tfflow.models.build(name, (3,), mixing="shuffle")
    with pytest.raises(ValueError, match=r"expected transforms >= 1"):
        tfflow.models.build(name, (3,), transforms=0)


def test_triangular_affine_parameters_survive_a_constant_column():
    x = np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)
    x[:, 1] = 7.
    bijector = fb.TriangularAffine(**fb.triangular_affine_parameters(x))
    z = bijector.inverse(x)
    assert np.all(np.isfinite(z)) and np.all(np.isfinite(bijector.inverse_log_det_jacobian(x, 1)))
