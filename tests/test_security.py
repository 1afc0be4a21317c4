"""Security: `.keras` loading keeps Keras's safe_mode, nothing evaluates strings, no Python ops.

* tfflow's own models load under `safe_mode=True` (Keras's default, which
  tfflow never turns off), and a `.keras` file carrying a Python lambda is
  refused, also through `tfflow.training.load_run`;
* no source file of tfflow calls eval/exec/pickle/marshal/__import__ or turns
  safe mode off, and a config.json holding code is data, never run;
* the SavedModel export holds no `PyFunc`/`EagerPyFunc` op, in its graph or in
  any function of its library, so serving it runs no Python.
"""

import json
import pathlib
import re
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

import tfflow
from tfflow import training

ROOT = pathlib.Path(tfflow.__file__).resolve().parent


def _tiny_glow():
    model = tfflow.models.Glow((4, 4, 1), scales=1, steps_per_scale=1, hidden_channels=4,
                               num_levels=17)
    model.initialize(tf.random.stateless_uniform([8, 4, 4, 1], seed=(1, 2)))
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny Glow saved as `.keras` and exported as a SavedModel."""
    base = tmp_path_factory.mktemp("security")
    model = _tiny_glow()
    model.save(base / "model.keras")
    return model, base / "model.keras", tfflow.export.export_saved_model(model, base / "export")


def test_tfflow_models_load_under_safe_mode(saved):
    model, path, _ = saved
    loaded = keras.models.load_model(path, safe_mode=True)
    x = tf.random.stateless_uniform([3, 4, 4, 1], seed=(5, 6))
    np.testing.assert_allclose(loaded.log_prob(x), model.log_prob(x), rtol=1e-6)


def _lambda_model_file(path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Lambda(lambda x: x + 1.)])
    model.save(path)
    return path


def test_a_keras_file_with_a_lambda_is_refused(tmp_path):
    path = _lambda_model_file(tmp_path / "lambda.keras")
    with pytest.raises(ValueError, match="safe_mode"):
        keras.models.load_model(path)


def test_load_run_refuses_a_workdir_whose_model_holds_code(tmp_path):
    # tfflow's own loader (tfflow-sample/-evaluate/-export) keeps safe mode on.
    _lambda_model_file(tmp_path / training.MODEL_FILE)
    (tmp_path / training.CONFIG_FILE).write_text(training.TrainConfig().to_json())
    with pytest.raises(training.UserError, match="refused to load .*safe_mode"):
        training.load_run(str(tmp_path))


def test_a_tampered_tfflow_file_with_a_lambda_is_refused(saved, tmp_path):
    # A tfflow .keras whose config was edited to smuggle a lambda into the flow.
    _, path, _ = saved
    lambda_file = _lambda_model_file(tmp_path / "lambda.keras")
    with zipfile.ZipFile(lambda_file) as archive:
        lam = json.loads(archive.read("config.json"))["config"]["layers"][-1]
    tampered = tmp_path / "tampered.keras"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                config["config"]["flow"] = lam
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    with pytest.raises(ValueError, match="safe_mode"):
        keras.models.load_model(tampered)


# The table pipeline gathers each batch from the one in-memory table with NumPy
# (no second copy of the table as a TF constant). It runs only in the training
# process's tf.data pipeline; nothing exported or saved contains it.
# The table pipeline (training input only) and the data-dependent initialisation's
# float64 column checks (run once before training): neither is in a step or an export.
ALLOWED = {("tfflow/data/pipelines.py", "py_function"),
           ("tfflow/layers/autoregressive.py", "py_function")}

UNSAFE = {
    "safe_mode=False": r"safe_mode\s*=\s*False",
    "enable_unsafe_deserialization": r"enable_unsafe_deserialization",
    "eval": r"(?<![\w.])eval\s*\(",
    "exec": r"(?<![\w.])exec\s*\(",
    "compile of source": r"(?<![\w.])compile\s*\(\s*[^)]*['\"]exec['\"]",
    "pickle/marshal": r"\b(import|from)\s+(c?pickle|cloudpickle|dill|marshal|shelve|joblib)\b"
                      r"|\b(c?pickle|cloudpickle|dill|marshal|shelve|joblib)\.\w+",
    "allow_pickle=True": r"allow_pickle\s*=\s*True",
    "__import__": r"__import__",
    "py_function": r"py_function|numpy_function|py_func\b",
    "yaml.load": r"yaml\.(unsafe_)?load\b",
    "shell": r"shell\s*=\s*True|os\.system|os\.popen",
}


def test_no_source_file_evaluates_strings_or_turns_safe_mode_off():
    sources = sorted(ROOT.rglob("*.py")) + sorted((ROOT.parent / "bin").glob("*"))
    assert len(sources) > 10
    found = []
    for source in sources:
        if source.is_dir():
            continue
        for number, line in enumerate(source.read_text(errors="replace").splitlines(), 1):
            code = line.split("#", 1)[0]
            for what, pattern in UNSAFE.items():
                if re.search(pattern, code) and (str(source.relative_to(ROOT.parent)), what) \
                        not in ALLOWED:
                    found.append(f"{source.relative_to(ROOT.parent)}:{number}: {what}: {line}")
    assert not found, "\n".join(found)


@pytest.mark.parametrize("field, value", [
    ("model", "__import__('os').system('touch PWNED')"),
    ("dataset", "__import__('os').system('touch PWNED')"),
    ("learning_rate", "__import__('os').system('touch PWNED') or 1e-3"),
    ("epochs", "2 + 2"),
])
def test_config_json_values_are_data_never_code(tmp_path, monkeypatch, field, value):
    monkeypatch.chdir(tmp_path)
    values = json.loads(training.TrainConfig().to_json())
    values[field] = value
    config = training.TrainConfig.from_json(json.dumps(values))
    assert getattr(config, field) == value  # kept as the string it is
    if field != "dataset":  # a dataset name is checked when the data loads
        with pytest.raises(ValueError, match=re.escape(repr(value))):
            config.resolved()
    assert not (tmp_path / "PWNED").exists()


PY_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}


def test_saved_model_holds_no_python_ops(saved):
    _, _, export_dir = saved
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((export_dir / "saved_model.pb").read_bytes())
    ops = set()
    for meta_graph in proto.meta_graphs:
        ops |= {node.op for node in meta_graph.graph_def.node}
        for function in meta_graph.graph_def.library.function:
            ops |= {node.op for node in function.node_def}
    assert not ops & PY_OPS, sorted(ops & PY_OPS)
    # The walk saw the real graph: the flow's ops and the input checks are there.
    assert {"Conv2D", "Assert", "StatelessRandomNormalV2"} <= ops, sorted(ops)
