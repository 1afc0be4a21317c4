"""Interruption: `tfflow-train` killed (SIGKILL) or stopped with Ctrl-C (SIGINT) mid-run
resumes to the uninterrupted result, bit for bit.

Every run is a real process of `bin/tfflow-train`; the signals are real, sent
once the run has written a backup, so they land inside a later epoch.
"""

import dataclasses
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
# --deterministic: with the default time budget the schedule would otherwise
# follow the clock too, and the weights would differ from run to run.
# 12 epochs: the signal is sent after the second, and an epoch of this model takes
# ~0.2 s with one thread per op: the run must outlast the watcher's slowest poll.
FLAGS = ["--scales=1", "--steps_per_scale=1", "--hidden_channels=8", "--batch_size=64",
         "--epochs=12", "--num_samples=4", "--verbose=2", "--deterministic"]


def _train(workdir):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    # Ctrl-C's default action in the run, as a terminal's foreground job has it: a process
    # started with SIGINT ignored (inherited from whoever started pytest) keeps ignoring it.
    return subprocess.Popen([sys.executable, os.path.join(BIN, "tfflow-train"),
                             f"--workdir={workdir}", *FLAGS],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


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


def _stop_after_a_backup(runs):
    """Sends each run {workdir: (process, signal)} its signal once its backup holds two epochs.

    Returns {workdir: (exit status, stdout, stderr)}; a run that ended before its
    signal fails here, with its output.
    """
    waiting = dict(runs)
    deadline = time.monotonic() + TIMEOUT_S
    while waiting:
        assert time.monotonic() < deadline, f"no backup appeared in {list(waiting)}"
        for workdir, (process, signal_number) in list(waiting.items()):
            ended_early = process.poll() is not None
            if _epochs_backed_up(workdir) >= 2 or ended_early:
                process.send_signal(signal_number)
                del waiting[workdir]
                if ended_early:
                    out, err = process.communicate(timeout=TIMEOUT_S)
                    raise AssertionError(f"{workdir} ended (status {process.returncode}) "
                                         f"before its signal:\n{out[-2000:]}\n{err[-2000:]}")
        time.sleep(0.02)
    ended = {}
    for workdir, (process, _) in runs.items():
        out, err = process.communicate(timeout=TIMEOUT_S)
        ended[workdir] = (process.returncode, out, err)
    return ended


def test_killed_and_interrupted_runs_started_again_end_with_the_uninterrupted_weights(tmp_path):
    reference, killed, interrupted = (tmp_path / name for name in
                                      ("reference", "killed", "interrupted"))
    processes = [_train(workdir) for workdir in (reference, killed, interrupted)]
    uninterrupted = processes[0]
    try:
        ended = _stop_after_a_backup({killed: (processes[1], signal.SIGKILL),
                                      interrupted: (processes[2], signal.SIGINT)})
        assert ended[killed][0] == -signal.SIGKILL, "the run ended before the kill"
        assert not (killed / "model.keras").exists()  # it really died mid-run
        # Ctrl-C: one line naming the workdir and how to resume, exit status 130.
        int_code, int_out, int_err = ended[interrupted]
        assert int_code == 130, int_out[-2000:] + int_err[-3000:]
        assert len(int_err.splitlines()) == 1, int_err[-3000:]
        assert int_err.startswith(f"tfflow-train: interrupted; the run is saved in "
                                  f"{interrupted} (backup after epoch "), int_err
        assert "run the same command to resume from epoch" in int_err, int_err
        assert (interrupted / "backup" / "state.json").is_file()  # the backup is kept
        assert not (interrupted / "model.keras").exists()
        resumed = {name: _train(tmp_path / name) for name in ("killed", "interrupted")}
        processes += resumed.values()
        outputs = {name: process.communicate(timeout=TIMEOUT_S)
                   for name, process in resumed.items()}
        reference_out, reference_err = uninterrupted.communicate(timeout=TIMEOUT_S)
        assert uninterrupted.returncode == 0, reference_out[-3000:] + reference_err[-3000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    summary = lambda text: _last_line(text).split(") in ")[0]  # noqa: E731  (not the time)
    for name, (out, err) in outputs.items():
        assert resumed[name].returncode == 0, (name, out[-3000:] + err[-3000:])
        assert "Resuming from" in out and "at epoch " in out, out
        resumed_at = int(out.split("at epoch ", 1)[1].split("/", 1)[0])
        assert resumed_at >= 3, name  # at least two epochs were not trained again
        # The same epochs, best epoch and test result, and the very same weights.
        assert summary(out) == summary(reference_out), name
        assert "12 epochs" in _last_line(out)
        for mine, theirs in zip(_weights(tmp_path / name), _weights(reference), strict=True):
            np.testing.assert_array_equal(mine, theirs, err_msg=name)
        assert not (tmp_path / name / "backup").exists()  # deleted at the end, as Keras does
        assert not [entry for entry in os.listdir(tmp_path / name)
                    if entry.startswith(".tmp-")]


def test_a_workdir_holding_a_different_run_is_refused_and_the_same_run_is_not(tmp_path):
    from tfflow import training  # pylint: disable=import-outside-toplevel
    from tfflow.training import checkpoints  # pylint: disable=import-outside-toplevel
    config = training.TrainConfig(model="realnvp", dataset="two_moons", num_examples=128,
                                  num_couplings=1, hidden_units=(4,), epochs=1,
                                  workdir=str(tmp_path), verbose=0)
    (tmp_path / "config.json").write_text(config.resolved().to_json())
    checkpoints.check_workdir_holds_this_run(config.resolved())  # same run: accepted
    other = dataclasses.replace(config, model="nice").resolved()
    with pytest.raises(training.UserError, match=r"holds a different run \(realnvp on "
                       r"two_moons; this one is nice on two_moons; model: 'realnvp' there"):
        checkpoints.check_workdir_holds_this_run(other)
    # What changes neither the model nor the arithmetic may differ.
    checkpoints.check_workdir_holds_this_run(
        dataclasses.replace(config, verbose=2, num_samples=9).resolved())


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
    longer = training.train(dataclasses.replace(config, epochs=3))
    out = capsys.readouterr().out
    assert "Continuing the finished run in" in out and "epochs 1 -> 3: epochs 2 to 3" in out, out
    assert "at epoch 2/3" in out, out
    assert longer.epochs_run == 3 and len(longer.history["loss"]) == 3
    # Another model in the same workdir: refused, unless --overwrite.
    other = dataclasses.replace(config, model="nice", num_couplings=2)
    with pytest.raises(training.UserError, match="or --overwrite to replace that one"):
        training.train(other)
    replaced = training.train(other, overwrite=True)
    assert "Overwriting the run in" in capsys.readouterr().out
    assert replaced.epochs_run == 1 and replaced.config.model == "nice"
    assert not (tmp_path / "backup").exists()
