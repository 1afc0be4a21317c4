"""Tables from the command line: conditional tables (`--context_columns`) and the column rules.

The apps run as real processes (as in test_cli.py) on small generated CSV
tables, one epoch of a one-layer MAF. Processes that only read a finished
workdir run side by side; the bad `--context` cases and the sampling cases
run in one process that calls `tfflow-sample`'s main once per case (each
would otherwise spend its ~8 s importing TensorFlow). The column rules are
also tested through the Python API (`TableSource`, `check_columns`, the
model's `StandardizeLayer` initialisation) without processes.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import tfflow
from tfflow import data
from tfflow.data import table

from served import check_ok, last_line

BIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bin")
TIMEOUT_S = 180
# The batch and rate these runs' sample checks were set with (tfflow-train's defaults
# until the digits Glow's got batch 64 at 8e-3, which fit this MAF's few steps less well).
TINY_MAF = ["--model=maf", "--transforms=1", "--hidden_units=8", "--epochs=1", "--verbose=0",
            "--batch_size=32", "--learning_rate=2e-3"]
NUM_ROWS = 240


def _command(app, *flags):
    return [sys.executable, os.path.join(BIN, app), *flags]


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _start(app, *flags):
    return subprocess.Popen(_command(app, *flags), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())


def _finish(process):
    stdout, stderr = process.communicate(timeout=TIMEOUT_S)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)




def _check_one_line_error(result, *words):
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = last_line(result.stderr)
    assert ": error: " in last, result.stderr[-3000:]
    for word in words:
        assert word in last, (word, last)


def _pairs(seed=0, rows=NUM_ROWS):
    """x | (a, b): x1 = 2a + 0.3 e1, x2 = b - a + 0.5 e2, columns in the order x1, a, x2, b."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=rows), rng.normal(size=rows)
    x1 = 2 * a + 0.3 * rng.normal(size=rows)
    x2 = b - a + 0.5 * rng.normal(size=rows)
    return np.stack([x1, a, x2, b], axis=1)


def _write_csv(path, values, header):
    np.savetxt(path, values, delimiter=",", header=header, comments="", fmt="%.17g")
    return str(path)


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tables")
    rng = np.random.default_rng(1)
    base = rng.normal(size=(NUM_ROWS, 2))

    def with_column(name, column):
        return _write_csv(folder / f"{name}.csv", np.concatenate([base, column[:, None]], 1),
                          "p,q,r")

    return {
        "pairs": _write_csv(folder / "pairs.csv", _pairs(), "x1,a,x2,b"),
        "constant": with_column("constant", np.full(NUM_ROWS, 3.5)),
        "near_constant": with_column("near_constant", 1 + 1e-13 * rng.normal(size=NUM_ROWS)),
        "huge": with_column("huge", 1e200 * rng.normal(size=NUM_ROWS)),
        "small": with_column("small", 1e-13 * rng.normal(size=NUM_ROWS)),
        "folder": folder,
    }


# One process per app runs the app's main once per case, as its bin/ script does (each
# case in a process of its own would spend ~8 s of CPU importing TensorFlow): [(name, flags)]
# in; "CASE <name> EXIT <code>" after each case's output, on stdout and stderr.
_DRIVER = r"""
import json, os, sys
os.environ.setdefault("TFFLOW_DEFER_IMPORTS", "1")
from absl import flags
from tfflow import cli
app = sys.argv[1]
getattr(cli, f"define_{app}_flags")()
for name, argv in json.loads(sys.argv[2]):
    flags.FLAGS.unparse_flags()
    try:
        getattr(cli, f"{app}_main")(cli.parse_flags([f"tfflow-{app}", *argv]))
        code = 0
    except SystemExit as stop:
        code = stop.code
    for stream in (sys.stdout, sys.stderr):
        print(f"CASE {name} EXIT {code}", file=stream, flush=True)
"""


def _start_cases(app, cases):
    return subprocess.Popen([sys.executable, "-c", _DRIVER, app, json.dumps(cases)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env())


def _case_results(result):
    """{case: CompletedProcess of that case alone} from a driver's output."""
    def split(text):
        parts, lines = {}, []
        for line in text.splitlines():
            if line.startswith("CASE "):
                _, name, _, code = line.split()
                parts[name] = (int(code), "\n".join(lines))
                lines = []
            else:
                lines.append(line)
        return parts
    out, err = split(result.stdout), split(result.stderr)
    assert set(out) == set(err) and out, result.stdout[-3000:] + result.stderr[-3000:]
    return {name: subprocess.CompletedProcess(name, code, out[name][1], err[name][1])
            for name, (code, _) in out.items()}


# Refused before training: (table, flags, words the one-line message must contain).
_COLUMN_ERRORS = {
    "constant": ("constant", [], ["column 'r'", "constant 3.5", "drop the column"]),
    "huge": ("huge", [], ["column 'r'", "within +-1e+30", "divide the column by 1e200",
                          "nats per row"]),
    "near_constant": ("near_constant", [],
                      ["column 'r'", "float32", "(nearly) constant", "subtract its mean"]),
    "unknown_column": ("pairs", ["--context_columns=a,zz"],
                       ["unknown context column 'zz'", "['x1', 'a', 'x2', 'b']"]),
}


@pytest.fixture(scope="module")
def training_runs(tables):
    """The refused runs, then the conditional run, through `tfflow-train`'s main."""
    folder = tables["folder"]
    workdir = folder / "conditional"
    cases = [(name, [f"--dataset={tables[table_name]}", *flags,
                     f"--workdir={folder / f'refused_{name}'}", *TINY_MAF])
             for name, (table_name, flags, _) in _COLUMN_ERRORS.items()]
    conditional = [f"--dataset={tables['pairs']}", "--context_columns=a,b",
                   f"--workdir={workdir}", *TINY_MAF]
    # The finished run, continued for one more epoch from its workdir (config.json holds the
    # context columns, so the same flags are the same run).
    cases += [("conditional", conditional), ("continued", conditional + ["--epochs=2"])]
    results = _case_results(_finish(_start_cases("train", cases)))
    return {"conditional": (workdir, results.pop("conditional")),
            "continued": results.pop("continued"), "refused": results}


@pytest.fixture(scope="module")
def conditional_run(training_runs):
    return training_runs["conditional"]


@pytest.fixture(scope="module")
def after_training(tables, conditional_run, tmp_path_factory):
    """evaluate, export and the sampling cases, side by side, on the finished runs."""
    workdir, train_result = conditional_run
    check_ok(train_result)
    folder = tmp_path_factory.mktemp("after")
    # An unconditional run's workdir on the same table: its config and an initialised model
    # (what `tfflow-sample` reads), written here rather than trained.
    from tfflow import training
    unconditional = folder / "unconditional"
    unconditional.mkdir()
    config = training.TrainConfig(model="maf", dataset=tables["pairs"], transforms=1,
                                  hidden_units=(8,), workdir=str(unconditional)).resolved()
    (unconditional / "config.json").write_text(config.to_json())
    model = tfflow.models.MAF((4,), transforms=1, hidden_units=(8,))
    model.initialize(data.source(tables["pairs"]).array("train").astype(np.float32))
    model.save(unconditional / "model.keras")
    rows = folder / "rows.csv"
    rows.write_text("a,b\n1.5,2.0\n-1,0\n0,0\n")
    swapped = folder / "swapped.csv"
    swapped.write_text("b,a\n1.5,2.0\n")
    out = folder / "samples"
    cases = [
        ("one_row", [f"--workdir={workdir}", "--context=1.5,2.0", "--num_samples=400",
                     f"--output={out / 'one.npy'}"]),
        ("file", [f"--workdir={workdir}", f"--context_file={rows}", "--num_samples=5",
                  f"--output={out / 'file.npy'}"]),
        ("wrong_count", [f"--workdir={workdir}", "--context=1.5", f"--output={out / 'x.npy'}"]),
        ("non_numeric", [f"--workdir={workdir}", "--context=1.5,abc",
                         f"--output={out / 'x.npy'}"]),
        ("nan", [f"--workdir={workdir}", "--context=nan,1", f"--output={out / 'x.npy'}"]),
        ("missing", [f"--workdir={workdir}", f"--output={out / 'x.npy'}"]),
        ("both", [f"--workdir={workdir}", "--context=1,2", f"--context_file={rows}",
                  f"--output={out / 'x.npy'}"]),
        ("swapped_header", [f"--workdir={workdir}", f"--context_file={swapped}",
                            f"--output={out / 'x.npy'}"]),
        ("unconditional", [f"--workdir={unconditional}", "--context=1,2",
                           f"--output={out / 'x.npy'}"]),
    ]
    processes = {
        "evaluate": _start("tfflow-evaluate", f"--workdir={workdir}"),
        "export": _start("tfflow-export", f"--workdir={workdir}",
                         f"--export_dir={folder / 'serve'}"),
        "sample": _start_cases("sample", cases),
    }
    results = {name: _finish(process) for name, process in processes.items()}
    return {"results": results, "samples": out, "serve": folder / "serve",
            "sample_cases": _case_results(results["sample"])}


# ---------------------------------------------------------------- conditional tables


def test_train_with_context_columns_stores_them_and_reports_the_conditional_gaussian(
        conditional_run):
    workdir, result = conditional_run
    check_ok(result)
    config = json.loads((workdir / "config.json").read_text())
    assert config["context_columns"] == ["a", "b"]
    last = last_line(result.stdout)
    assert "nats per row" in last and "conditional Gaussian fit" in last, last
    # The baseline is the regression of (x1, x2) on (a, b), fitted on the training rows.
    source = data.source(str(config["dataset"]), context_columns=["a", "b"])
    expected = data.fit_gaussian_nll(source.array("train"), source.array("test"),
                                     train_context=source.context_array("train"),
                                     test_context=source.context_array("test"))
    baseline = float(last.split("conditional Gaussian fit's ")[1].split(";")[0])
    assert baseline == pytest.approx(expected, abs=1e-4)


def test_a_finished_conditional_run_continues_with_more_epochs(training_runs):
    result = training_runs["continued"]
    check_ok(result)
    # Quiet (--verbose=0): the history it reports holds the first run's epoch and the new one.
    assert "; 2 epochs (all planned," in last_line(result.stdout), result.stdout[-3000:]


def test_a_baseline_that_cannot_be_fitted_is_a_note_in_the_summary():
    from tfflow.training import EvalResult
    result = EvalResult(split="test", num_examples=5, nll=1.25, bits_per_dim=0.9,
                        gaussian_note="no Gaussian baseline (the training covariance is "
                                      "singular)")
    assert result.summary() == ("test NLL 1.2500 nats per row (the data's units); no Gaussian "
                                "baseline (the training covariance is singular)")


def test_evaluate_scores_the_test_rows_given_their_context(after_training, training_runs):
    result = after_training["results"]["evaluate"]
    check_ok(result)
    last = last_line(result.stdout)
    train_last = last_line(training_runs["continued"].stdout)  # the workdir's last run
    nll = lambda line: float(line.split("NLL ")[1].split()[0])  # noqa: E731
    assert nll(last) == pytest.approx(nll(train_last), abs=1e-4)
    assert "conditional Gaussian fit" in last and "round-trip error" in last, last


def test_sample_given_a_context_row_or_a_file_of_rows(after_training):
    cases = after_training["sample_cases"]
    check_ok(cases["one_row"])
    check_ok(cases["file"])
    assert "for each of 3 context rows" in last_line(cases["file"].stdout)
    one = np.load(after_training["samples"] / "one.npy")
    assert one.shape == (400, 2) and np.all(np.isfinite(one))
    # x1 | a=1.5 has mean 3.0 and sd 0.3; x2 | a=1.5, b=2 mean 0.5 and sd 0.5 (one epoch
    # from the regression start, which is these means up to the fit's error).
    np.testing.assert_allclose(one.mean(axis=0), [3.0, 0.5], atol=0.25)
    many = np.load(after_training["samples"] / "file.npy")
    assert many.shape == (3, 5, 2) and np.all(np.isfinite(many))


@pytest.mark.parametrize("case, words", [
    ("wrong_count", ["expected a context of 2 numbers per row (columns a,b)", "got 1"]),
    ("non_numeric", ["--context as comma-separated numbers", "'1.5,abc'"]),
    ("nan", ["finite numbers", "NaN"]),
    ("missing", ["is conditional", "--context="]),
    ("both", ["--context or --context_file, got both"]),
    ("swapped_header", ["a,b in that order", "got b,a"]),
    ("unconditional", ["not conditional", "--context_columns"]),
])
def test_bad_contexts_are_one_line_errors_with_exit_2(after_training, case, words):
    result = after_training["sample_cases"][case]
    _check_one_line_error(result, *words)
    assert last_line(result.stderr).startswith("tfflow-sample: error: ")


def test_export_takes_the_context_as_a_named_input(after_training):
    result = after_training["results"]["export"]
    check_ok(result)
    loaded = tf.saved_model.load(str(after_training["serve"] / "1"))
    _, inputs = loaded.signatures["log_prob"].structured_input_signature
    assert "context" in inputs and inputs["context"].shape.as_list() == [None, 2], inputs


@pytest.mark.parametrize("case", sorted(_COLUMN_ERRORS))
def test_column_errors_before_training_are_one_line_and_exit_2(tables, training_runs, case):
    _check_one_line_error(training_runs["refused"][case], *_COLUMN_ERRORS[case][2])
    assert not (tables["folder"] / f"refused_{case}").exists()  # nothing written


# ---------------------------------------------------------------- the Python API


def test_context_columns_by_name_or_index_and_their_errors():
    header = ["x1", "a", "2", "b"]
    assert table.resolve_columns("w", ["a", "b"], header, 4) == [1, 3]
    assert table.resolve_columns("w", "b, 0", header, 4) == [3, 0]
    assert table.resolve_columns("w", ["2"], header, 4) == [2]  # the header's name wins
    assert table.resolve_columns("w", [3, "1"], None, 4) == [3, 1]
    for spec, words in [
            ([], "one or more column names"), ("", "one or more column names"),
            (["a", ""], "one or more column names"), (["zz"], "unknown context column 'zz'"),
            (["a", "1"], "named twice"), (["x1", "a", "2", "b"], "all 4 columns"),
            ([7], "index 7 is out of range")]:
        with pytest.raises(ValueError, match=r"^w: .*" + words.replace("(", r"\(")):
            table.resolve_columns("w", spec, header, 4)
    with pytest.raises(ValueError, match="no header row"):
        table.resolve_columns("w", ["a"], None, 4)


def test_a_conditional_table_yields_x_and_context_pairs(tables):
    source = data.source(tables["pairs"], context_columns=["b", "a"])
    info = source.info()
    assert info.event_shape == (2,) and info.context_shape == (2,)
    assert source.x_columns == ("x1", "x2") and source.context_columns == ("b", "a")
    x, c = next(iter(source.dataset("test", batch_size=1000)))
    np.testing.assert_allclose(x, source.array("test"), rtol=1e-6)
    np.testing.assert_allclose(c, source.context_array("test"), rtol=1e-6)
    whole = data.source(tables["pairs"]).array("test")  # every column, in file order
    np.testing.assert_array_equal(source.context_array("test"), whole[:, [3, 1]])
    np.testing.assert_array_equal(source.array("test"), whole[:, [0, 2]])
    with pytest.raises(ValueError, match="context_columns applies to .npy/.csv tables"):
        data.source("two_moons", context_columns=["0"])


def test_conditional_gaussian_baseline_is_the_joint_fit_minus_the_context_marginal():
    # For maximum-likelihood fits, log N(x, c) = log N(x | c) + log N(c) exactly, with the
    # conditional the regression: the baseline must satisfy it to rounding.
    table_ = _pairs(seed=3, rows=500)
    x, c = table_[:, [0, 2]], table_[:, [1, 3]]
    train, test = slice(0, 400), slice(400, 500)
    conditional = data.fit_gaussian_nll(x[train], x[test], train_context=c[train],
                                        test_context=c[test])
    joint = data.fit_gaussian_nll(table_[train], table_[test])
    marginal = data.fit_gaussian_nll(c[train], c[test])
    assert conditional == pytest.approx(joint - marginal, abs=1e-9)
    with pytest.raises(ValueError, match="train_context and test_context together"):
        data.fit_gaussian_nll(x[train], x[test], train_context=c[train])


def test_column_rules_name_the_column_and_what_was_expected(tables):
    for name, words in [("constant", "constant 3.5 in all"),
                        ("near_constant", "float32 steps per standard deviation"),
                        ("huge", "values within +-1e+30")]:
        source = data.source(tables[name])  # reading is fine: the rules are for training
        with pytest.raises(ValueError, match=r"column 'r': expected .*" + words.replace(
                "+", r"\+")):
            source.check_columns()
    data.source(tables["small"]).check_columns()  # 1e-13 scale: standardised exactly
    rows = np.random.default_rng(0).normal(size=(50, 3))
    rows[:, 2] = rows[:, 0] - 2 * rows[:, 1]
    with pytest.raises(ValueError, match=r"column 2: expected a column that is not a linear "
                                         r"combination of column 0, column 1"):
        table.check_independent_columns("w", rows)
    # A redundant context column is harmless: the context says the same.
    context = np.stack([rows[:, 0], 2 * rows[:, 0]], axis=1)
    table.check_independent_columns("w", rows[:, 1:2], context)


@pytest.mark.parametrize("scale", [1e-13, 1e20])
def test_an_untrained_model_is_the_gaussian_fit_at_any_scale_float32_holds(scale):
    # The standardisation's moments are taken in float64: columns at 1e-13 or 1e20 scale
    # are modelled exactly (before, the first was taken as constant, the second gave inf).
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2)) @ np.array([[1.0, 0.5], [0.0, 1.0]])
    x[:, 1] *= scale
    x32 = x.astype(np.float32)
    model = tfflow.models.MAF((2,), transforms=1, hidden_units=(8,))
    model.initialize(x32)
    nll = -float(np.mean(model.log_prob(x32)))
    gaussian = data.fit_gaussian_nll(x32.astype(np.float64), x32.astype(np.float64))
    assert nll == pytest.approx(gaussian, abs=1e-3 * max(1.0, abs(gaussian)))
    assert np.all(np.isfinite(model.sample(16, seed=1)))


@pytest.mark.parametrize("column, words", [
    (np.full(64, 7.0), "expected a column that varies, got the constant 7.0 in all 64 rows"),
    (1.0 + 1e-8 * np.arange(64), "expected a column that float32"),  # ~1.5 steps per std
    (np.linspace(-1e35, 1e35, 64), "expected values within +-1e+30"),
])
def test_model_initialisation_refuses_columns_it_cannot_model(column, words):
    x = np.stack([np.random.default_rng(0).normal(size=64), column], axis=1).astype(np.float32)
    model = tfflow.models.MAF((2,), transforms=1, hidden_units=(8,))
    with pytest.raises(ValueError, match=r"StandardizeLayer 'standardize' .* column 1: " +
                       words.replace("(", r"\(").replace("+", r"\+")):
        model.fit(x, epochs=1, verbose=0)


def test_a_constant_context_column_is_conditioned_on_not_refused():
    # One-hot classes (the FlowModel's advice for labels), the first rows all of class 0:
    # the other classes' columns are constant in the initialisation batch. Conditioning on a
    # constant is harmless, so the context's standardisation centres it and leaves it unscaled.
    rng = np.random.default_rng(0)
    context = np.zeros((300, 3), np.float32)
    context[:, 0] = 1.0
    x = (rng.normal(size=(300, 2)) + 1.0).astype(np.float32)
    model = tfflow.models.MAF((2,), transforms=1, hidden_units=(8,), context_shape=(3,))
    model.initialize(x, context=context)
    assert np.all(np.isfinite(model.log_prob(x[:5], context=context[:5])))
    other = np.tile(np.float32([[0.0, 1.0, 0.0]]), (5, 1))
    assert np.all(np.isfinite(model.log_prob(x[:5], context=other)))
    # The modelled columns keep the rule.
    with pytest.raises(ValueError, match=r"StandardizeLayer 'standardize' .* column 1: expected "
                                         r"a column that varies"):
        model.initialize(np.stack([x[:, 0], np.full(300, 2.0, np.float32)], 1),
                         context=context, force=True)
