"""Every script in examples/ runs as a user runs it (a fresh process), with its quick settings.

Each example takes `--quick` (or `TFFLOW_EXAMPLES_QUICK=1`): a tiny model and a few
training steps, about 10-35 CPU seconds each on 2 cores (most of it TensorFlow's start and
tracing). The tests check what each example promises in its output, not the model quality
of a few-step run.
"""

import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def _run(script: str, tmp_path, *args: str, timeout: int = 600) -> str:
    env = dict(os.environ, TFFLOW_EXAMPLES_QUICK="1", TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr[-4000:]}"
    return result.stdout


def _number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in the output:\n{text}"
    return float(match.group(1))


def test_every_example_is_tested_and_documented():
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    assert scripts == ["compose_with_tfp.py", "glow_digits.py", "table_anomaly_scores.py"]
    readme = (EXAMPLES.parent / "README.md").read_text(encoding="utf-8")
    for script in scripts:
        text = (EXAMPLES / script).read_text(encoding="utf-8")
        assert text.startswith('"""') and "--quick" in text, script  # docstring: what and how
        assert f"examples/{script}" in readme, f"the README's Examples section lists {script}"


def test_glow_digits(tmp_path):
    out = _run("glow_digits.py", tmp_path, "--output_dir=run")  # --quick from the env var
    bits = _number(r"test bits/dim: ([0-9.]+)", out)
    assert 0. < bits < 8., out
    assert _number(r"max \|difference\| ([0-9.e+-]+) nats", out) < 1e-3
    assert "all rows valid: True" in out and "'sample'" in out
    png = tf.io.decode_png(tf.io.read_file(str(tmp_path / "run" / "samples_T0.7.png")))
    # 32 samples of 8x8, 8 per row, each cell scaled to 32 pixels plus a 1-pixel border.
    assert png.shape[0] < png.shape[1] and png.shape[-1] == 1, png.shape
    assert (tmp_path / "run" / "saved_model" / "saved_model.pb").exists()


def test_table_anomaly_scores(tmp_path):
    out = _run("table_anomaly_scores.py", tmp_path)
    assert "validation NLL:" in out
    # The NaN row is answered per row: valid=False and a NaN score; the rest are scored.
    assert re.search(r"205  invalid: valid=False, log_p=nan", out), out
    assert "206 incoming rows, 205 valid" in out
    planted = _number(r"planted anomalies flagged: (\d) of 5", out)
    normal = _number(r"normal rows flagged: (\d+) of 200", out)
    assert planted >= 1 and normal <= 12, out
    # Scoring again from the SavedModel alone, without training, gives the same report.
    again = _run("table_anomaly_scores.py", tmp_path, "--saved_model=anomaly_out/model/1")
    assert again.split("scoring with", 1)[1] == out.split("scoring with", 1)[1]


def test_compose_with_tfp(tmp_path):
    out = _run("compose_with_tfp.py", tmp_path)
    mixture = _number(r"integral over \[-6, 6\]\^2: ([0-9.]+)", out)
    square = _number(r"integral over the unit square: ([0-9.]+)", out)
    # Both compositions are normalised densities (midpoint rule on a 400 x 400 grid).
    np.testing.assert_allclose([mixture, square], [1., 1.], atol=0.02)
    assert "check_bijector(Chain([Sigmoid, ActNorm, AffineCoupling, trained flow])): passed" \
        in out


@pytest.mark.parametrize("script", ["compose_with_tfp.py", "glow_digits.py",
                                    "table_anomaly_scores.py"])
def test_example_help_answers(script, tmp_path):
    # --help answers before TensorFlow loads: the examples import it inside main().
    result = subprocess.run([sys.executable, str(EXAMPLES / script), "--help"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--quick" in result.stdout, result.stderr
