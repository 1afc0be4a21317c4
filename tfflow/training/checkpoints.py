"""What survives a crash: atomic writes, the per-epoch backup a killed run resumes from.

Also what `train` does with a workdir that already holds a run
(`plan_workdir`): resume it, continue it for longer, overwrite it, or refuse.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import os
import shutil
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfflow.training.callbacks import AnnealLearningRate, ResumableEarlyStopping, TimeBudget
from tfflow.training.config import (CONFIG_FILE, LOG_DIR, MODEL_FILE, RENAMED_FIELDS,
                                    RESUMABLE_DIFFERENCES, TrainConfig, renamed_fields)
from tfflow.training.errors import UserError

__all__ = [
    "Backup",
    "BACKUP_DIR",
    "BACKUP_STATE_FILE",
    "CONTINUABLE_DIFFERENCES",
    "FINISHED_DIR",
    "WorkdirPlan",
    "apply_workdir_plan",
    "check_workdir_holds_this_run",
    "plan_workdir",
    "read_backup",
    "remove_temporaries",
    "restore_backup",
    "save_model",
    "TMP_PREFIX",
    "write_text_atomically",
]


# `train`'s resumable state; deleted when the run ends (see `Backup`).
BACKUP_DIR = "backup"


BACKUP_STATE_FILE = "state.json"


# The state a finished run ended in, in the backup's format: a later run of the
# same config with more epochs (or budget, or patience) continues from it.
FINISHED_DIR = "finished"


# Config fields in which a later run may differ from the finished or
# interrupted run in its workdir and continue it: they change how long it
# trains, not what or how.
CONTINUABLE_DIFFERENCES: tuple[str, ...] = ("epochs", "max_train_seconds", "patience")


# Temporary files of the atomic writes start with this; no loader reads them,
# and `train` removes the ones a killed process left behind.
TMP_PREFIX = ".tmp-"


class Backup(keras.callbacks.Callback):
    """Writes `train`'s resumable state into `directory` at the start of every epoch.

    At an epoch's start (after `SwapEMAWeights` has put the raw weights back)
    the state is exactly what the next epoch starts from: every model and
    optimizer variable (moving averages and step counter included), the early
    stopping state and best weights, the learning-rate schedule's step, the
    training seconds spent and the history so far. The variables go into an
    `.npz` (fast: no per-epoch `.keras` zip), then `state.json` names it; both
    are written atomically, and `state.json` last, so a kill at any moment
    leaves the previous complete backup. `history` collects every epoch's logs,
    resumed ones included. Only `writer` processes write.
    """

    def __init__(self, directory: str, *, budget: TimeBudget,
                 anneal: AnnealLearningRate | None, early_stopping: ResumableEarlyStopping,
                 history: dict[str, list[float]] | None = None, writer: bool = True) -> None:
        super().__init__()
        self.directory = directory
        self.budget, self.anneal, self.early_stopping = budget, anneal, early_stopping
        self.history: dict[str, list[float]] = {k: list(v) for k, v in (history or {}).items()}
        self.writer = writer
        self._first_epoch_of_fit = True
        self._best_file: str | None = None
        self._best_epoch_saved: int | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._first_epoch_of_fit = True

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._first_epoch_of_fit:  # nothing new since the last backup or the start
            self._first_epoch_of_fit = False
            return
        if self.writer:
            self.save(epoch)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(np.asarray(value).reshape(-1)[0]))

    def save(self, epochs_done: int, directory: str | None = None) -> None:
        """Writes the state after `epochs_done` epochs into `directory` (default: the backup's).

        `train` writes the final state of a finished run into its
        `FINISHED_DIR` this way, so that a longer run can continue it.
        """
        directory = directory or self.directory
        elsewhere = directory != self.directory
        os.makedirs(directory, exist_ok=True)
        weights_file = f"epoch-{epochs_done:05d}.npz"
        _save_arrays(os.path.join(directory, weights_file),
                     [v.numpy() for v in _training_variables(self.model)])
        stopping = self.early_stopping
        best_file = None if elsewhere else self._best_file
        if stopping.best_weights is not None and (elsewhere or
                                                  stopping.best_epoch != self._best_epoch_saved):
            best_file = f"best-{stopping.best_epoch:05d}.npz"
            _save_arrays(os.path.join(directory, best_file), stopping.best_weights)
            if not elsewhere:  # written once per best epoch into the backup
                self._best_file, self._best_epoch_saved = best_file, stopping.best_epoch
        state = {
            "format": 1, "epochs_done": epochs_done, "weights": weights_file,
            "best_weights": best_file, "early_stopping": stopping.state(),
            "anneal_step": None if self.anneal is None else self.anneal.step,
            "train_seconds": self.budget.elapsed(), "history": self.history,
        }
        write_text_atomically(os.path.join(directory, BACKUP_STATE_FILE),
                               json.dumps(state, indent=1) + "\n")
        keep = {weights_file, best_file, BACKUP_STATE_FILE}
        for name in os.listdir(directory):
            if name not in keep:
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(directory, name))


def _training_variables(model: Any) -> list[tf.Variable]:
    """Every variable a resumed run needs, in a fixed order: the model's, then the optimizer's."""
    return list(model.weights) + list(model.optimizer.variables)


def check_workdir_holds_this_run(config: TrainConfig) -> dict[str, Any] | None:
    """Refuses a workdir whose config.json describes a different run.

    The same run (every field equal but `RESUMABLE_DIFFERENCES` and
    `CONTINUABLE_DIFFERENCES`) is accepted: see `plan_workdir` for what
    `train` does with it.

    Returns:
      {field: (value there, value here)} for the continuable fields that
      differ, or None when the workdir holds no run.
    """
    path = os.path.join(config.workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            stored = json.load(handle)
        if not isinstance(stored, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as error:
        raise UserError(f"workdir {config.workdir!r} holds an unreadable {CONFIG_FILE} "
                        f"({error}); use another workdir, or --overwrite to replace it.") from None
    wanted = json.loads(config.to_json())
    # A field added to TrainConfig after that run was written had its default there.
    # A field renamed since is compared under its new name.
    defaults = {field.name: field.default for field in dataclasses.fields(TrainConfig)
                if field.default is not dataclasses.MISSING and field.name not in RENAMED_FIELDS}
    stored = {**json.loads(json.dumps(defaults)), **renamed_fields(stored)}
    differences = sorted(key for key in set(stored) | set(wanted)
                         if key not in RESUMABLE_DIFFERENCES
                         and stored.get(key) != wanted.get(key))
    blocking = [key for key in differences if key not in CONTINUABLE_DIFFERENCES]
    if not blocking:
        return {key: (stored.get(key), wanted.get(key)) for key in differences}
    shown = "; ".join(f"{key}: {stored.get(key)!r} there, {wanted.get(key)!r} here"
                      for key in blocking[:4])
    more = f" and {len(blocking) - 4} more" if len(blocking) > 4 else ""
    raise UserError(
        f"workdir {config.workdir!r} holds a different run ({stored.get('model')} on "
        f"{stored.get('dataset')}; this one is {config.model} on {config.dataset}; "
        f"{shown}{more}); use another workdir, or --overwrite to replace that one.")


@dataclasses.dataclass(frozen=True)
class WorkdirPlan:
    """What `train` does with its workdir; `plan_workdir` decides, `apply_workdir_plan` acts.

    Attributes:
      action: "new" (no run there), "resume" (from an interrupted run's
        backup), "continue" (a finished run, trained on from its final
        state) or "overwrite" (the old run's files are removed first).
      message: The line `train` prints about it, or None.
    """

    action: str
    message: str | None = None


def plan_workdir(config: TrainConfig, *, overwrite: bool = False) -> WorkdirPlan:
    """Decides what `train` does with a workdir that may hold a run; changes nothing.

    * overwrite: the run there (if any) is removed first, whatever it was;
    * a different run (see `check_workdir_holds_this_run`): refused;
    * an interrupted run (a backup): resumed, with the new `epochs`,
      `max_train_seconds` or `patience` where they changed;
    * a finished run of the same config: refused, there is nothing to train;
    * a finished run, now with more epochs, a larger budget or more
      patience: continued from the state it finished in.

    Raises:
      UserError: with a one-line message saying what to do instead.
    """
    workdir = config.workdir
    if overwrite:
        if not _run_files(workdir):
            return WorkdirPlan("new")
        return WorkdirPlan("overwrite", f"Overwriting the run in {workdir} (--overwrite): its "
                           "model, backup, logs and pictures are removed first.")
    changed = check_workdir_holds_this_run(config)
    if changed is None:
        return WorkdirPlan("new")
    shown = ", ".join(f"{key} {there!r} -> {here!r}" for key, (there, here) in changed.items())
    if read_backup(os.path.join(workdir, BACKUP_DIR)) is not None:
        return WorkdirPlan("resume", f"Continuing the interrupted run in {workdir} with {shown}."
                           if changed else None)
    finished = read_backup(os.path.join(workdir, FINISHED_DIR))
    if finished is None:
        if os.path.isfile(os.path.join(workdir, MODEL_FILE)):
            raise UserError(f"workdir {workdir!r} holds a run that cannot be continued (it "
                            "diverged, or an older tfflow wrote it); use another workdir, or "
                            "--overwrite to train it again from scratch.")
        return WorkdirPlan("new")  # killed before its first backup: nothing to keep
    done = int(finished["epochs_done"])
    if not changed:
        raise UserError(f"workdir {workdir!r} already holds this run, finished after {done} "
                        f"epoch{'s' if done != 1 else ''}; pass a larger --epochs or "
                        "--max_train_seconds to continue it, or --overwrite to train it again "
                        "from scratch.")
    if done >= config.epochs:
        raise UserError(f"workdir {workdir!r} holds this run, finished after {done} epochs; "
                        f"--epochs={config.epochs} adds none: pass --epochs above {done} to "
                        "continue it, or --overwrite to train it again from scratch.")
    return WorkdirPlan("continue", f"Continuing the finished run in {workdir} with {shown}: "
                       f"epochs {done + 1} to {config.epochs}.")


def apply_workdir_plan(config: TrainConfig, plan: WorkdirPlan) -> None:
    """Acts on `plan`: removes the old run's files, or turns a finished state into the backup."""
    workdir = config.workdir
    if plan.action == "overwrite":
        for path in _run_files(workdir):
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.remove(path)
    elif plan.action == "continue":
        # `train` resumes from a backup; the finished state becomes that backup.
        os.replace(os.path.join(workdir, FINISHED_DIR), os.path.join(workdir, BACKUP_DIR))


def _run_files(workdir: str) -> list[str]:
    """The files and folders `train` writes in `workdir` that exist (nothing else is touched)."""
    names = [CONFIG_FILE, MODEL_FILE, BACKUP_DIR, FINISHED_DIR, LOG_DIR, "density.png"]
    paths = [os.path.join(workdir, name) for name in names]
    paths += glob.glob(os.path.join(glob.escape(workdir), "samples_T*.png"))
    return [path for path in paths if os.path.exists(path)]


def read_backup(directory: str) -> dict[str, Any] | None:
    """The backup's state (see `Backup`), or None when there is none to resume."""
    path = os.path.join(directory, BACKUP_STATE_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
        if state.get("format") != 1:
            raise ValueError(f"unknown format {state.get('format')!r}")
        return state
    except (OSError, ValueError, AttributeError) as error:
        raise UserError(f"cannot resume from {path}: {error}; remove {directory} to "
                        "train from the start.") from None


def restore_backup(directory: str, state: dict[str, Any],
                    model: Any) -> list[np.ndarray] | None:
    """Loads the backed-up variables into `model`; returns the best weights (or None)."""
    try:
        values = _load_arrays(os.path.join(directory, state["weights"]))
        best = state.get("best_weights")
        best_weights = _load_arrays(os.path.join(directory, best)) if best else None
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"cannot resume from {directory}: {error}; remove it to train from "
                        "the start.") from None
    variables = _training_variables(model)
    shapes = [tuple(v.shape) for v in variables]
    if [tuple(v.shape) for v in values] != shapes:
        raise UserError(f"the backup in {directory} does not fit this model (made by another "
                        "version of tfflow?); remove it to train from the start.")
    for variable, value in zip(variables, values):
        variable.assign(value)
    return best_weights


def _atomic_write(path: str, write: Callable[[str], Any]) -> str:
    """Runs `write(temporary_path)`, syncs it to disk, then renames it to `path`.

    The temporary file sits in the same directory (a rename across file systems
    would not be atomic) and keeps `path`'s name as its suffix (Keras checks
    ".keras" and ".weights.h5"), behind `TMP_PREFIX`. A kill at any moment
    leaves either the old `path` or the new one, never a partial file under
    that name; an error removes the temporary file and re-raises.
    """
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f"{TMP_PREFIX}{os.getpid()}-{name}")
    try:
        write(temporary)
        descriptor = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise
    # The rename itself reaches the disk only with the directory.
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    return path


def write_text_atomically(path: str, text: str) -> str:
    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
    return _atomic_write(path, write)


def _save_arrays(path: str, arrays: list[np.ndarray]) -> str:
    def write(temporary: str) -> None:
        with open(temporary, "wb") as handle:  # a handle: np.savez adds no suffix
            np.savez(handle, *arrays)
    return _atomic_write(path, write)


def _load_arrays(path: str) -> list[np.ndarray]:
    with np.load(path) as stored:
        return [stored[f"arr_{i}"] for i in range(len(stored.files))]


def save_model(model: Any, path: str) -> str:
    """`model.save(path)`, atomically (see `_atomic_write`); returns `path`."""
    return _atomic_write(path, model.save)


def remove_temporaries(*directories: str) -> None:
    """Removes what killed processes left of their atomic writes."""
    for directory in directories:
        if not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            if name.startswith(TMP_PREFIX):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(directory, name))
