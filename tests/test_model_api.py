"""Keras and TFP conventions of FlowModel: `export`, sample shapes, leading batch dimensions."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import tfflow

IMAGE = (4, 4, 1)


@pytest.fixture(scope="module")
def image_model():
    model = tfflow.models.Glow(IMAGE, scales=1, steps_per_scale=1, hidden_channels=8,
                               num_levels=17)
    model.initialize(tf.random.stateless_uniform([8, *IMAGE], seed=(1, 2)))
    for v in model.trainable_variables:  # away from the identity
        v.assign(v + 0.01 * tf.random.stateless_normal(v.shape, seed=(3, 4), dtype=v.dtype))
    return model


@pytest.fixture(scope="module")
def class_model():
    model = tfflow.models.Glow(IMAGE, scales=1, steps_per_scale=1, hidden_channels=8,
                               num_levels=17, num_classes=3)
    model.initialize(tf.random.stateless_uniform([6, *IMAGE], seed=(1, 2)), np.arange(6) % 3)
    return model


@pytest.fixture(scope="module")
def conditional_model():
    rng = np.random.default_rng(0)
    model = tfflow.models.MAF((2,), transforms=2, hidden_units=(8,), context_shape=(3,))
    model.initialize(rng.normal(size=(64, 2)).astype(np.float32),
                     context=rng.normal(size=(64, 3)).astype(np.float32))
    return model


def _x(n=6, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, *IMAGE)).astype(np.float32)


# --- model.export ----------------------------------------------------------------------------

_LOADER = r"""
import json, sys
sys.modules["tensorflow_probability"] = None
sys.modules["tfflow"] = None
import numpy as np
import tensorflow as tf
path, inputs = sys.argv[1:3]
loaded = tf.saved_model.load(path)
x = np.load(inputs)
x[1, 0, 0, 0] = np.nan
answer = loaded.signatures["log_prob"](x=tf.constant(x))
print(json.dumps({"signatures": sorted(loaded.signatures),
                  "log_prob": [None if np.isnan(v) else float(v) for v in answer["log_prob"].numpy()],
                  "valid": answer["valid"].numpy().tolist()}))
"""


def test_keras_export_writes_tfflow_signatures_that_load_elsewhere(image_model, tmp_path):
    target = tmp_path / "exported"
    assert image_model.export(target, max_samples=16) == target
    assert (target / "saved_model.pb").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["exported"]  # no staging folder left
    x = _x()
    np.save(tmp_path / "x.npy", x)
    result = subprocess.run([sys.executable, "-c", _LOADER, str(target), str(tmp_path / "x.npy")],
                            capture_output=True, text=True, timeout=300, check=True)
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["signatures"] == ["decode", "encode", "log_prob", "sample", "serving_default"]
    assert loaded["valid"] == [True, False, True, True, True, True]  # the NaN row, per row
    expected = image_model.log_prob(x).numpy()
    served = np.array([v for v in loaded["log_prob"] if v is not None])
    np.testing.assert_allclose(served, np.delete(expected, 1), rtol=1e-5)
    # max_samples reached the export: a larger sample request is refused.
    sample = tf.saved_model.load(str(target)).signatures["sample"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="n <= 16"):
        sample(n=tf.constant(17), seed=tf.constant([1, 2]), temperature=tf.constant(1.))


def test_keras_export_refuses_other_formats_and_an_existing_path(image_model, tmp_path):
    with pytest.raises(ValueError, match=r"FlowModel.export: expected format='tf_saved_model', "
                                         r"got 'onnx'.*tfflow.export.export_saved_model"):
        image_model.export(tmp_path / "m.onnx", format="onnx")
    with pytest.raises(ValueError, match="input_signature.*fixed by the model"):
        image_model.export(tmp_path / "a", input_signature=[tf.TensorSpec([None, 4])])
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("keep me")
    with pytest.raises(ValueError, match="exists; remove it or choose another"):
        image_model.export(tmp_path / "taken")
    assert (tmp_path / "taken" / "file").read_text() == "keep me"
    (tmp_path / "empty").mkdir()  # an empty folder is fine
    assert (image_model.export(tmp_path / "empty") / "saved_model.pb").exists()


# --- sample shapes ---------------------------------------------------------------------------

def test_sample_takes_tfp_sample_shapes(image_model):
    assert image_model.sample(5, seed=1).shape == (5, *IMAGE)
    assert image_model.sample((2, 3), seed=1).shape == (2, 3, *IMAGE)
    assert image_model.sample([2, 3], seed=1).shape == (2, 3, *IMAGE)
    assert image_model.sample(tf.TensorShape([2, 3]), seed=1).shape == (2, 3, *IMAGE)
    assert image_model.sample((), seed=1).shape == IMAGE
    assert image_model.sample((4,), seed=1).shape == (4, *IMAGE)
    assert image_model.distribution.sample((2, 3), seed=(1, 2)).shape == (2, 3, *IMAGE)
    # The shape only arranges the same draw: sample((2, 3)) is sample(6) reshaped.
    np.testing.assert_array_equal(image_model.sample((2, 3), seed=7),
                                  np.reshape(image_model.sample(6, seed=7), (2, 3, *IMAGE)))


@pytest.mark.parametrize("shape, fragment", [
    ((2, 0), "got (2, 0)"), ((2.5, 3), "got (2.5, 3)"), ([[1, 2]], "got [[1, 2]]"),
    (0, "expected n an integer >= 1, got 0"), ((-1,), "got (-1,)")])
def test_sample_rejects_bad_sample_shapes(image_model, shape, fragment):
    with pytest.raises(ValueError, match="FlowModel.sample: expected n an integer >= 1") as info:
        image_model.sample(shape)
    assert fragment in str(info.value)


def test_class_conditional_sample_takes_labels_in_the_sample_shape(class_model):
    labels = np.array([[0, 1, 2], [2, 1, 0]], np.int32)
    x = class_model.sample((2, 3), labels=labels, seed=3)
    assert x.shape == (2, 3, *IMAGE)
    flat = class_model.sample(6, labels=labels.reshape(-1), seed=3)
    np.testing.assert_array_equal(x, np.reshape(flat, x.shape))
    assert class_model.sample((2, 3), labels=1, seed=3).shape == (2, 3, *IMAGE)


def test_conditional_sample_puts_context_rows_first(conditional_model):
    context = np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32)
    assert conditional_model.sample(5, context=context, seed=1).shape == (4, 5, 2)  # unchanged
    x = conditional_model.sample((2, 5), context=context, seed=1)
    assert x.shape == (4, 2, 5, 2)
    np.testing.assert_array_equal(x, np.reshape(conditional_model.sample(10, context=context,
                                                                         seed=1), (4, 2, 5, 2)))
    # TFP's own convention, sample shape first, is the distribution's.
    tfp_style = conditional_model.conditional_distribution(context=context).sample((2, 5))
    assert tfp_style.shape == (2, 5, 4, 2)


# --- leading batch dimensions ----------------------------------------------------------------

@pytest.mark.parametrize("batch", [(2, 3), (1, 6), (3, 1, 2)])
def test_scoring_methods_take_leading_batch_dimensions(image_model, batch):
    x = _x()
    shaped = x.reshape(*batch, *IMAGE)
    np.testing.assert_array_equal(image_model.log_prob(shaped),
                                  np.reshape(image_model.log_prob(x), batch))
    np.testing.assert_array_equal(image_model.bits_per_dim(shaped),
                                  np.reshape(image_model.bits_per_dim(x), batch))
    z = image_model.encode(x)
    np.testing.assert_array_equal(image_model.encode(shaped), np.reshape(z, (*batch, *IMAGE)))
    np.testing.assert_array_equal(image_model.decode(np.reshape(z, (*batch, *IMAGE))),
                                  np.reshape(image_model.decode(z), (*batch, *IMAGE)))


def test_labels_and_context_follow_the_leading_dimensions(class_model, conditional_model):
    x, labels = _x(), np.arange(6, dtype=np.int32) % 3
    np.testing.assert_array_equal(class_model.log_prob(x.reshape(2, 3, *IMAGE),
                                                       labels.reshape(2, 3)),
                                  class_model.log_prob(x, labels).numpy().reshape(2, 3))
    np.testing.assert_array_equal(class_model.log_prob(x.reshape(2, 3, *IMAGE), 2),
                                  class_model.log_prob(x, 2).numpy().reshape(2, 3))
    rng = np.random.default_rng(2)
    v, c = rng.normal(size=(8, 2)).astype(np.float32), rng.normal(size=(8, 3)).astype(np.float32)
    for method in ("log_prob", "bits_per_dim", "encode"):
        fn = getattr(conditional_model, method)
        np.testing.assert_array_equal(fn(v.reshape(2, 4, 2), context=c.reshape(2, 4, 3)),
                                      np.reshape(fn(v, context=c), (2, 4) + fn(v, context=c)
                                                 .shape[1:]))
    # Flat labels (and contexts) in the flattened batch's order are taken too.
    np.testing.assert_array_equal(class_model.log_prob(x.reshape(2, 3, *IMAGE), labels),
                                  class_model.log_prob(x, labels).numpy().reshape(2, 3))
    with pytest.raises(ValueError, match="expected labels of shape"):
        class_model.log_prob(x.reshape(2, 3, *IMAGE), labels.reshape(3, 2, 1))
    with pytest.raises(ValueError, match="one row per example"):
        conditional_model.log_prob(v.reshape(2, 4, 2), context=c[:4])


def test_leading_dimensions_keep_the_input_checks(image_model):
    with pytest.raises(ValueError, match=r"at least one example, got x of shape \[2, 0, 4, 4, 1\]"):
        image_model.log_prob(np.zeros([2, 0, *IMAGE], np.float32))
    with pytest.raises(ValueError, match=r"expected x of shape \[batch, 4, 4, 1\] \(or more "
                                         r"leading batch dimensions"):
        image_model.log_prob(np.zeros(IMAGE, np.float32))  # one example needs a batch axis
    bad = _x().reshape(2, 3, *IMAGE)
    bad[1, 2, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"index \[1, 2, 0, 0, 0\]"):  # the caller's index
        image_model.encode(bad)
    # Keras' entry points keep one batch axis.
    with pytest.raises(ValueError, match=r"FlowModel.predict: .*\[batch, 4, 4, 1\], got"):
        image_model.predict(_x().reshape(2, 3, *IMAGE), verbose=0)


def test_leading_dimensions_inside_a_tf_function(image_model):
    log_prob = tf.function(image_model.log_prob)
    x = _x()
    np.testing.assert_allclose(log_prob(tf.constant(x.reshape(3, 2, *IMAGE))),
                               image_model.log_prob(x).numpy().reshape(3, 2), rtol=1e-6)


# --- predict and the lazy submodules ----------------------------------------------------------

def test_predict_returns_log_prob_in_nats_per_example(image_model):
    x = _x()
    np.testing.assert_allclose(image_model.predict(x, verbose=0), image_model.log_prob(x),
                               rtol=1e-5)


def test_import_tfflow_makes_every_submodule_available():
    code = ("import tfflow; print(tfflow.training.TrainConfig.__name__, "
            "tfflow.export.export_saved_model.__name__, tfflow.data.load.__name__, "
            "tfflow.images.write_image_grid.__name__, tfflow.plots.available.__name__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["TrainConfig", "export_saved_model", "load",
                                     "write_image_grid", "available"]
