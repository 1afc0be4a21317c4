"""The command-line apps end to end, each in its own process, on a tiny budget.

One tiny Glow run on digits and one tiny RealNVP run on two moons are shared
by the tests that read their workdirs (`tfflow-sample`, `tfflow-evaluate`).
"""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

BIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bin")
TINY_GLOW = ["--levels=1", "--steps_per_level=1", "--hidden_channels=8"]
TIMEOUT_S = 120


def _command(app, *flags):
    # The script from this checkout, run by this interpreter: no PATH needed.
    return [sys.executable, os.path.join(BIN, app), *flags]


def _run(app, *flags, cwd=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(_command(app, *flags), capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=TIMEOUT_S, check=False)


def _last_line(text):
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _check_ok(result):
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("digits")
    result = _run("tfflow-train", f"--workdir={workdir}", *TINY_GLOW, "--epochs=1",
                  "--batch_size=128", "--num_samples=4", "--verbose=2")
    return workdir, result


@pytest.fixture(scope="module")
def moons_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("moons")
    result = _run("tfflow-train", "--model=realnvp", "--dataset=two_moons",
                  "--num_examples=256", "--num_couplings=2", "--hidden_units=16",
                  "--epochs=1", f"--workdir={workdir}", "--verbose=0")
    return workdir, result


def test_train_on_digits_writes_the_run_and_ends_with_test_bits_per_dim(digits_run):
    workdir, result = digits_run
    _check_ok(result)
    for name in ("model.keras", "config.json", "samples_T0.7.png", "samples_T1.0.png"):
        assert (workdir / name).is_file(), name
    for run in ("train", "validation", "samples"):
        assert list((workdir / "logs" / run).glob("events.out.tfevents.*")), run
    last = _last_line(result.stdout)
    assert "test" in last and "bits/dim" in last, last
    config = json.loads((workdir / "config.json").read_text())
    assert config["model"] == "glow" and config["dataset"] == "digits"
    assert config["levels"] == 1 and config["epochs"] == 1
    assert (workdir / "samples_T0.7.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sample_writes_npy_at_a_temperature(digits_run, tmp_path):
    workdir, _ = digits_run
    output = tmp_path / "s.npy"
    result = _run("tfflow-sample", f"--workdir={workdir}", "--num_samples=5",
                  "--temperature=0.5", f"--output={output}")
    _check_ok(result)
    samples = np.load(output)
    assert samples.shape == (5, 8, 8, 1)
    assert np.all(np.isfinite(samples))


def test_evaluate_reports_bits_per_dim_and_round_trip_error(digits_run):
    workdir, train_result = digits_run
    _check_ok(train_result)
    result = _run("tfflow-evaluate", f"--workdir={workdir}")
    _check_ok(result)
    last = _last_line(result.stdout)
    assert "bits/dim" in last and "round-trip error" in last, last
    error = float(last.rsplit("round-trip error", 1)[1].split()[0].rstrip(",;"))
    assert error < 1e-4
    assert "1x1 conv" in result.stdout and "condition number" in last, result.stdout
    # The same test bits/dim as training reported (same weights, same noise seed).
    bits = lambda line: float(line.split(" bits/dim")[0].rsplit(" ", 1)[1])  # noqa: E731
    assert bits(last) == pytest.approx(bits(_last_line(train_result.stdout)), abs=1e-4)


def test_export_writes_a_versioned_saved_model(digits_run, tmp_path):
    workdir, train_result = digits_run
    _check_ok(train_result)
    result = _run("tfflow-export", f"--workdir={workdir}", f"--export_dir={tmp_path / 'serve'}")
    _check_ok(result)
    assert (tmp_path / "serve" / "1" / "saved_model.pb").is_file()
    again = _run("tfflow-export", f"--workdir={workdir}", f"--export_dir={tmp_path / 'serve'}",
                 "--version=1")
    assert again.returncode == 2 and "already exists" in again.stderr
    assert "Traceback" not in again.stderr


def test_train_on_two_moons_writes_the_density_picture(moons_run):
    workdir, result = moons_run
    _check_ok(result)
    assert (workdir / "density.png").is_file()
    assert (workdir / "model.keras").is_file()
    last = _last_line(result.stdout)
    assert "bits/dim" in last and "Gaussian NLL" in last, last


def test_every_train_config_field_has_a_flag_with_the_same_default():
    from absl import flags  # pylint: disable=import-outside-toplevel
    from tfflow import cli, training  # pylint: disable=import-outside-toplevel

    flag_values = flags.FlagValues()
    cli.define_train_flags(flag_values)
    defaults = training.TrainConfig()
    for field in dataclasses.fields(training.TrainConfig):
        if field.name in ("workdir", "verbose"):  # resolved later / CLI shows progress bars
            continue
        assert field.name in flag_values, field.name
        assert flag_values[field.name].default == getattr(defaults, field.name), field.name
    for define in (cli.define_sample_flags, cli.define_evaluate_flags):
        define(flags.FlagValues())  # each app's own flags define without clashes


def _corrupt_run(tmp_path, digits_run):
    """A copy of the digits run whose model.keras is cut short, as a crash mid-copy leaves it."""
    workdir, _ = digits_run
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text((workdir / "config.json").read_text())
    (corrupt / "model.keras").write_bytes((workdir / "model.keras").read_bytes()[:1000])
    return corrupt


def test_user_errors_exit_2_with_one_line_and_no_traceback(tmp_path, digits_run):
    corrupt = _corrupt_run(tmp_path, digits_run)
    digits_workdir, _ = digits_run
    # (argv, words the one-line message must contain)
    cases = [
        (("tfflow-train", "--model=nonesuch", f"--workdir={tmp_path / 'a'}"), ["nonesuch"]),
        (("tfflow-train", "--dataset=nonesuch_set", f"--workdir={tmp_path / 'b'}"),
         ["nonesuch_set"]),
        (("tfflow-evaluate", f"--workdir={tmp_path / 'empty'}"), ["model.keras"]),
        (("tfflow-evaluate", f"--workdir={corrupt}"),
         ["cannot load", "corrupt or not a tfflow model file"]),
        (("tfflow-train", "--model=realnvp", f"--workdir={digits_workdir}"),
         ["holds a different run", "glow on digits", "realnvp on digits"]),
        (("tfflow-train", "--levels=5", f"--workdir={tmp_path / 'c'}"),
         ["5 level(s)", "divisible by 32", "(8, 8, 1)", "fewer levels"]),
        (("tfflow-train", "--dataset=mnist", f"--data_dir={tmp_path / 'no_tfds'}",
          f"--workdir={tmp_path / 'd'}"), ["not prepared", "tfds build mnist", "--data_dir"]),
        (("tfflow-train", "--model=realnvp", "--dataset=two_moons", "--num_examples=512",
          "--num_couplings=2", "--hidden_units=8", "--batch_size=128", "--learning_rate=1e6",
          "--warmup_steps=0", "--ema_momentum=0", "--verbose=0", "--num_samples=4",
          f"--workdir={tmp_path / 'e'}"),
         ["training diverged", "at step", "(epoch", "layer '", "last good model",
          str(tmp_path / "e" / "model.keras")]),
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    # Three at a time: each spends most of its time importing TensorFlow.
    for start in range(0, len(cases), 3):
        processes = [(subprocess.Popen(_command(*argv), stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True, env=env), words)
                     for argv, words in cases[start:start + 3]]
        for process, words in processes:
            stdout, stderr = process.communicate(timeout=TIMEOUT_S)
            assert process.returncode == 2, stdout + stderr
            assert "Traceback" not in stderr, stderr
            last = _last_line(stderr)
            assert last.startswith("tfflow-") and ": error: " in last, stderr
            for word in words:
                assert word in last, (word, last)
    assert not (tmp_path / "a").exists()
    assert not (tmp_path / "d").exists()  # nothing written for a run that cannot start
