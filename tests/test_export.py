"""SavedModel export: loads without tfflow or TFP, matches the in-process model, serves via CLI."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import tfflow
from tfflow.models import _checks

# Runs in a fresh interpreter in which tfflow and tensorflow_probability cannot be imported.
_LOADER = r"""
import json, sys
sys.modules["tensorflow_probability"] = None
sys.modules["tfflow"] = None
import numpy as np
import tensorflow as tf
path, inputs_file, out_file = sys.argv[1:4]
loaded = tf.saved_model.load(path)
inputs = dict(np.load(inputs_file))
results = {"signatures": sorted(loaded.signatures)}
label = {"label": tf.constant(inputs["label"])} if "label" in inputs else {}
sig = loaded.signatures
results["log_prob"] = sig["log_prob"](x=tf.constant(inputs["x"]), **label)["log_prob"].numpy().tolist()
results["serving_default"] = sig["serving_default"](x=tf.constant(inputs["x"]), **label)["bits_per_dim"].numpy().tolist()
results["z"] = sig["encode"](x=tf.constant(inputs["x"]), **label)["z"].numpy().tolist()
results["decoded"] = sig["decode"](z=tf.constant(inputs["z"]), **label)["x"].numpy().tolist()
n_label = {"label": tf.constant(inputs["label"][:3])} if label else {}
draw = lambda: sig["sample"](n=tf.constant(3), seed=tf.constant([7, 11]),
                             temperature=tf.constant(0.7), **n_label)["samples"].numpy()
results["samples"] = draw().tolist()
results["deterministic"] = bool(np.array_equal(draw(), draw()))
two = {"label": tf.constant([0, 1])} if label else {}
for case, bad in {"bad_shape": tf.zeros([2, 4, 4, 2]), "bad_rank": tf.zeros([2, 8, 8]),
                  "bad_dtype": tf.zeros([2, 8, 8, 1], tf.float64)}.items():
    try:
        sig["log_prob"](x=bad, **two)
        results[case] = "no error"
    except Exception as e:  # the declared signature must reject it
        results[case] = type(e).__name__ + ": " + str(e)[:300]
json.dump(results, open(out_file, "w"))
"""


def _model(num_classes=None):
    model = tfflow.models.Glow((8, 8, 1), levels=2, steps_per_level=1, hidden_channels=8,
                               num_levels=17, num_classes=num_classes)
    x = tf.random.stateless_uniform([6, 8, 8, 1], seed=(1, 2))
    model.initialize(x, None if num_classes is None else tf.constant([0, 1, 2, 0, 1, 2]))
    # Move every weight away from its initial value so nothing is trivially the identity.
    for v in model.trainable_variables:
        v.assign(v + 0.01 * tf.random.stateless_normal(v.shape, seed=(3, 4), dtype=v.dtype))
    return model, x


@pytest.mark.parametrize("num_classes", [None, 3], ids=["unconditional", "class_conditional"])
def test_export_loads_in_fresh_process_without_tfflow_or_tfp(tmp_path, num_classes):
    model, x = _model(num_classes)
    labels = None if num_classes is None else tf.constant([0, 1, 2, 0, 1, 2])
    path = tfflow.export.export_saved_model(model, tmp_path / "glow")
    assert path == tmp_path / "glow" / "1"
    z = model.encode(x, labels)
    inputs = {"x": x.numpy(), "z": z.numpy()}
    if labels is not None:
        inputs["label"] = labels.numpy()
    np.savez(tmp_path / "inputs.npz", **inputs)
    subprocess.run([sys.executable, "-c", _LOADER, str(path), str(tmp_path / "inputs.npz"),
                    str(tmp_path / "out.json")], check=True, timeout=300)
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["signatures"] == sorted(tfflow.export.SIGNATURES)
    np.testing.assert_allclose(out["log_prob"], model.log_prob(x, labels), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out["serving_default"], model.bits_per_dim(x, labels), rtol=1e-5)
    np.testing.assert_allclose(out["z"], z, atol=1e-5)
    np.testing.assert_allclose(out["decoded"], model.decode(z, labels), atol=1e-5)
    sample_labels = None if labels is None else labels[:3]
    expected = model.bijector_for(sample_labels).forward(
        0.7 * tf.random.stateless_normal([3, 8, 8, 1], seed=[7, 11]))
    np.testing.assert_allclose(out["samples"], expected, atol=1e-5)
    assert out["deterministic"]
    for case in ("bad_shape", "bad_rank", "bad_dtype"):
        # Rejected by the SavedModel itself, never broadcast.
        assert out[case].startswith("InvalidArgumentError"), out[case]
    for case in ("bad_shape", "bad_rank"):
        assert "expected shape [?,8,8,1]" in out[case], out[case]


def test_saved_model_cli_show_and_run(tmp_path):
    model, x = _model()
    path = tfflow.export.export_saved_model(model, tmp_path / "m")
    cli = pathlib.Path(sys.executable).parent / "saved_model_cli"
    show = subprocess.run([str(cli), "show", "--dir", str(path), "--all"], check=True,
                          capture_output=True, text=True, timeout=300).stdout
    for name in tfflow.export.SIGNATURES:
        assert f"signature_def['{name}']" in show
    np.save(tmp_path / "x.npy", x.numpy())
    run = subprocess.run([str(cli), "run", "--dir", str(path), "--tag_set", "serve",
                          "--signature_def", "log_prob", "--inputs", f"x={tmp_path / 'x.npy'}"],
                         check=True, capture_output=True, text=True, timeout=300).stdout
    assert "log_prob" in run and "bits_per_dim" in run
    sample = subprocess.run([str(cli), "run", "--dir", str(path), "--tag_set", "serve",
                             "--signature_def", "sample", "--input_exprs",
                             "n=2;seed=[1,2];temperature=0.7"],
                            check=True, capture_output=True, text=True, timeout=300).stdout
    assert "samples" in sample


def test_versions_increase_and_existing_version_is_refused(tmp_path):
    model, _ = _model()
    assert tfflow.export.export_saved_model(model, tmp_path).name == "1"
    assert tfflow.export.export_saved_model(model, tmp_path).name == "2"
    with pytest.raises(ValueError, match="already exists"):
        tfflow.export.export_saved_model(model, tmp_path, version=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]


# --- Bad input to the exported signatures: InvalidArgumentError naming the signature ------------

@pytest.fixture(scope="module")
def loaded_conditional(tmp_path_factory):
    """A tiny class-conditional Glow (4x4x1, 17 levels, 3 classes), exported and loaded."""
    model = tfflow.models.Glow((4, 4, 1), levels=1, steps_per_level=1, hidden_channels=4,
                               num_levels=17, num_classes=3)
    model.initialize(tf.random.stateless_uniform([6, 4, 4, 1], seed=(1, 2)),
                     tf.constant([0, 1, 2, 0, 1, 2]))
    path = tfflow.export.export_saved_model(model, tmp_path_factory.mktemp("export") / "m")
    return tf.saved_model.load(str(path)).signatures


def _x(value=None, n=2):
    x = np.full([n, 4, 4, 1], 0.5, np.float32)
    if value is not None:
        x[1, 2, 3, 0] = value
    return tf.constant(x)


_LABELS = tf.constant([0, 1])
_SAMPLE = {"n": tf.constant(2), "seed": tf.constant([1, 2]), "temperature": tf.constant(0.7),
           "label": _LABELS}
EXPORT_CASES = {
    "nan": ("log_prob", {"x": _x(np.nan), "label": _LABELS}, ["expected finite x"]),
    "inf": ("log_prob", {"x": _x(np.inf), "label": _LABELS}, ["expected finite x"]),
    "above_one": ("log_prob", {"x": _x(1.5), "label": _LABELS},
                  ["expected x in [0, 1]", "num_levels=17", "[1.5]"]),
    "below_zero": ("log_prob", {"x": _x(-0.25), "label": _LABELS},
                   ["expected x in [0, 1]", "[-0.25]"]),
    "pixels_0_255": ("serving_default", {"x": _x() * 255., "label": _LABELS},
                     ["expected x in [0, 1]"]),
    "empty_batch": ("log_prob", {"x": tf.zeros([0, 4, 4, 1]), "label": tf.zeros([0], tf.int32)},
                    ["at least one example"]),
    "label_too_large": ("log_prob", {"x": _x(), "label": tf.constant([0, 3])},
                        ["expected labels in [0, 3)", "num_classes=3"]),
    "label_negative": ("encode", {"x": _x(), "label": tf.constant([-1, 0])},
                       ["expected labels in [0, 3)"]),
    "label_count": ("log_prob", {"x": _x(), "label": tf.constant([0, 1, 2])},
                    ["expected one label per example"]),
    "encode_nan": ("encode", {"x": _x(np.nan), "label": _LABELS}, ["expected finite x"]),
    "encode_range": ("encode", {"x": _x(2.), "label": _LABELS}, ["expected x in [0, 1]"]),
    "decode_nan": ("decode", {"z": _x(np.nan), "label": _LABELS}, ["expected finite z"]),
    "decode_label": ("decode", {"z": _x(), "label": tf.constant([0, 9])},
                     ["expected labels in [0, 3)"]),
    "sample_n_zero": ("sample", dict(_SAMPLE, n=tf.constant(0), label=tf.zeros([0], tf.int32)),
                      ["expected n an integer >= 1"]),
    "sample_negative_temperature": ("sample", dict(_SAMPLE, temperature=tf.constant(-1.)),
                                    ["expected temperature a finite number >= 0"]),
    "sample_nan_temperature": ("sample", dict(_SAMPLE, temperature=tf.constant(np.nan)),
                               ["expected temperature a finite number >= 0"]),
    "sample_label_count": ("sample", dict(_SAMPLE, n=tf.constant(3)),
                           ["expected one label per example"]),
    "sample_label_range": ("sample", dict(_SAMPLE, label=tf.constant([0, 4])),
                           ["expected labels in [0, 3)"]),
    "wrong_shape": ("log_prob", {"x": tf.zeros([2, 4, 4, 2]), "label": _LABELS},
                    ["expected shape [?,4,4,1]"]),
    "wrong_rank": ("log_prob", {"x": tf.zeros([2, 4, 4]), "label": _LABELS},
                   ["expected shape [?,4,4,1]"]),
    "wrong_label_rank": ("log_prob", {"x": _x(), "label": tf.zeros([2, 1], tf.int32)},
                         ["expected shape [?]"]),
}


@pytest.mark.parametrize("case", list(EXPORT_CASES))
def test_exported_signatures_reject_bad_input(loaded_conditional, case):
    name, inputs, fragments = EXPORT_CASES[case]
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        loaded_conditional[name](**inputs)
    message = info.value.message
    if not case.startswith("wrong_"):  # those are TF's own shape errors
        signature = "log_prob" if name == "serving_default" else name
        fragments = [f"SavedModel signature {signature}:"] + fragments
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in the message:\n{message}"


def test_exported_signatures_accept_the_edges(loaded_conditional):
    x = np.full([3, 4, 4, 1], 0.5, np.float32)
    x[0], x[1], x[2] = 0., 1., 1. + 9e-4  # the data range [0, 1] with its 1e-3 slack
    out = loaded_conditional["log_prob"](x=tf.constant(x), label=tf.constant([0, 1, 2]))
    assert np.all(np.isfinite(out["log_prob"].numpy()))
    samples = loaded_conditional["sample"](**dict(_SAMPLE, temperature=tf.constant(0.)))
    assert np.all(np.isfinite(samples["samples"].numpy()))


def test_export_and_the_api_sample_through_one_rule():
    # FlowModel.sample and the SavedModel's `sample` both decode `sample_latent`; the same
    # seed gives the same samples, inside a tf.function with tensor arguments too.
    model, _ = _model()
    seed = tf.constant([7, 11])
    latent = tf.function(model.sample_latent, autograph=False)(tf.constant(3), tf.constant(0.7),
                                                                 seed)
    np.testing.assert_allclose(latent, 0.7 * tf.random.stateless_normal([3, 8, 8, 1], seed=seed))
    np.testing.assert_allclose(model.sample(3, temperature=0.7, seed=[7, 11]),
                               model.decode(latent), atol=1e-5)


@pytest.mark.parametrize("value, ok", [(0., True), (0.7, True), (-1., False), (np.nan, False)])
def test_temperature_rule_is_the_same_eagerly_and_traced(value, ok):
    traced = tf.function(lambda t: _checks.temperature("owner", t), autograph=False)
    if ok:
        assert _checks.temperature("owner", value) == value
        assert float(traced(tf.constant(value))) == pytest.approx(value)
        return
    with pytest.raises(ValueError, match="owner: expected temperature a finite number >= 0"):
        _checks.temperature("owner", value)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="owner: expected temperature a finite number >= 0"):
        traced(tf.constant(value))
