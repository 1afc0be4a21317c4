"""SavedModel export: loads without tfflow or TFP, matches the in-process model, serves via CLI."""

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl import flags as absl_flags

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
bad_x = np.array(inputs["x"])
bad_x[1, 0, 0, 0] = np.nan
mixed = sig["log_prob"](x=tf.constant(bad_x), **label)
results["valid"] = mixed["valid"].numpy().tolist()
results["mixed_log_prob"] = [None if np.isnan(v) else v for v in mixed["log_prob"].numpy().tolist()]
try:
    many = 1_000_000
    sig["sample"](n=tf.constant(many), seed=tf.constant([7, 11]), temperature=tf.constant(0.7),
                  **({"label": tf.zeros([many], tf.int32)} if label else {}))
    results["too_many"] = "no error"
except Exception as e:
    results["too_many"] = type(e).__name__ + ": " + str(e)[:600]
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
    model = tfflow.models.Glow((8, 8, 1), scales=2, steps_per_scale=1, hidden_channels=8,
                               num_levels=17, num_classes=num_classes)
    x = tf.random.stateless_uniform([6, 8, 8, 1], seed=(1, 2))
    model.initialize(x, None if num_classes is None else tf.constant([0, 1, 2, 0, 1, 2]))
    # Move every weight away from its initial value so nothing is trivially the identity.
    for v in model.trainable_variables:
        v.assign(v + 0.01 * tf.random.stateless_normal(v.shape, seed=(3, 4), dtype=v.dtype))
    return model, x


@pytest.fixture(scope="module")
def glow_export(tmp_path_factory):
    """`_model()` and its first export, built once for the tests that only read them."""
    model, x = _model()
    export_dir = tmp_path_factory.mktemp("glow") / "glow"
    return model, x, export_dir, tfflow.export.export_saved_model(model, export_dir)


@pytest.mark.parametrize("num_classes", [None, 3], ids=["unconditional", "class_conditional"])
def test_export_loads_in_fresh_process_without_tfflow_or_tfp(tmp_path, num_classes, glow_export):
    if num_classes is None:
        model, x, export_dir, path = glow_export
    else:
        model, x = _model(num_classes)
        export_dir = tmp_path / "glow"
        path = tfflow.export.export_saved_model(model, export_dir)
    labels = None if num_classes is None else tf.constant([0, 1, 2, 0, 1, 2])
    assert path == export_dir / "1"
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
    # One NaN row: NaN and valid=False there, the other rows' answers unchanged.
    assert out["valid"] == [True, False, True, True, True, True]
    assert out["mixed_log_prob"][1] is None
    np.testing.assert_array_equal(np.delete(out["mixed_log_prob"], 1).astype(np.float32),
                                  np.delete(out["log_prob"], 1).astype(np.float32))
    assert out["too_many"].startswith("InvalidArgumentError"), out["too_many"]
    assert f"expected n <= {tfflow.export.DEFAULT_MAX_SAMPLES}" in out["too_many"]
    for case in ("bad_shape", "bad_rank", "bad_dtype"):
        # Rejected by the SavedModel itself, never broadcast.
        assert out[case].startswith("InvalidArgumentError"), out[case]
    for case in ("bad_shape", "bad_rank"):
        assert "expected shape [?,8,8,1]" in out[case], out[case]


def test_saved_model_cli_show_and_run(tmp_path, glow_export):
    _, x, _, path = glow_export
    cli = pathlib.Path(sys.executable).parent / "saved_model_cli"
    show = subprocess.run([str(cli), "show", "--dir", str(path), "--all"], check=True,
                          capture_output=True, text=True, timeout=300).stdout
    for name in tfflow.export.SIGNATURES:
        assert f"signature_def['{name}']" in show
    # Named inputs and outputs, `valid` a bool per row beside every per-row answer.
    sections = {name: show.split(f"signature_def['{name}']")[1].split("Method name")[0]
                for name in tfflow.export.SIGNATURES}
    expected = {"serving_default": (["x"], ["bits_per_dim", "log_prob", "valid"]),
                "log_prob": (["x"], ["bits_per_dim", "log_prob", "valid"]),
                "encode": (["x"], ["valid", "z"]), "decode": (["z"], ["valid", "x"]),
                "sample": (["n", "seed", "temperature"], ["samples"])}
    for name, (inputs, outputs) in expected.items():
        assert re.findall(r"inputs\['(\w+)'\]", sections[name]) == inputs, sections[name]
        assert re.findall(r"outputs\['(\w+)'\]", sections[name]) == outputs, sections[name]
        if "valid" in outputs:
            valid = sections[name].split("outputs['valid']")[1]
            assert "DT_BOOL" in valid.split("name:")[0] and "shape: (-1)" in valid
    assert "Value: None" not in show  # each concrete function takes exactly its inputs
    np.save(tmp_path / "x.npy", x.numpy())
    run = subprocess.run([str(cli), "run", "--dir", str(path), "--tag_set", "serve",
                          "--signature_def", "log_prob", "--inputs", f"x={tmp_path / 'x.npy'}"],
                         check=True, capture_output=True, text=True, timeout=300).stdout
    assert "log_prob" in run and "bits_per_dim" in run and "valid" in run
    sample = subprocess.run([str(cli), "run", "--dir", str(path), "--tag_set", "serve",
                             "--signature_def", "sample", "--input_exprs",
                             "n=2;seed=[1,2];temperature=0.7"],
                            check=True, capture_output=True, text=True, timeout=300).stdout
    assert "samples" in sample


def test_versions_increase_and_existing_version_is_refused(tmp_path, conditional_export):
    model, _ = conditional_export  # the smallest model here: the versions do not depend on it
    assert tfflow.export.export_saved_model(model, tmp_path).name == "1"
    assert tfflow.export.export_saved_model(model, tmp_path).name == "2"
    with pytest.raises(ValueError, match="already exists"):
        tfflow.export.export_saved_model(model, tmp_path, version=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]


# --- Bad requests: refused as a whole, InvalidArgumentError naming the signature ---------------

@pytest.fixture(scope="module")
def conditional_export(tmp_path_factory):
    """A tiny class-conditional Glow (4x4x1, 17 levels, 3 classes), exported and loaded."""
    model = tfflow.models.Glow((4, 4, 1), scales=1, steps_per_scale=1, hidden_channels=4,
                               num_levels=17, num_classes=3)
    model.initialize(tf.random.stateless_uniform([6, 4, 4, 1], seed=(1, 2)),
                     tf.constant([0, 1, 2, 0, 1, 2]))
    for v in model.trainable_variables:  # not the identity anywhere
        v.assign(v + 0.05 * tf.random.stateless_normal(v.shape, seed=(3, 4), dtype=v.dtype))
    path = tfflow.export.export_saved_model(model, tmp_path_factory.mktemp("export") / "m")
    return model, tf.saved_model.load(str(path)).signatures


@pytest.fixture(scope="module")
def loaded_conditional(conditional_export):
    return conditional_export[1]


def _x(value=None, n=2):
    x = np.full([n, 4, 4, 1], 0.5, np.float32)
    if value is not None:
        x[1, 2, 3, 0] = value
    return tf.constant(x)


_LABELS = tf.constant([0, 1])
_SAMPLE = {"n": tf.constant(2), "seed": tf.constant([1, 2]), "temperature": tf.constant(0.7),
           "label": _LABELS}
_MAX = tfflow.export.DEFAULT_MAX_SAMPLES
REQUEST_ERRORS = {
    "empty_batch": ("log_prob", {"x": tf.zeros([0, 4, 4, 1]), "label": tf.zeros([0], tf.int32)},
                    ["at least one example"]),
    "encode_empty_batch": ("encode", {"x": tf.zeros([0, 4, 4, 1]),
                                      "label": tf.zeros([0], tf.int32)}, ["at least one example"]),
    "label_count": ("log_prob", {"x": _x(), "label": tf.constant([0, 1, 2])},
                    ["expected one label per example", "[3] [2]"]),
    "decode_label_count": ("decode", {"z": _x(), "label": tf.constant([0])},
                           ["expected one label per example"]),
    "sample_n_zero": ("sample", dict(_SAMPLE, n=tf.constant(0), label=tf.zeros([0], tf.int32)),
                      ["expected n an integer >= 1"]),
    "sample_n_negative": ("sample", dict(_SAMPLE, n=tf.constant(-5)),
                          ["expected n an integer >= 1", "[-5]"]),
    "sample_above_max": ("sample", dict(_SAMPLE, n=tf.constant(_MAX + 1),
                                        label=tf.zeros([_MAX + 1], tf.int32)),
                         [f"expected n <= {_MAX} samples per request", "max_samples=",
                          "tfflow-export --max_samples", f"got n =] [{_MAX + 1}]"]),
    "sample_huge_n": ("sample", dict(_SAMPLE, n=tf.constant(2_000_000),
                                     label=tf.zeros([2_000_000], tf.int32)),
                      [f"expected n <= {_MAX}", "got n =] [2000000]"]),
    "sample_negative_temperature": ("sample", dict(_SAMPLE, temperature=tf.constant(-1.)),
                                    ["expected temperature a finite number >= 0"]),
    "sample_nan_temperature": ("sample", dict(_SAMPLE, temperature=tf.constant(np.nan)),
                               ["expected temperature a finite number >= 0"]),
    "sample_inf_temperature": ("sample", dict(_SAMPLE, temperature=tf.constant(np.inf)),
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
    "wrong_decode_shape": ("decode", {"z": tf.zeros([2, 2, 2, 4]), "label": _LABELS},
                           ["expected shape [?,4,4,1]"]),
}


@pytest.mark.parametrize("case", list(REQUEST_ERRORS))
def test_exported_signatures_refuse_malformed_requests(loaded_conditional, case):
    name, inputs, fragments = REQUEST_ERRORS[case]
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        loaded_conditional[name](**inputs)
    message = info.value.message
    if not case.startswith("wrong_"):  # those are TF's own shape errors
        signature = "log_prob" if name == "serving_default" else name
        fragments = [f"SavedModel signature {signature}:"] + fragments
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in the message:\n{message}"


# --- Per-row answers: a bad row gets NaN and valid=False, its neighbours are untouched -----------

def _rows(scoring_range):
    """Rows of a mixed batch: name -> (x [4, 4, 1] or a function of a good row, label, valid)."""
    low, high = scoring_range.low, scoring_range.high

    def poke(value):
        return lambda good: np.where(np.arange(16).reshape(4, 4, 1) == 9, value, good)

    return {
        "good_a": (None, 0, True),
        "nan": (poke(np.nan), 1, False),
        "good_b": (None, 1, True),
        "inf": (poke(np.inf), 2, False),
        "minus_inf": (poke(-np.inf), 0, False),
        "above_range": (poke(high + 0.25), 1, False),
        "below_range": (poke(low - 0.25), 2, False),
        "pixels_0_255": (lambda good: np.round(good * 255.), 0, False),
        "label_too_large": (None, 3, False),
        "label_negative": (None, -1, False),
        "edges_of_range": (lambda good: np.where(good > 0.5, high, low), 2, True),
        "good_c": (None, 2, True),
    }


def _mixed_batch(scoring_range, what="x"):
    """(x [N, 4, 4, 1], labels [N], expected valid [N]) from the table `_rows`."""
    rows = _rows(scoring_range)
    if what == "z":  # a latent has no range: only non-finite rows and bad labels are invalid
        rows = {name: row for name, row in rows.items()
                if name not in ("above_range", "below_range", "pixels_0_255", "edges_of_range")}
    good = tf.random.stateless_uniform([len(rows), 4, 4, 1], seed=(5, 6)).numpy()
    if what == "z":
        good = 2. * good - 1.
    x = np.stack([good[i] if make is None else make(good[i])
                  for i, (make, _, _) in enumerate(rows.values())]).astype(np.float32)
    labels = np.array([label for _, label, _ in rows.values()], np.int32)
    valid = np.array([ok for _, _, ok in rows.values()])
    return x, labels, valid


@pytest.mark.parametrize("name, output", [("log_prob", "log_prob"),
                                          ("serving_default", "bits_per_dim"),
                                          ("encode", "z"), ("decode", "x")])
def test_invalid_rows_get_nan_and_valid_false_and_spare_their_neighbours(conditional_export,
                                                                          name, output):
    model, signatures = conditional_export
    what = "z" if name == "decode" else "x"
    x, labels, valid = _mixed_batch(model.scoring_range, what)
    sig = signatures[name]
    out = sig(**{what: tf.constant(x), "label": tf.constant(labels)})
    assert out["valid"].dtype == tf.bool
    np.testing.assert_array_equal(out["valid"].numpy(), valid)
    for key, value in out.items():
        if key != "valid":
            value = value.numpy().reshape(len(x), -1)
            assert np.all(np.isnan(value[~valid])), key
            assert np.all(np.isfinite(value[valid])), key
    answer = out[output].numpy()
    # Bit-identical to the same batch in which every bad row is replaced by a good one: the
    # bad rows leave no trace in the others.
    clean_x, clean_labels = x.copy(), labels.copy()
    clean_x[~valid], clean_labels[~valid] = x[0], labels[0]
    clean = sig(**{what: tf.constant(clean_x), "label": tf.constant(clean_labels)})
    assert np.all(clean["valid"].numpy())
    np.testing.assert_array_equal(answer[valid], clean[output].numpy()[valid])
    # The valid rows scored alone, and by the model itself: equal up to the rounding of TF's
    # batch-size-dependent CPU kernels (measured: a few float32 ulps).
    alone = sig(**{what: tf.constant(x[valid]), "label": tf.constant(labels[valid])})[output]
    np.testing.assert_allclose(answer[valid], alone, rtol=1e-5, atol=1e-5)
    in_process = {"log_prob": model.log_prob, "serving_default": model.bits_per_dim,
                  "encode": model.encode, "decode": model.decode}[name]
    np.testing.assert_allclose(answer[valid], in_process(x[valid], labels[valid]),
                               rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def contextual_export(tmp_path_factory):
    """A tiny MAF on 2-D x given a 2-D context, exported with max_samples=8, and loaded."""
    model = tfflow.models.build("maf", (2,), transforms=1, hidden_units=(8,), context_shape=(2,))
    rng = np.random.default_rng(0)
    c = (rng.normal(size=(64, 2)) * [1., 50.] + [0., 100.]).astype(np.float32)
    x = (rng.normal(size=(64, 2)) + c[:, :1]).astype(np.float32)
    model.initialize(x, context=c)
    path = tfflow.export.export_saved_model(model, tmp_path_factory.mktemp("ctx") / "m",
                                            max_samples=8)
    return model, tf.saved_model.load(str(path)).signatures, x[:6], c[:6]


def test_a_bad_context_row_gets_nan_and_spares_its_neighbours(contextual_export):
    model, signatures, x, c = contextual_export
    x, c = x.copy(), c.copy()
    c[1, 0], c[3, 1], x[4, 0] = np.nan, np.inf, np.nan
    valid = np.array([True, False, True, False, False, True])
    for name, what, output, in_process in (("log_prob", "x", "log_prob", model.log_prob),
                                           ("encode", "x", "z", model.encode),
                                           ("decode", "z", "x", model.decode)):
        out = signatures[name](**{what: tf.constant(x), "context": tf.constant(c)})
        np.testing.assert_array_equal(out["valid"].numpy(), valid, err_msg=name)
        answer = out[output].numpy()
        assert np.all(np.isnan(answer[~valid])), name
        clean_x, clean_c = x.copy(), c.copy()
        clean_x[~valid], clean_c[~valid] = x[0], c[0]
        clean = signatures[name](**{what: tf.constant(clean_x), "context": tf.constant(clean_c)})
        np.testing.assert_array_equal(answer[valid], clean[output].numpy()[valid], err_msg=name)
        np.testing.assert_allclose(answer[valid], in_process(x[valid], context=c[valid]),
                                   rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("n, rows, fragments", [
    (3, 3, ["expected n x context rows <= 8 samples per request", "got n x context rows =] [9]"]),
    (9, 1, ["expected n x context rows <= 8", "[9]"]),
    (0, 2, ["expected n an integer >= 1"]),
])
def test_conditional_sample_bounds_n_times_the_context_rows(contextual_export, n, rows,
                                                            fragments):
    _, signatures, _, c = contextual_export
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        signatures["sample"](n=tf.constant(n), seed=tf.constant([1, 2]),
                             temperature=tf.constant(1.), context=tf.constant(c[:rows]))
    for fragment in ["SavedModel signature sample:"] + fragments:
        assert fragment in info.value.message, info.value.message


def test_conditional_sample_refuses_a_bad_context_as_a_whole(contextual_export):
    # sample takes scalars, which TF Serving cannot batch: its request fails alone.
    _, signatures, _, c = contextual_export
    c = c[:2].copy()
    c[1, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected finite context"):
        signatures["sample"](n=tf.constant(2), seed=tf.constant([1, 2]),
                             temperature=tf.constant(1.), context=tf.constant(c))
    samples = signatures["sample"](n=tf.constant(4), seed=tf.constant([1, 2]),
                                   temperature=tf.constant(1.), context=tf.constant(c[:1]))
    assert samples["samples"].shape == (1, 4, 2)  # 4 x 1 row = 4 <= 8: allowed


def test_exported_signatures_accept_the_edges(conditional_export):
    model, signatures = conditional_export
    low, high = model.scoring_range.low, model.scoring_range.high
    x = np.full([4, 4, 4, 1], 0.5, np.float32)
    x[0], x[1], x[2], x[3] = 0., 1., low, high
    out = signatures["log_prob"](x=tf.constant(x), label=tf.constant([0, 1, 2, 0]))
    assert np.all(out["valid"].numpy()) and np.all(np.isfinite(out["log_prob"].numpy()))
    samples = signatures["sample"](**dict(_SAMPLE, temperature=tf.constant(0.)))
    assert np.all(np.isfinite(samples["samples"].numpy()))
    at_max = signatures["sample"](**dict(_SAMPLE, n=tf.constant(_MAX),
                                         label=tf.zeros([_MAX], tf.int32)))
    assert at_max["samples"].shape == (_MAX, 4, 4, 1)


@pytest.mark.parametrize("value, fragment", [
    (0, "expected max_samples an integer >= 1, got 0"),
    (-3, "expected max_samples an integer >= 1, got -3"),
    (2.5, "expected max_samples an integer >= 1, got 2.5"),
    (2 ** 31, "expected max_samples <= 2147483647"),
])
def test_export_refuses_a_bad_max_samples(tmp_path, value, fragment, glow_export):
    model = glow_export[0]
    with pytest.raises(ValueError, match=re.escape(f"export_saved_model: {fragment}")):
        tfflow.export.export_saved_model(model, tmp_path, max_samples=value)
    assert not any(tmp_path.iterdir())  # refused before anything is written


def test_the_export_app_takes_max_samples(tmp_path):
    """tfflow-export --max_samples=3 in a real process: n = 3 is served, n = 4 refused."""
    from tfflow import cli  # pylint: disable=import-outside-toplevel
    from tfflow.training import config  # pylint: disable=import-outside-toplevel
    flag_values = absl_flags.FlagValues()
    cli.define_export_flags(flag_values)
    assert flag_values["max_samples"].default == tfflow.export.DEFAULT_MAX_SAMPLES
    # A workdir as tfflow-train leaves it (model.keras, config.json), without the training.
    workdir = tmp_path / "run"
    workdir.mkdir()
    train_config = config.TrainConfig(scales=1, steps_per_scale=1, hidden_channels=4)
    model = tfflow.models.build("glow", (8, 8, 1), num_levels=17, scales=1, steps_per_scale=1,
                                hidden_channels=4)
    model.initialize(tf.random.stateless_uniform([8, 8, 8, 1], seed=(1, 2)))
    model.save(workdir / config.MODEL_FILE)
    (workdir / config.CONFIG_FILE).write_text(train_config.to_json())
    app = pathlib.Path(__file__).resolve().parents[1] / "bin" / "tfflow-export"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, str(app), f"--workdir={workdir}",
                             f"--export_dir={tmp_path / 'serve'}", "--max_samples=3"],
                            capture_output=True, text=True, timeout=300, env=env, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    sample = tf.saved_model.load(str(tmp_path / "serve" / "1")).signatures["sample"]
    args = {"seed": tf.constant([1, 2]), "temperature": tf.constant(0.7)}
    assert sample(n=tf.constant(3), **args)["samples"].shape == (3, 8, 8, 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(
            "expected n <= 3 samples per request (the maximum fixed at export time: "
            "export_saved_model(max_samples=...) or tfflow-export --max_samples), got n =] [4]")):
        sample(n=tf.constant(4), **args)
    bad = subprocess.run([sys.executable, str(app), f"--workdir={workdir}", "--max_samples=0"],
                         capture_output=True, text=True, timeout=300, env=env, check=False)
    assert bad.returncode == 2 and "max_samples" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_export_and_the_api_sample_through_one_rule(glow_export):
    # FlowModel.sample and the SavedModel's `sample` both decode `sample_latent`; the same
    # seed gives the same samples, inside a tf.function with tensor arguments too.
    model = glow_export[0]
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
