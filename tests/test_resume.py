"""Interruption: `tfflow-train` killed with SIGKILL mid-run resumes to the uninterrupted result.

Both runs are real processes of `bin/tfflow-train`; the kill is a real SIGKILL
sent once the run has written a backup, so it lands inside a later epoch.
"""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

BIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bin")
TIMEOUT_S = 240
# Tiny Glow on digits: ActNorm, LU 1x1 conv, dequantisation noise, the moving
# average of the weights, the cosine schedule and early stopping all resume.
FLAGS = ["--levels=1", "--steps_per_level=1", "--hidden_channels=8", "--batch_size=64",
         "--epochs=8", "--max_train_seconds=0", "--num_samples=4", "--verbose=2"]


def _train(workdir):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen([sys.executable, os.path.join(BIN, "tfflow-train"),
                             f"--workdir={workdir}", *FLAGS],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _epochs_backed_up(workdir):
    try:
        with open(os.path.join(workdir, "backup", "state.json"), encoding="utf-8") as handle:
            return json.load(handle)["epochs_done"]
    except (OSError, ValueError):  # not there yet (it is written atomically: never partial)
        return 0


def _weights(workdir):
    from tfflow import models  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    return keras.models.load_model(os.path.join(workdir, "model.keras")).get_weights()


def _last_line(text):
    return [line for line in text.splitlines() if line.strip()][-1]


def test_a_killed_run_started_again_ends_with_the_uninterrupted_weights(tmp_path):
    reference, victim = tmp_path / "reference", tmp_path / "victim"
    uninterrupted = _train(reference)
    killed = _train(victim)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while _epochs_backed_up(victim) < 2 and killed.poll() is None:
            assert time.monotonic() < deadline, "no backup appeared"
            time.sleep(0.02)
        os.kill(killed.pid, signal.SIGKILL)
        killed.communicate(timeout=TIMEOUT_S)
        assert killed.returncode == -signal.SIGKILL, "the run ended before the kill"
        assert not (victim / "model.keras").exists()  # it really died mid-run
        resumed = _train(victim)
        out, err = resumed.communicate(timeout=TIMEOUT_S)
        assert resumed.returncode == 0, out[-3000:] + err[-3000:]
        reference_out, reference_err = uninterrupted.communicate(timeout=TIMEOUT_S)
        assert uninterrupted.returncode == 0, reference_out[-3000:] + reference_err[-3000:]
    finally:
        for process in (uninterrupted, killed):
            if process.poll() is None:
                process.kill()
    assert "Resuming from" in out and "at epoch " in out, out
    resumed_at = int(out.split("at epoch ", 1)[1].split("/", 1)[0])
    assert resumed_at >= 3  # at least two epochs were not trained again
    # The same epochs, best epoch and test result, and the very same weights.
    summary = lambda text: _last_line(text).split(") in ")[0]  # noqa: E731  (not the time)
    assert summary(out) == summary(reference_out)
    assert "8 epochs" in _last_line(out)
    for mine, theirs in zip(_weights(victim), _weights(reference), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert not (victim / "backup").exists()  # deleted at the successful end, as Keras does
    assert not [name for name in os.listdir(victim) if name.startswith(".tmp-")]


def test_a_workdir_holding_a_different_run_is_refused_and_the_same_run_is_not(tmp_path):
    from tfflow import training  # pylint: disable=import-outside-toplevel
    from tfflow.training import checkpoints  # pylint: disable=import-outside-toplevel
    config = training.TrainConfig(model="realnvp", dataset="two_moons", num_examples=128,
                                  num_couplings=1, hidden_units=(4,), epochs=1,
                                  workdir=str(tmp_path), verbose=0)
    (tmp_path / "config.json").write_text(config.resolved().to_json())
    checkpoints.check_workdir_holds_this_run(config.resolved())  # same run: accepted
    other = training.TrainConfig(**{**config.__dict__, "model": "nice"}).resolved()
    with pytest.raises(training.UserError, match=r"holds a different run \(realnvp on "
                       r"two_moons; this one is nice on two_moons; model: 'realnvp' there"):
        checkpoints.check_workdir_holds_this_run(other)
    # What changes neither the model nor the arithmetic may differ.
    checkpoints.check_workdir_holds_this_run(
        training.TrainConfig(**{**config.__dict__, "verbose": 2, "num_samples": 9}).resolved())


def test_a_finished_run_is_refused_continued_with_more_epochs_or_overwritten(tmp_path, capsys):
    from tfflow import training  # pylint: disable=import-outside-toplevel
    config = training.TrainConfig(model="realnvp", dataset="two_moons", num_examples=128,
                                  num_couplings=1, hidden_units=(4,), epochs=1, batch_size=64,
                                  max_train_seconds=0, num_samples=4, workdir=str(tmp_path),
                                  verbose=2)
    training.train(config)
    assert (tmp_path / "finished" / "state.json").is_file()
    assert not (tmp_path / "backup").exists()
    # The same run again: there is nothing to train, and it says what to do.
    with pytest.raises(training.UserError, match=r"already holds this run, finished after 1 "
                       r"epoch; pass a larger --epochs .* or --overwrite"):
        training.train(config)
    capsys.readouterr()
    # More epochs: continued from the state it finished in, not trained again.
    longer = training.train(training.TrainConfig(**{**config.__dict__, "epochs": 3}))
    out = capsys.readouterr().out
    assert "Continuing the finished run in" in out and "epochs 1 -> 3: epochs 2 to 3" in out, out
    assert "at epoch 2/3" in out, out
    assert longer.epochs_run == 3 and len(longer.history["loss"]) == 3
    # Another model in the same workdir: refused, unless --overwrite.
    other = training.TrainConfig(**{**config.__dict__, "model": "nice", "num_couplings": 2})
    with pytest.raises(training.UserError, match="or --overwrite to replace that one"):
        training.train(other)
    replaced = training.train(other, overwrite=True)
    assert "Overwriting the run in" in capsys.readouterr().out
    assert replaced.epochs_run == 1 and replaced.config.model == "nice"
    assert not (tmp_path / "backup").exists()
