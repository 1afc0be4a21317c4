"""`train`, `evaluate`, `load_run`: a whole run, from flags to files.

`train` reads as its steps: resolve the data once (`RunData`), build and
compile the model, prepare the workdir, start or resume, assemble the
callbacks, fit, finish (save, pictures, evaluate). Pictures and sampling live
in `pictures`.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfflow import data as tfdata
from tfflow.training.callbacks import (AnnealLearningRate, DivergenceGuard, NonFiniteLoss,
    ResumableEarlyStopping, TensorBoardLogger, TimeBudget)
from tfflow.training.checkpoints import (BACKUP_DIR, FINISHED_DIR, Backup, WorkdirPlan,
    apply_workdir_plan, plan_workdir, read_backup, remove_temporaries, restore_backup, save_model,
    write_text_atomically)
from tfflow.training.config import (ARCHITECTURE_FIELDS, CONFIG_FILE, EvalResult, LOG_DIR,
    MODEL_FILE, TrainConfig, TrainResult)
from tfflow.training.determinism import enable_determinism
from tfflow.training.errors import TrainingDiverged, UserError
from tfflow.training.health import conv1x1_condition_numbers, find_non_finite_layer
from tfflow.training.pictures import epoch_pictures, plots_note, write_pictures
from tfflow.training.run_data import RunData
from tfflow.training.strategies import is_chief, make_strategy
from tfflow.training.threads import use_intra_op_threads

__all__ = ["evaluate", "load_run", "train"]


def train(config: TrainConfig, *, overwrite: bool = False) -> TrainResult:
    """Trains, saves, pictures and evaluates a flow as `config` says.

    Resumable: at the start of every epoch the whole training state goes to
    `<workdir>/backup/` (written atomically; deleted when the run ends). A run
    killed at any moment, started again with the same config and workdir,
    continues from the last epoch it began and ends with the weights an
    uninterrupted run would have (the data order and noise of each epoch are
    replayed). A workdir holding a run with a different config is refused.

    A finished run leaves the state it ended in under `<workdir>/finished/`:
    started again with more `epochs` (or a larger `max_train_seconds`, or more
    `patience`) it continues from there; with the same config it is refused,
    as there is nothing to train (`checkpoints.plan_workdir`). `overwrite`
    removes the run in the workdir first, whatever it was.

    With `config.deterministic`, TensorFlow's op determinism is turned on
    (`enable_determinism`; it stays on in this process) and the learning-rate
    schedule follows the steps only (not the clock): two runs of the same
    config, and a killed run resumed, end with bit-identical weights, unless
    the time budget stops them (where it stops depends on the clock).

    A NaN or infinite training loss stops the run at that step: the model
    gets back the weights that produced it, a diagnostic pass names the layer
    at fault when it can, `model.keras` is left holding the last good model
    (the best epoch so far, or the initialised model), and `TrainingDiverged`
    is raised.

    Args:
      config: The run's settings.
      overwrite: Remove the run already in `config.workdir` (its model,
        backup, finished state, logs and pictures) and train from scratch.

    Returns:
      The `TrainResult`; its `summary()` is the one-line report.

    Raises:
      UserError: for an unknown model, data set or strategy, out-of-range
        values, a workdir that holds a different run, or one that holds this
        run finished.
      TrainingDiverged: when the loss becomes NaN or infinite.
    """
    start = time.monotonic()
    config = config.resolved()
    use_intra_op_threads(config)  # before TensorFlow's runtime starts (first op, data)
    if config.deterministic:  # first: the data pipelines are made under it too
        enable_determinism(config.seed)
    data = RunData.from_config(config)
    workdir_plan = plan_workdir(config, overwrite=overwrite)
    strategy = make_strategy(config.strategy, config.tpu)
    writer = is_chief(strategy)
    keras.utils.set_random_seed(config.seed)
    train_ds, validation_ds = _fit_data(data)
    plan = _Plan.of(config, train_ds)
    with strategy.scope():
        model = _build_model(config, data)
        _compile(model, config, plan.warmup_steps)
    _say(config, f"Training {config.model} ({model.count_params():,} parameters) on "
                 f"{config.dataset} {data.info.event_shape}: {plan}; writing to "
                 f"{config.workdir}")
    if workdir_plan.message:
        _say(config, workdir_plan.message)
    if writer:  # only now: a run that cannot start (no data, a bad size) leaves no workdir
        _prepare_workdir(config, workdir_plan)
    begin = _start_or_resume(model, config, data, strategy, (train_ds, validation_ds))
    fit_callbacks = _callbacks(config, data, begin, plan, writer)
    _fit(model, config, data, (train_ds, validation_ds), begin, fit_callbacks, writer)
    return _finish(model, config, data, fit_callbacks, started=start, writer=writer)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What a run sets out to do; its first line says it (`str`)."""

    epochs: int
    steps_per_epoch: int | None  # None: the data's length is not known in advance
    warmup_steps: int  # as used: at most a tenth of the planned steps
    requested_warmup_steps: int
    max_train_seconds: float | None

    @classmethod
    def of(cls, config: TrainConfig, train_ds: tf.data.Dataset) -> _Plan:
        steps_per_epoch = _steps_per_epoch(train_ds)
        warmup = config.warmup_steps
        if steps_per_epoch is not None:
            # A warm-up longer than the run leaves it at a fraction of its learning rate.
            warmup = min(warmup, config.epochs * steps_per_epoch // 10)
        return cls(epochs=config.epochs, steps_per_epoch=steps_per_epoch, warmup_steps=warmup,
                   requested_warmup_steps=config.warmup_steps,
                   max_train_seconds=config.max_train_seconds or None)

    def __str__(self) -> str:
        epochs = f"{self.epochs} epoch{'s' if self.epochs != 1 else ''}"
        if self.steps_per_epoch is None:
            steps = f"{epochs} of unknown length"
        else:
            steps = (f"{epochs} x {self.steps_per_epoch} steps = "
                     f"{self.epochs * self.steps_per_epoch:,} steps")
        warmup = f"warm-up {self.warmup_steps} steps"
        if self.warmup_steps < self.requested_warmup_steps:
            warmup += (f" (cut from {self.requested_warmup_steps} to a tenth of the planned "
                       "steps)")
        budget = (f"time budget {self.max_train_seconds:g} s" if self.max_train_seconds
                  else "no time budget")
        return f"{steps}, {warmup}, {budget}"


@dataclasses.dataclass
class _Begin:
    """Where `fit` starts: a fresh start (epoch 0) or the state of a backup."""

    initial_epoch: int
    seconds_before: float
    step_before: int
    history: dict[str, list[float]]
    early_stopping: ResumableEarlyStopping
    # The initialised weights of a fresh start (what a divergence in the first
    # epoch falls back to); None when resumed.
    initial_weights: list[np.ndarray] | None


@dataclasses.dataclass
class _Callbacks:
    """The callbacks of `fit`, in order, and the ones `train` reads afterwards."""

    all: list[keras.callbacks.Callback]
    budget: TimeBudget
    early_stopping: ResumableEarlyStopping
    backup: Backup
    logger: TensorBoardLogger


def _backup_dir(config: TrainConfig) -> str:
    return os.path.join(config.workdir, BACKUP_DIR)


def _fit_data(data: RunData) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """The training and validation batches of `fit`."""
    train_ds = data.batches("train", shuffle=True)
    validation_ds = data.batches("validation")
    if data.source.in_memory:
        # Small: keep one draw of dequantisation noise, so that early stopping
        # compares epochs on the same data. (TFDS sets are large enough not to need it.)
        validation_ds = validation_ds.cache()
    return train_ds, validation_ds


def _prepare_workdir(config: TrainConfig, plan: WorkdirPlan) -> None:
    """Acts on `plan`, clears a killed run's temporaries, writes config.json."""
    try:
        apply_workdir_plan(config, plan)
        os.makedirs(config.workdir, exist_ok=True)
        remove_temporaries(config.workdir, _backup_dir(config))
        write_text_atomically(os.path.join(config.workdir, CONFIG_FILE),
                              config.to_json() + "\n")
    except OSError as error:
        path = error.filename or config.workdir
        raise UserError(f"cannot write the run into workdir {config.workdir!r}: {path!r}: "
                        f"{error.strerror or error}; choose a folder you can write to.") from None


def _start_or_resume(model: Any, config: TrainConfig, data: RunData,
                     strategy: tf.distribute.Strategy,
                     datasets: tuple[tf.data.Dataset, tf.data.Dataset]) -> _Begin:
    """Initialises the model for a fresh start, or restores the backup a killed run left.

    A fresh start's initialised model is epoch 0 of the early stopping (see
    `ResumableEarlyStopping.start_from`).
    """
    train_ds, validation_ds = datasets
    backup_dir = _backup_dir(config)
    backup = read_backup(backup_dir)
    early_stopping = ResumableEarlyStopping(config.patience)
    if backup is None:
        # On its own copy of the data, so that epoch e is the e-th pass over
        # `train_ds` in a fresh run and in a resumed one alike.
        _initialize(model, data)
        initial = model.evaluate(validation_ds, verbose=0, return_dict=True)["loss"]
        early_stopping.start_from(float(np.mean(initial)), model.get_weights())
        return _Begin(initial_epoch=0, seconds_before=0.0, step_before=0, history={},
                      early_stopping=early_stopping, initial_weights=model.get_weights())
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)
    best_weights = restore_backup(backup_dir, backup, model)
    early_stopping.resume_from(backup["early_stopping"], best_weights)
    initial_epoch = int(backup["epochs_done"])
    # Each pass over the data draws its shuffle and noise seeds when its
    # iterator is made: make (and drop) the passes already done.
    for _ in range(initial_epoch):
        iter(train_ds)
    _say(config, f"Resuming from {backup_dir} at epoch {initial_epoch + 1}/{config.epochs}")
    return _Begin(initial_epoch=initial_epoch, seconds_before=float(backup["train_seconds"]),
                  step_before=int(backup["anneal_step"] or 0), history=backup["history"],
                  early_stopping=early_stopping, initial_weights=None)


def _callbacks(config: TrainConfig, data: RunData, begin: _Begin, plan: _Plan,
               writer: bool) -> _Callbacks:
    """Budget, learning-rate schedule, moving average, guard, early stopping, backup, logs."""
    budget = TimeBudget(config.max_train_seconds or math.inf, seconds_before=begin.seconds_before)
    anneal = None
    if config.lr_schedule == "cosine":
        steps_per_epoch = plan.steps_per_epoch or 1_000_000  # unknown: by time only
        anneal = AnnealLearningRate(
            config.learning_rate, total_steps=config.epochs * steps_per_epoch,
            warmup_steps=plan.warmup_steps,
            # The rate at a step must not depend on the clock in a reproducible run.
            max_seconds=None if config.deterministic else config.max_train_seconds,
            step_before=begin.step_before, seconds_before=begin.seconds_before)
    callbacks: list[keras.callbacks.Callback] = [budget] + ([anneal] if anneal else [])
    if config.ema_momentum:
        # Before early stopping: at each epoch's end the averaged weights are in
        # the model, so they are what is validated, recorded as best and restored;
        # before the backup: at each epoch's start the raw weights are back.
        callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    backup = Backup(_backup_dir(config), budget=budget, anneal=anneal,
                    early_stopping=begin.early_stopping, history=begin.history, writer=writer)
    logger = TensorBoardLogger(os.path.join(config.workdir, LOG_DIR),
                               epoch_pictures(config, data))
    callbacks += [DivergenceGuard(), begin.early_stopping, backup, logger]
    return _Callbacks(all=callbacks, budget=budget, early_stopping=begin.early_stopping,
                      backup=backup, logger=logger)


def _fit(model: Any, config: TrainConfig, data: RunData,
         datasets: tuple[tf.data.Dataset, tf.data.Dataset], begin: _Begin,
         callbacks: _Callbacks, writer: bool) -> None:
    """`model.fit`; a non-finite loss becomes `TrainingDiverged` with the last good model saved."""
    train_ds, validation_ds = datasets
    try:
        # With `steps_per_epoch` equal to the data's length, Keras makes exactly
        # one iterator per epoch (without it, Keras 3 makes a spare one at every
        # epoch's end), so epoch e is the e-th pass, which a resumed run replays.
        model.fit(train_ds, validation_data=validation_ds, epochs=config.epochs,
                  initial_epoch=begin.initial_epoch, steps_per_epoch=_steps_per_epoch(train_ds),
                  callbacks=callbacks.all, verbose=config.verbose,
                  shuffle=False)  # the dataset shuffles itself
    except NonFiniteLoss as stop:
        callbacks.logger.on_train_end()
        # Keras takes the first epoch as best whatever its validation loss: a
        # best epoch is good only if that loss was finite.
        early_stopping = callbacks.early_stopping
        best = early_stopping.best
        good = early_stopping.best_weights if best is not None and math.isfinite(best) else None
        raise _diverged(model, config, data, stop,
                        good if good is not None else begin.initial_weights,
                        best_epoch=early_stopping.best_epoch if good is not None else None,
                        writer=writer) from None


def _finish(model: Any, config: TrainConfig, data: RunData, callbacks: _Callbacks, *,
            started: float, writer: bool) -> TrainResult:
    """Saves the model and pictures (chief only), drops the backup, evaluates on test."""
    train_seconds = callbacks.budget.elapsed()
    history = callbacks.backup.history
    epochs_run = len(history.get("loss", []))
    stopped_by = _stopped_by(callbacks.budget, callbacks.early_stopping, history, epochs_run,
                             config.epochs)
    files: dict[str, str] = {}
    if writer:
        files = {"config": os.path.join(config.workdir, CONFIG_FILE),
                 "model": save_model(model, os.path.join(config.workdir, MODEL_FILE)),
                 "logs": os.path.join(config.workdir, LOG_DIR)}
        files.update(write_pictures(model, config, data))
        note = plots_note(data)  # once per run: how to get pictures with axes
        if note:
            _say(config, note)
        # The state it finished in, for a later run with more epochs (`plan_workdir`).
        callbacks.backup.save(epochs_run, directory=os.path.join(config.workdir, FINISHED_DIR))
        shutil.rmtree(_backup_dir(config), ignore_errors=True)
    # else: a non-chief worker wrote nothing
    test = _evaluate(model, data, split="test", round_trip=False)
    return TrainResult(
        config=config, model=model, history=history, epochs_run=epochs_run,
        best_epoch=int(callbacks.early_stopping.best_epoch) + 1, stopped_by=stopped_by,
        train_seconds=train_seconds, total_seconds=time.monotonic() - started, test=test,
        files=files)


def _initialize(model: Any, data: RunData) -> None:
    """The data-dependent initialisation (ActNorm, the Gaussian start of vector models).

    On the first `model.initialization_examples` training examples.
    """
    if model.is_initialized:
        return
    from tfflow.models import flow_model  # pylint: disable=import-outside-toplevel
    x, second = flow_model.initialization_batch(
        data.batches("train", shuffle=True), data.num_classes or data.context_shape is not None,
        model.initialization_examples)
    if data.context_shape is not None:  # the context's standardisation and the regression start
        model.initialize(x, context=second)
    else:
        model.initialize(x, second)


def _training_batch(data: RunData, epoch: int, batch: int) -> Any:
    """The `batch`-th training batch of epoch `epoch` (0-based), as `train` saw it."""
    ds = data.batches("train", shuffle=True)
    for _ in range(epoch):
        iter(ds)  # see `train`: each pass draws its seeds when its iterator is made
    for index, element in enumerate(ds):
        if index == batch:
            return element
    return element  # pylint: disable=undefined-loop-variable


def _diverged(model: Any, config: TrainConfig, data: RunData, stop: NonFiniteLoss,
              good_weights: list[np.ndarray] | None, *, best_epoch: int | None,
              writer: bool) -> TrainingDiverged:
    """Diagnoses a non-finite loss, saves the last good model, builds the error to raise."""
    layer = None
    try:
        element = _training_batch(data, stop.epoch, stop.batch)
        x, labels, context = data.unpack(element)
        layer = find_non_finite_layer(model, x, labels, context)
    except Exception:  # pylint: disable=broad-except  # a diagnosis must not hide the stop
        layer = None
    path = os.path.join(config.workdir, MODEL_FILE)
    described = "none"
    if good_weights is not None:
        model.set_weights(good_weights)
        if writer:
            save_model(model, path)
        described = (f"best epoch {best_epoch + 1}" if best_epoch is not None
                     else "the initialised model, before any step")
    elif os.path.isfile(path):
        described = "from an earlier run"
    if writer:
        # Resuming would replay the same steps into the same NaN.
        shutil.rmtree(_backup_dir(config), ignore_errors=True)
    found = (f"; {layer}" if layer else
             "; no layer of the flow is non-finite on that batch with the weights before the "
             "step, so the overflow was in the loss or the gradients")
    where = f"; the last good model ({described}) is {path}" if described != "none" else ""
    message = (f"training diverged: the loss became {stop.loss} at step {stop.step} "
               f"(epoch {stop.epoch + 1}, batch {stop.batch + 1}){found}{where}. Lower "
               f"learning_rate (now {config.learning_rate:g}), set clipnorm (e.g. 1.0) or "
               f"lengthen warmup_steps, and train into a new workdir.")
    return TrainingDiverged(message, step=stop.step, epoch=stop.epoch + 1,
                            batch=stop.batch + 1, layer=layer,
                            checkpoint=path if described != "none" else None)


def evaluate(model: Any, config: TrainConfig, *, split: str = "test",
             round_trip: bool = True, batch_size: int = 256) -> EvalResult:
    """Mean NLL and bits/dim of `model` on a split of `config.dataset`.

    The data is dequantised with a fixed seed (`config.seed`, also set as
    TensorFlow's global seed), so repeated calls, in any process, agree. For
    tabular files the NLL is in the file's units (the models standardise
    inside), and a Gaussian fitted to the training rows is scored beside it;
    2-D toy data gets the Gaussian too.

    Args:
      model: A tfflow `FlowModel`.
      config: The run's config (data set, split settings, labels).
      split: "test", "validation" or "train".
      round_trip: Also report the numerical health: max |x - decode(encode(x))|
        and the condition number of every 1x1 convolution.
      batch_size: Most examples per evaluation batch; a split held in memory is
        cut into as few batches, as even as its size allows (one traced shape).
    """
    return _evaluate(model, RunData.from_config(config.resolved()), split=split,
                     round_trip=round_trip, batch_size=batch_size)


def _evaluate(model: Any, data: RunData, *, split: str, round_trip: bool,
              batch_size: int = 256) -> EvalResult:
    info = data.info
    if tuple(model.event_shape) != tuple(info.event_shape):
        raise UserError(f"cannot evaluate {model.name} on {data.source.name!r}: the model "
                        f"takes examples of shape {tuple(model.event_shape)}, the data's are "
                        f"{tuple(info.event_shape)} (a model.keras from another run?).")
    # tfflow.data's dequantisation noise depends on TF's global seed as well as
    # on `seed`: fix both, so that a later `tfflow-evaluate` in a fresh process
    # draws the noise that `train` (which seeds globally too) drew.
    tf.random.set_seed(data.seed)
    ds = data.batches(split, batch_size=_even_batch_size(data, split, batch_size))
    round_trip_error = _round_trip_fn(model) if round_trip else None
    total, count, worst = 0.0, 0, 0.0
    for batch in ds:
        x, labels, context = data.unpack(batch)
        total += float(tf.reduce_sum(tf.cast(model.log_prob(x, labels, context=context),
                                             tf.float64)))
        count += int(x.shape[0])
        if round_trip_error is not None:
            worst = max(worst, float(round_trip_error(x, labels, context)))
    nll = -total / count
    gaussian, gaussian_note = None, None
    if info.kind in ("tabular", "toy2d"):
        try:  # a report after a run: a singular fit is a note, never a crash
            gaussian = tfdata.fit_gaussian_nll(data.array("train"), data.array(split),
                                               train_context=data.context_array("train"),
                                               test_context=data.context_array(split))
        except ValueError as error:
            reason = str(error).removeprefix("fit_gaussian_nll: ")
            gaussian_note = f"no Gaussian baseline ({reason})"
    return EvalResult(
        split=split, num_examples=count, nll=nll,
        bits_per_dim=float(tfdata.bits_per_dim(nll, info.num_dims, info.num_levels)),
        max_round_trip_error=worst if round_trip else None, gaussian_nll=gaussian,
        true_entropy=info.true_entropy,
        conv_condition_numbers=conv1x1_condition_numbers(model) if round_trip else None,
        gaussian_note=gaussian_note, **({} if data.context_shape is None else {
            "gaussian_name": "the conditional Gaussian fit"  # x regressed linearly on c
        }))


def _even_batch_size(data: RunData, split: str, batch_size: int) -> int:
    """At most `batch_size`, as even as the split (held in memory) allows.

    `log_prob` is traced once per batch shape: the 360 test digits in batches of
    256 are two shapes (256 and 104) and two traces, 0.6 CPU s more for the default
    Glow than the one of two batches of 180 (measured). As many batches as
    `batch_size` needs, never more; a split whose size they do not divide still
    has two shapes, as before. Sources read from disk keep `batch_size`.
    """
    if not data.source.in_memory:
        return batch_size
    count = len(data.array(split))
    batches = max(1, math.ceil(count / batch_size))
    return max(1, math.ceil(count / batches))


def load_run(workdir: str) -> tuple[Any, TrainConfig]:
    """Loads the model and config that `train` wrote into `workdir`."""
    model_path = os.path.join(workdir, MODEL_FILE)
    config_path = os.path.join(workdir, CONFIG_FILE)
    for path in (model_path, config_path):
        if not os.path.isfile(path):
            raise UserError(f"no {os.path.basename(path)} in {workdir!r}; train a model there "
                            f"first with tfflow-train --workdir={workdir}.")
    try:
        with open(config_path, encoding="utf-8") as handle:
            config = TrainConfig.from_json(handle.read())
    except (OSError, ValueError, TypeError) as error:
        if isinstance(error, UserError):
            raise
        raise UserError(f"cannot read {config_path}: corrupt or not a tfflow config "
                        f"({' '.join(str(error).split())[:200]})") from None
    config.workdir = workdir
    # Importing the models registers their custom objects with Keras.
    from tfflow import models  # pylint: disable=import-outside-toplevel
    try:
        model = keras.models.load_model(model_path)
    except Exception as error:  # pylint: disable=broad-except  # zip, h5, JSON, Keras errors
        import zipfile  # pylint: disable=import-outside-toplevel
        if "safe_mode" in str(error):
            raise UserError(f"refused to load {model_path}: it holds Python code (e.g. a "
                            "lambda), which Keras's safe_mode does not run, and tfflow never "
                            "writes; do not load files from an untrusted source") from None
        # Keras reports a file that is not a zip archive as "File not found".
        detail = ("not a zip archive" if not zipfile.is_zipfile(model_path) else
                  f"{type(error).__name__}: {' '.join(str(error).split())[:200]}")
        raise UserError(f"cannot load {model_path}: corrupt or not a tfflow model file "
                        f"({detail})") from None
    if not isinstance(model, models.FlowModel):
        raise UserError(f"cannot load {model_path}: corrupt or not a tfflow model file "
                        f"(it holds a {type(model).__name__})")
    # `train` builds through the factories, which name the model after themselves.
    if model.name in models.MODELS and model.name != config.model:
        raise UserError(f"{workdir!r} mixes two runs: its {MODEL_FILE} holds a {model.name} "
                        f"model, its {CONFIG_FILE} describes {config.model} on "
                        f"{config.dataset}; train again into a new workdir.")
    return model, config


def _say(config: TrainConfig, message: str) -> None:
    if config.verbose != 0:
        print(message, flush=True)


def _build_model(config: TrainConfig, data: RunData) -> Any:
    from tfflow import models  # pylint: disable=import-outside-toplevel
    factory = models.MODELS[config.model]
    accepted = inspect.signature(factory).parameters
    kwargs = config.architecture()
    rejected = sorted(set(kwargs) - set(accepted))
    if rejected:
        own = [name for name in ARCHITECTURE_FIELDS if name in accepted]
        raise UserError(f"{config.model} takes no {', '.join(rejected)}; its architecture "
                        f"options are {', '.join(own)}.")
    if "seed" in accepted:
        kwargs["seed"] = config.seed
    if config.memory_saving:
        kwargs["memory_saving"] = True
    if config.precision != "float32":
        kwargs["dtype"] = config.precision
    info, num_classes = data.info, data.num_classes
    if config.preset is not None:
        shape = models.PRESETS[config.preset].event_shape
        if tuple(info.event_shape) != tuple(shape):
            raise UserError(f"preset {config.preset} is for {shape} images; {config.dataset} "
                            f"has {tuple(info.event_shape)}.")
    if num_classes is not None:
        if "num_classes" not in accepted:
            raise UserError(f"{config.model} has no class-conditional form; drop conditional "
                            "or use glow.")
        kwargs["num_classes"] = num_classes
    if data.context_shape is not None:
        if "context_shape" not in accepted:
            raise UserError(f"{config.model} has no conditional form; context_columns needs "
                            "a vector model (maf, iaf, nsf, realnvp, nice).")
        kwargs["context_shape"] = data.context_shape
    try:
        return models.build(config.model, info.event_shape, num_levels=info.num_levels,
                            **kwargs)
    except ValueError as error:
        hint = ""
        if config.model == "glow" and len(info.event_shape) != 3:
            hint = " Glow needs images; for vectors use --model=realnvp or --model=nice."
        raise UserError(f"cannot build {config.model} for {config.dataset} "
                        f"{info.event_shape}: {error}{hint}") from None


def _compile(model: Any, config: TrainConfig, warmup_steps: int) -> None:
    from tfflow import models  # pylint: disable=import-outside-toplevel
    if config.lr_schedule == "constant":
        learning_rate = models.LinearWarmup(config.learning_rate, warmup_steps)
    else:  # AnnealLearningRate sets a float learning rate before every step
        learning_rate = config.learning_rate
    kwargs: dict[str, Any] = {"clipnorm": config.clipnorm}
    if config.ema_momentum:
        kwargs.update(use_ema=True, ema_momentum=config.ema_momentum)
    if config.weight_decay:
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=config.weight_decay,
                                           **kwargs)
    else:
        optimizer = models.FusedAdam(learning_rate, **kwargs)  # Keras' Adam, fused
    # FlowModel.compile wraps it in a LossScaleOptimizer for float16 layers (mixed_float16).
    model.compile(optimizer=optimizer)


def _steps_per_epoch(ds: tf.data.Dataset) -> int | None:
    steps = int(ds.cardinality())
    return steps if steps > 0 else None


def _round_trip_fn(model: Any) -> Callable[..., tf.Tensor]:
    """max |x - decode(encode(x))| over a batch (labels or contexts for conditional models)."""
    def worst_error(x: tf.Tensor, labels: Any = None, context: Any = None) -> tf.Tensor:
        return tf.reduce_max(tf.abs(x - model.decode(model.encode(x, labels, context=context),
                                                     labels, context=context)))
    return worst_error


def _stopped_by(budget: TimeBudget, early_stopping: keras.callbacks.EarlyStopping,
                history: dict[str, list[float]], epochs_run: int, epochs: int) -> str:
    if any(not math.isfinite(value) for value in history.get("loss", [])):
        return "NaN loss"
    if budget.stopped:
        return "time budget"
    if early_stopping.stopped_epoch > 0 or epochs_run < epochs:
        return "early stopping"
    return "epochs"
