"""SavedModel export: loads without tfflow or TFP, matches the in-process model, serves via CLI."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import tfflow

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
