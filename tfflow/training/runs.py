"""`train`, `evaluate`, `sample`, `load_run`: a whole run, from flags to files."""

from __future__ import annotations

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
from tfflow import images
from tfflow.training.callbacks import (AnnealLearningRate, DivergenceGuard, NonFiniteLoss,
    ResumableEarlyStopping, TensorBoardLogger, TimeBudget)
from tfflow.training.checkpoints import (BACKUP_DIR, Backup, check_workdir_holds_this_run,
    read_backup, remove_temporaries, restore_backup, save_model, write_text_atomically)
from tfflow.training.config import (ARCHITECTURE_FIELDS, CONFIG_FILE, EvalResult, LOG_DIR,
    MODEL_FILE, TrainConfig, TrainResult, check_positive_int)
from tfflow.training.errors import TrainingDiverged, UserError
from tfflow.training.health import conv1x1_condition_numbers, find_non_finite_layer
from tfflow.training.strategies import is_chief, make_strategy

__all__ = ["evaluate", "load_run", "sample", "SAMPLE_TEMPERATURES", "train", "write_samples"]


SAMPLE_TEMPERATURES: tuple[float, ...] = (0.7, 1.0)


def train(config: TrainConfig) -> TrainResult:
    """Trains, saves, pictures and evaluates a flow as `config` says.

    Resumable: at the start of every epoch the whole training state goes to
    `<workdir>/backup/` (written atomically; deleted when the run ends). A run
    killed at any moment, started again with the same config and workdir,
    continues from the last epoch it began and ends with the weights an
    uninterrupted run would have (the data order and noise of each epoch are
    replayed). A workdir holding a run with a different config is refused.

    A NaN or infinite training loss stops the run at that step: the model
    gets back the weights that produced it, a diagnostic pass names the layer
    at fault when it can, `model.keras` is left holding the last good model
    (the best epoch so far, or the initialised model), and `TrainingDiverged`
    is raised.

    Returns:
      The `TrainResult`; its `summary()` is the one-line report.

    Raises:
      UserError: for an unknown model, data set or strategy, out-of-range
        values, or a workdir that holds a different run.
      TrainingDiverged: when the loss becomes NaN or infinite.
    """
    start = time.monotonic()
    config = config.resolved()
    info = _dataset_info(config)
    num_classes = _num_classes(config, info)
    workdir = config.workdir
    check_workdir_holds_this_run(config)
    strategy = make_strategy(config.strategy, config.tpu)
    writer = is_chief(strategy)
    backup_dir = os.path.join(workdir, BACKUP_DIR)
    files = {"config": os.path.join(workdir, CONFIG_FILE),
             "model": os.path.join(workdir, MODEL_FILE)}
    keras.utils.set_random_seed(config.seed)
    train_ds = _load(config, "train", shuffle=True)
    validation_ds = _load(config, "validation")
    if _is_embedded_or_file(config.dataset):
        # Small: keep one draw of dequantisation noise, so that early stopping
        # compares epochs on the same data. (TFDS sets are large enough not to need it.)
        validation_ds = validation_ds.cache()
    with strategy.scope():
        model = _build_model(config, info, num_classes)
        _compile(model, config)
    _say(config, f"Training {config.model} ({model.count_params():,} parameters) on "
                 f"{config.dataset} {info.event_shape}; writing to {workdir}")
    if writer:  # only now: a run that cannot start (no data, a bad size) leaves no workdir
        os.makedirs(workdir, exist_ok=True)
        remove_temporaries(workdir, backup_dir)
        write_text_atomically(files["config"], config.to_json() + "\n")

    backup = read_backup(backup_dir)
    early_stopping = ResumableEarlyStopping(config.patience)
    initial_weights = None
    if backup is None:
        # On its own copy of the data, so that epoch e is the e-th pass over
        # `train_ds` in a fresh run and in a resumed one alike.
        _initialize(model, config, num_classes)
        initial_weights = model.get_weights()
        initial_epoch, seconds_before, step_before, history = 0, 0.0, 0, {}
    else:
        with strategy.scope():
            model.optimizer.build(model.trainable_variables)
        best_weights = restore_backup(backup_dir, backup, model)
        early_stopping.resume_from(backup["early_stopping"], best_weights)
        initial_epoch = int(backup["epochs_done"])
        seconds_before = float(backup["train_seconds"])
        step_before = int(backup["anneal_step"] or 0)
        history = backup["history"]
        # Each pass over the data draws its shuffle and noise seeds when its
        # iterator is made: make (and drop) the passes already done.
        for _ in range(initial_epoch):
            iter(train_ds)
        _say(config, f"Resuming from {backup_dir} at epoch {initial_epoch + 1}/{config.epochs}")

    files["logs"] = os.path.join(workdir, LOG_DIR)
    budget = TimeBudget(config.max_train_seconds or math.inf, seconds_before=seconds_before)
    anneal = None
    if config.lr_schedule == "cosine":
        steps_per_epoch = _steps_per_epoch(train_ds) or 1_000_000  # unknown: by time only
        anneal = AnnealLearningRate(
            config.learning_rate, total_steps=config.epochs * steps_per_epoch,
            warmup_steps=config.warmup_steps, max_seconds=config.max_train_seconds,
            step_before=step_before, seconds_before=seconds_before)
    callbacks: list[keras.callbacks.Callback] = [budget] + ([anneal] if anneal else [])
    if config.ema_momentum:
        # Before early stopping: at each epoch's end the averaged weights are in
        # the model, so they are what is validated, recorded as best and restored;
        # before the backup: at each epoch's start the raw weights are back.
        callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    backup_callback = Backup(backup_dir, budget=budget, anneal=anneal,
                              early_stopping=early_stopping, history=history, writer=writer)
    logger = TensorBoardLogger(files["logs"], _epoch_pictures(config, info, num_classes))
    callbacks += [DivergenceGuard(), early_stopping, backup_callback, logger]
    try:
        # With `steps_per_epoch` equal to the data's length, Keras makes exactly
        # one iterator per epoch (without it, Keras 3 makes a spare one at every
        # epoch's end), so epoch e is the e-th pass, which a resumed run replays.
        model.fit(train_ds, validation_data=validation_ds, epochs=config.epochs,
                  initial_epoch=initial_epoch, steps_per_epoch=_steps_per_epoch(train_ds),
                  callbacks=callbacks, verbose=config.verbose,
                  shuffle=False)  # the dataset shuffles itself
    except NonFiniteLoss as stop:
        logger.on_train_end()
        # Keras takes the first epoch as best whatever its validation loss: a
        # best epoch is good only if that loss was finite.
        best = early_stopping.best
        good = early_stopping.best_weights if best is not None and math.isfinite(best) else None
        raise _diverged(model, config, stop, good if good is not None else initial_weights,
                        best_epoch=early_stopping.best_epoch if good is not None else None,
                        writer=writer, backup_dir=backup_dir) from None
    train_seconds = budget.elapsed()
    history_dict = backup_callback.history
    epochs_run = len(history_dict.get("loss", []))
    stopped_by = _stopped_by(budget, early_stopping, history_dict, epochs_run, config.epochs)

    if writer:
        save_model(model, files["model"])
        files.update(_write_pictures(model, config, info, num_classes))
        shutil.rmtree(backup_dir, ignore_errors=True)
    else:
        files = {}  # a non-chief worker wrote nothing
    test = evaluate(model, config, split="test", round_trip=False)
    return TrainResult(
        config=config, model=model, history=history_dict, epochs_run=epochs_run,
        best_epoch=int(early_stopping.best_epoch) + 1, stopped_by=stopped_by,
        train_seconds=train_seconds, total_seconds=time.monotonic() - start, test=test,
        files=files)


def _initialize(model: Any, config: TrainConfig, num_classes: int | None) -> None:
    """Glow's data-dependent initialisation on up to 512 training examples."""
    if model.is_initialized:
        return
    from tfflow.models import flow_model  # pylint: disable=import-outside-toplevel
    model.initialize(*flow_model.initialization_batch(_load(config, "train", shuffle=True),
                                                       num_classes))


def _training_batch(config: TrainConfig, epoch: int, batch: int) -> Any:
    """The `batch`-th training batch of epoch `epoch` (0-based), as `train` saw it."""
    ds = _load(config, "train", shuffle=True)
    for _ in range(epoch):
        iter(ds)  # see `train`: each pass draws its seeds when its iterator is made
    for index, element in enumerate(ds):
        if index == batch:
            return element
    return element  # pylint: disable=undefined-loop-variable


def _diverged(model: Any, config: TrainConfig, stop: NonFiniteLoss,
              good_weights: list[np.ndarray] | None, *, best_epoch: int | None, writer: bool,
              backup_dir: str) -> TrainingDiverged:
    """Diagnoses a non-finite loss, saves the last good model, builds the error to raise."""
    layer = None
    try:
        element = _training_batch(config, stop.epoch, stop.batch)
        x, labels = element if config.conditional else (element, None)
        layer = find_non_finite_layer(model, x, labels)
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
        shutil.rmtree(backup_dir, ignore_errors=True)
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
    tabular files the standardisation's log-det is added back, so the NLL is in
    the file's units, and a Gaussian fitted to the training rows is scored
    beside it; 2-D toy data gets the Gaussian too.

    Args:
      model: A tfflow `FlowModel`.
      config: The run's config (data set, split settings, labels).
      split: "test", "validation" or "train".
      round_trip: Also report the numerical health: max |x - decode(encode(x))|
        and the condition number of every 1x1 convolution.
      batch_size: Examples per evaluation batch.
    """
    config = config.resolved()
    info = _dataset_info(config)
    conditional = _num_classes(config, info) is not None
    # tfflow.data's dequantisation noise depends on TF's global seed as well as
    # on `seed`: fix both, so that a later `tfflow-evaluate` in a fresh process
    # draws the noise that `train` (which seeds globally too) drew.
    tf.random.set_seed(config.seed)
    ds = _load(config, split, batch_size=batch_size)
    round_trip_error = _round_trip_fn(model) if round_trip else None
    total, count, worst = 0.0, 0, 0.0
    for batch in ds:
        x, labels = batch if conditional else (batch, None)
        total += float(tf.reduce_sum(tf.cast(model.log_prob(x, labels), tf.float64)))
        count += int(x.shape[0])
        if round_trip_error is not None:
            worst = max(worst, float(round_trip_error(x, labels)))
    nll = -total / count
    gaussian = None
    if info.kind == "tabular":
        nll -= info.standardization_log_det
    if info.kind in ("tabular", "toy2d"):
        gaussian = tfdata.fit_gaussian_nll(_array(config, "train"), _array(config, split))
    return EvalResult(
        split=split, num_examples=count, nll=nll,
        bits_per_dim=float(tfdata.bits_per_dim(nll, info.num_dims, info.num_levels)),
        max_round_trip_error=worst if round_trip else None, gaussian_nll=gaussian,
        true_entropy=info.true_entropy,
        conv_condition_numbers=conv1x1_condition_numbers(model) if round_trip else None)


def sample(model: Any, num_samples: int, *, temperature: float = 1.0, seed: int | None = 0,
           labels: Any = None) -> np.ndarray:
    """Draws `num_samples` samples at `temperature` as a NumPy array (data space)."""
    check_positive_int("num_samples", num_samples)
    if not temperature > 0:
        raise UserError(f"expected temperature > 0, got {temperature!r}.")
    kwargs = {"temperature": float(temperature), "seed": seed}
    if labels is not None:
        kwargs["labels"] = tf.constant(labels, tf.int32)
    return np.asarray(model.sample(num_samples, **kwargs))


def write_samples(model: Any, config: TrainConfig, path: str, *, num_samples: int = 64,
                  temperature: float = 1.0, seed: int | None = 0,
                  label: int | None = None) -> str:
    """Samples a trained run's model into `path` and returns `path`.

    `.npy`: the samples in the data's own units (tabular rows un-standardised).
    `.png`: a grid for images, a 2-D histogram for 2-D data.

    Args:
      model: The run's model.
      config: The run's config (says what the data is).
      path: Output file ending in .png or .npy.
      num_samples: How many samples.
      temperature: Latent standard deviation scale.
      seed: Sampling seed.
      label: Class to sample from a class-conditional model; default: cycle
        through the classes.
    """
    config = config.resolved()
    info = _dataset_info(config)
    num_classes = _num_classes(config, info)
    if label is not None:
        if num_classes is None:
            raise UserError(f"a label was given, but the model in {config.workdir!r} is not "
                            "class-conditional.")
        if not 0 <= label < num_classes:
            raise UserError(f"expected a label in 0..{num_classes - 1}, got {label}.")
        labels = np.full([num_samples], label, np.int32)
    else:
        labels = _sample_labels(num_samples, num_classes)
    x = sample(model, num_samples, temperature=temperature, seed=seed, labels=labels)
    if info.kind == "tabular":
        x = x * info.std + info.mean
    if path.lower().endswith(".npy"):
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        np.save(path, x)
        return path
    if not path.lower().endswith(".png"):
        raise UserError(f"expected an output path ending in .png or .npy, got {path!r}.")
    if info.kind == "image":
        return images.write_image_grid(path, x)
    if info.event_shape == (2,):
        return images.write_png(path, images.histogram_image(x))
    raise UserError(f"cannot draw {info.event_shape[0]}-dimensional samples as a PNG; "
                    "write them to a .npy file instead.")


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
    return model, config


def _say(config: TrainConfig, message: str) -> None:
    if config.verbose != 0:
        print(message, flush=True)


def _dataset_info(config: TrainConfig) -> tfdata.DatasetInfo:
    try:
        return tfdata.info(config.dataset, config.data_dir, image_size=config.image_size,
                           num_bits=config.num_bits,
                           validation_fraction=config.validation_fraction)
    except ValueError as error:
        raise UserError(str(error)) from None


def _num_classes(config: TrainConfig, info: tfdata.DatasetInfo) -> int | None:
    if not config.conditional:
        return None
    if info.num_classes is None:
        raise UserError(f"conditional=True needs labels, but {config.dataset!r} has none.")
    return info.num_classes


def _split_name(config: TrainConfig, split: str) -> str:
    """The split string `tfflow.data.load` takes for our train/validation/test."""
    if _is_embedded_or_file(config.dataset):
        return split
    # TFDS: use the set's own validation split if it has one, else carve one
    # from the end of "train".
    splits = _tfds_split_names(config)
    if split == "test":
        return "test" if "test" in splits else "validation"
    has_validation = "validation" in splits and "test" in splits
    if has_validation:
        return split
    held_out = int(round(100 * config.validation_fraction))
    if split == "train":
        return f"train[:{100 - held_out}%]"
    return f"train[{100 - held_out}%:]"


def _is_embedded_or_file(name: str) -> bool:
    return name in tfdata.EMBEDDED_DATASETS or name.lower().endswith((".npy", ".csv"))


def _tfds_split_names(config: TrainConfig) -> set[str]:
    try:
        import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
        builder = tfds.builder(config.dataset, data_dir=config.data_dir)
        splits = set(builder.info.splits.keys())
    except Exception:  # pylint: disable=broad-except  # load() reports what is wrong
        splits = set()
    # Not prepared (load() will say so) or not known: the usual train/test pair.
    return splits or {"train", "test"}


def _load(config: TrainConfig, split: str, *, shuffle: bool = False,
          batch_size: int | None = None) -> tf.data.Dataset:
    info = _dataset_info(config)
    kwargs: dict[str, Any] = dict(
        batch_size=batch_size or config.batch_size, shuffle=shuffle, seed=config.seed,
        data_dir=config.data_dir, image_size=config.image_size, num_bits=config.num_bits,
        with_labels=config.conditional, validation_fraction=config.validation_fraction,
        # TPUs compile for one static batch shape: no short last batch in training.
        drop_remainder=config.strategy == "tpu" and split != "test")
    if info.kind == "toy2d" and split == "train":
        kwargs["num_examples"] = config.num_examples
    elif config.num_examples is not None and info.kind != "toy2d":
        raise UserError(f"num_examples applies to the toy densities {tfdata.TOY_DATASETS}, "
                        f"got num_examples={config.num_examples} for {config.dataset!r}.")
    if info.kind != "image":
        del kwargs["image_size"], kwargs["num_bits"], kwargs["data_dir"]
    try:
        return tfdata.load(config.dataset, _split_name(config, split), **kwargs)
    except ValueError as error:
        raise UserError(str(error)) from None


def _array(config: TrainConfig, split: str) -> np.ndarray:
    kwargs: dict[str, Any] = {"validation_fraction": config.validation_fraction}
    if split == "train" and config.dataset in tfdata.TOY_DATASETS:
        kwargs["num_examples"] = config.num_examples
    return tfdata.load_array(config.dataset, split, **kwargs)


def _build_model(config: TrainConfig, info: tfdata.DatasetInfo, num_classes: int | None) -> Any:
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
    if num_classes is not None:
        if "num_classes" not in accepted:
            raise UserError(f"{config.model} has no class-conditional form; drop conditional "
                            "or use glow.")
        kwargs["num_classes"] = num_classes
    try:
        return models.build(config.model, info.event_shape, num_levels=info.num_levels,
                            **kwargs)
    except ValueError as error:
        hint = ""
        if config.model == "glow" and len(info.event_shape) != 3:
            hint = " Glow needs images; for vectors use --model=realnvp or --model=nice."
        raise UserError(f"cannot build {config.model} for {config.dataset} "
                        f"{info.event_shape}: {error}{hint}") from None


def _compile(model: Any, config: TrainConfig) -> None:
    from tfflow import models  # pylint: disable=import-outside-toplevel
    if config.lr_schedule == "constant":
        learning_rate = models.LinearWarmup(config.learning_rate, config.warmup_steps)
    else:  # AnnealLearningRate sets a float learning rate before every step
        learning_rate = config.learning_rate
    kwargs: dict[str, Any] = {"clipnorm": config.clipnorm}
    if config.ema_momentum:
        kwargs.update(use_ema=True, ema_momentum=config.ema_momentum)
    if config.weight_decay:
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=config.weight_decay,
                                           **kwargs)
    else:
        optimizer = keras.optimizers.Adam(learning_rate, **kwargs)
    if config.precision == "mixed_float16":
        # float16 gradients underflow without a dynamic loss scale.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer)


def _steps_per_epoch(ds: tf.data.Dataset) -> int | None:
    steps = int(ds.cardinality())
    return steps if steps > 0 else None


def _marginal_log_prob_fn(model: Any, info: tfdata.DatasetInfo,
                          num_classes: int | None) -> Callable[[tf.Tensor], tf.Tensor]:
    """log p(x) in the data's own units, for pictures of 2-D densities.

    Tabular rows are standardised before the model sees them (the log-det of
    the standardisation is added back); a class-conditional model is mixed over
    its classes with equal weights.
    """
    log_prob = model.log_prob  # labels are ignored by unconditional models
    mean = 0.0 if info.mean is None else info.mean.astype(np.float32)
    std = 1.0 if info.std is None else info.std.astype(np.float32)
    log_det = info.standardization_log_det or 0.0

    def marginal(x: tf.Tensor) -> tf.Tensor:
        z = (x - mean) / std
        if num_classes is None:
            return log_prob(z) + log_det
        per_class = tf.stack([
            log_prob(z, tf.fill([tf.shape(z)[0]], tf.constant(label, tf.int32)))
            for label in range(num_classes)], axis=-1)
        return tf.reduce_logsumexp(per_class, axis=-1) - math.log(num_classes) + log_det
    return marginal


def _round_trip_fn(model: Any) -> Callable[..., tf.Tensor]:
    """max |x - decode(encode(x))| over a batch (labels for conditional models)."""
    def worst_error(x: tf.Tensor, labels: Any = None) -> tf.Tensor:
        return tf.reduce_max(tf.abs(x - model.decode(model.encode(x, labels), labels)))
    return worst_error


def _sample_labels(num_samples: int, num_classes: int | None) -> np.ndarray | None:
    if num_classes is None:
        return None
    return np.arange(num_samples, dtype=np.int32) % num_classes


def _epoch_pictures(config: TrainConfig, info: tfdata.DatasetInfo, num_classes: int | None
                    ) -> Callable[[keras.Model], dict[str, tf.Tensor]]:
    """What `TensorBoardLogger` draws each epoch for this data."""
    num_samples = min(config.num_samples, 36)
    labels = _sample_labels(num_samples, num_classes)
    points = _array(config, "test") if info.event_shape == (2,) else None
    traced: dict[int, Callable[[tf.Tensor], tf.Tensor]] = {}  # trace once per model

    def pictures(model: keras.Model) -> dict[str, tf.Tensor]:
        if info.kind == "image":
            return {f"samples/T={temperature:g}": images.image_grid(
                        sample(model, num_samples, temperature=temperature, seed=config.seed,
                               labels=labels))
                    for temperature in SAMPLE_TEMPERATURES}
        if points is not None:
            if id(model) not in traced:
                traced[id(model)] = _marginal_log_prob_fn(model, info, num_classes)
            return {"density": images.density_image(traced[id(model)], points, resolution=64)}
        return {}
    return pictures


def _stopped_by(budget: TimeBudget, early_stopping: keras.callbacks.EarlyStopping,
                history: dict[str, list[float]], epochs_run: int, epochs: int) -> str:
    if any(not math.isfinite(value) for value in history.get("loss", [])):
        return "NaN loss"
    if budget.stopped:
        return "time budget"
    if early_stopping.stopped_epoch > 0 or epochs_run < epochs:
        return "early stopping"
    return "epochs"


def _write_pictures(model: Any, config: TrainConfig, info: tfdata.DatasetInfo,
                    num_classes: int | None) -> dict[str, str]:
    files = {}
    workdir = config.workdir
    if info.kind == "image":
        labels = _sample_labels(config.num_samples, num_classes)
        for temperature in SAMPLE_TEMPERATURES:
            x = sample(model, config.num_samples, temperature=temperature, seed=config.seed,
                       labels=labels)
            files[f"samples_T{temperature:.1f}"] = images.write_image_grid(
                os.path.join(workdir, f"samples_T{temperature:.1f}.png"), x)
    elif info.event_shape == (2,):
        points = _array(config, "test")  # in the data's own units
        files["density"] = images.write_density_png(
            os.path.join(workdir, "density.png"), _marginal_log_prob_fn(model, info, num_classes),
            points)
    return files
