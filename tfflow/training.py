"""Train, evaluate and sample flows: the library behind `tfflow-train`, `-evaluate`, `-sample`.

One `TrainConfig` holds every hyper-parameter (with defaults that train Glow on
the embedded digits within a few minutes on a laptop CPU). `train(config)`:

1. describes the data (`tfflow.data.info`) and builds the model inside the
   `tf.distribute.Strategy` made by `make_strategy` (the one place strategies
   are created);
2. fits it with a validation split, early stopping on the validation loss that
   restores the best weights, a wall-clock budget, Keras progress bars, and
   TensorBoard logs (loss, bits/dim, and sample pictures every epoch; written
   with core TF ops, so only viewing them needs the `tensorboard` package);
3. writes into `config.workdir`: `model.keras`, `config.json`, sample grids at
   T=0.7 and T=1.0 (images) or `density.png` (2-D data), and `logs/`;
4. evaluates on the test split and returns a `TrainResult` whose `summary()` is
   the one-line report (test bits/dim, and for tabular data the NLL in the
   file's own units beside a fitted Gaussian's).

`load_run(workdir)` reads a run back; `evaluate` and `sample` work on any
model and config.

Example (a tiny run; the defaults train for minutes):

>>> import tempfile
>>> config = TrainConfig(model="realnvp", dataset="two_moons", num_examples=256,
...                      epochs=1, workdir=tempfile.mkdtemp(), verbose=0)
>>> result = train(config)                                    # doctest: +SKIP
>>> print(result.summary())                                   # doctest: +SKIP
realnvp on two_moons: test 1.9 bits/dim (NLL 2.6 nats), Gaussian NLL 3.4 nats; 1 epoch ...
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfflow import data as tfdata
from tfflow import images

__all__ = [
    "AnnealLearningRate",
    "DivergenceGuard",
    "EvalResult",
    "MODEL_NAMES",
    "STRATEGIES",
    "TensorBoardLogger",
    "TimeBudget",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "UserError",
    "conv1x1_condition_numbers",
    "default_workdir",
    "find_non_finite_layer",
    "evaluate",
    "load_run",
    "is_chief",
    "make_strategy",
    "sample",
    "save_model",
    "train",
    "write_samples",
]

MODEL_NAMES: tuple[str, ...] = ("glow", "realnvp", "nice")
CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"
# `train`'s resumable state; deleted when the run ends (see `_Backup`).
BACKUP_DIR = "backup"
BACKUP_STATE_FILE = "state.json"
# Temporary files of the atomic writes start with this; no loader reads them,
# and `train` removes the ones a killed process left behind.
TMP_PREFIX = ".tmp-"
# Config fields that may differ between a run and its resumption: they change
# neither the model nor the training arithmetic.
RESUMABLE_DIFFERENCES: tuple[str, ...] = ("workdir", "data_dir", "verbose", "num_samples",
                                          "strategy", "tpu")
LOG_DIR = "logs"
SAMPLE_TEMPERATURES: tuple[float, ...] = (0.7, 1.0)
LR_SCHEDULES: tuple[str, ...] = ("cosine", "constant")

# Names of the architecture fields of TrainConfig; each is passed to the model
# factory only when set, so the factory's own defaults apply otherwise.
# The names are the factories' keyword arguments (tfflow.models.Glow, RealNVP, NICE).
ARCHITECTURE_FIELDS: tuple[str, ...] = (
    "levels", "steps_per_level", "hidden_channels", "coupling", "permutation",  # Glow
    "scales", "filters", "blocks",  # RealNVP on images
    "num_couplings", "hidden_units",  # RealNVP and NICE on vectors (NICE: on anything)
)


class UserError(ValueError):
    """A mistake in what the user asked for (a name, a path, a flag value).

    The command-line apps print its message on one line and exit with status 2.
    """


class TrainingDiverged(UserError):
    """The training loss became NaN or infinite; `train` stopped at that step.

    A `UserError` because the cure lies in the config (a lower learning rate,
    gradient clipping, a longer warm-up), so the command-line apps print it on
    one line and exit with status 2.

    Attributes:
      step: 1-based global training step whose loss was not finite.
      epoch: 1-based epoch of that step.
      batch: 1-based batch within the epoch.
      layer: What the diagnostic pass found (the first layer of the flow,
        data -> latent, whose weights, output or log-det is not finite), or None.
      checkpoint: Path of the last good model (`model.keras`, loadable with
        `keras.models.load_model` or `load_run`).
    """

    def __init__(self, message: str, *, step: int, epoch: int, batch: int,
                 layer: str | None, checkpoint: str | None) -> None:
        super().__init__(message)
        self.step, self.epoch, self.batch = step, epoch, batch
        self.layer, self.checkpoint = layer, checkpoint


@dataclasses.dataclass
class TrainConfig:
    """Every hyper-parameter of a training run.

    The defaults are the default `tfflow-train` run: Glow on the 1,293 training
    digits within 5 minutes on 2 CPU cores, where overfitting is the enemy: a
    short cosine-annealed run (40 epochs of batch 32 at a peak rate of 2e-3), a
    moving average of the weights (momentum 0.99), early stopping on the
    validation loss, best weights restored. Measured on 2 CPU cores (test
    bits/dim, seeds 0 and 1): 2.18 and 2.21; without the moving average 2.23
    and 2.25; 100 epochs of batch 64 at a flat 1e-3 reached 2.27 (seed 0).

    Attributes:
      model: "glow", "realnvp" or "nice".
      dataset: An embedded name (`tfflow.data.EMBEDDED_DATASETS`), a TFDS image
        set prepared under `data_dir`, or a path to a `.npy`/`.csv` table.
      data_dir: TFDS data directory.
      workdir: Output folder; default `./tfflow_runs/<model>-<dataset>`.
      epochs: Most passes over the training split.
      batch_size: Global batch size.
      learning_rate: Adam's peak learning rate.
      lr_schedule: "cosine": linear warm-up, then cosine decay over the run
        (the epochs or the time budget, whichever ends first; see
        `AnnealLearningRate`); "constant": warm-up, then flat (the model's own
        `compile()` default).
      warmup_steps: Steps of linear learning-rate warm-up.
      clipnorm: Gradient-norm clipping; None: none.
      weight_decay: Decoupled weight decay (AdamW) when > 0.
      ema_momentum: Keep an exponential moving average of the weights with
        this momentum; validation, pictures, early stopping and the saved
        model use the averaged weights. 0 or None: no averaging.
      patience: Epochs without a better validation loss before stopping early
        (the best weights are restored at the end either way).
      max_train_seconds: Wall-clock budget of `fit`; training stops after the
        batch that exceeds it. 0 or None: no budget.
      validation_fraction: Share of the training rows held out for validation.
      num_examples: Training examples of a toy density (toy data only).
      num_bits: Bits kept per 8-bit pixel (TFDS image sets only).
      image_size: Side to crop and resize TFDS images to.
      conditional: Train a class-conditional model on the labels.
      levels, steps_per_level, hidden_channels, coupling, permutation: Glow's
        architecture (`tfflow.models.Glow`); None: the factory's default.
      scales, filters, blocks: RealNVP's on images (`tfflow.models.RealNVP`).
      num_couplings, hidden_units: RealNVP's on vectors and NICE's
        (`tfflow.models.NICE`); `hidden_units` is a tuple of MLP widths.
      seed: Seeds weights, shuffling, dequantisation noise and samples.
      strategy: Distribution strategy name (`STRATEGIES`, see `make_strategy`);
        `batch_size` stays the global batch, split over the replicas.
      tpu: The TPU's name or address for strategy "tpu" ("local" on a TPU VM).
      num_samples: Samples per picture.
      verbose: Keras verbosity for `fit` (1: progress bars, 2: a line per
        epoch, 0: silent); prints of `train` follow it too.
    """

    model: str = "glow"
    dataset: str = "digits"
    data_dir: str | None = None
    workdir: str | None = None
    epochs: int = 40
    batch_size: int = 32
    learning_rate: float = 2e-3
    lr_schedule: str = "cosine"
    warmup_steps: int = 200
    clipnorm: float | None = None
    weight_decay: float = 0.0
    ema_momentum: float = 0.99
    patience: int = 10
    max_train_seconds: float | None = 240.0
    validation_fraction: float = 0.1
    num_examples: int | None = None
    num_bits: int | None = None
    image_size: int | None = None
    conditional: bool = False
    levels: int | None = None
    steps_per_level: int | None = None
    hidden_channels: int | None = None
    coupling: str | None = None
    permutation: str | None = None
    scales: int | None = None
    filters: int | None = None
    blocks: int | None = None
    num_couplings: int | None = None
    hidden_units: tuple[int, ...] | None = None
    seed: int = 0
    strategy: str = "default"
    tpu: str | None = None
    num_samples: int = 64
    verbose: int | str = "auto"

    def resolved(self) -> TrainConfig:
        """A copy with `workdir` filled in and every field checked."""
        config = dataclasses.replace(self)
        if config.model not in MODEL_NAMES:
            raise UserError(f"unknown model {config.model!r}; expected one of "
                            f"{', '.join(MODEL_NAMES)}.")
        for name in ("epochs", "batch_size", "num_samples"):
            _check_positive_int(name, getattr(config, name))
        _check_positive_int("patience", config.patience, allow_zero=True)
        for name in ("num_examples", "levels", "steps_per_level", "hidden_channels", "scales",
                     "filters", "blocks", "num_couplings"):
            _check_positive_int(name, getattr(config, name), allow_none=True)
        if config.hidden_units is not None:
            config.hidden_units = tuple(config.hidden_units)
            if not config.hidden_units:
                raise UserError("expected hidden_units a non-empty list of widths, got ().")
            for width in config.hidden_units:
                _check_positive_int("every hidden_units width", width)
        _check_positive_int("warmup_steps", config.warmup_steps, allow_zero=True)
        if config.lr_schedule not in LR_SCHEDULES:
            raise UserError(f"unknown lr_schedule {config.lr_schedule!r}; expected one of "
                            f"{', '.join(LR_SCHEDULES)}.")
        if config.learning_rate is None:
            raise UserError("expected learning_rate > 0, got None.")
        if not (isinstance(config.weight_decay, (int, float)) and config.weight_decay >= 0):
            raise UserError(f"expected weight_decay >= 0, got {config.weight_decay!r}.")
        if config.ema_momentum is not None and not 0.0 <= config.ema_momentum < 1.0:
            raise UserError(f"expected ema_momentum in [0, 1) (0: no averaging), got "
                            f"{config.ema_momentum!r}.")
        for name in ("learning_rate", "clipnorm"):
            value = getattr(config, name)
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise UserError(f"expected {name} > 0, got {value!r}.")
        if config.max_train_seconds is not None and not config.max_train_seconds >= 0:
            raise UserError(f"expected max_train_seconds >= 0 (0: no budget), got "
                            f"{config.max_train_seconds!r}.")
        if config.strategy not in STRATEGIES:
            raise UserError(f"unknown strategy {config.strategy!r}; expected one of "
                            f"{', '.join(STRATEGIES)}.")
        if config.workdir is None:
            config.workdir = default_workdir(config.model, config.dataset)
        return config

    def to_json(self) -> str:
        """The config as indented JSON (what `train` writes to config.json)."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        """Reads `to_json`'s output; unknown keys (from a newer tfflow) are an error."""
        values = json.loads(text)
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown keys {unknown} in the run's {CONFIG_FILE}.")
        return cls(**values)

    def architecture(self) -> dict[str, Any]:
        """The architecture fields that are set, as factory keyword arguments."""
        return {name: getattr(self, name) for name in ARCHITECTURE_FIELDS
                if getattr(self, name) is not None}


@dataclasses.dataclass
class EvalResult:
    """A model's likelihood on one split.

    Attributes:
      split: The split evaluated.
      num_examples: Examples evaluated.
      nll: Mean negative log-likelihood in nats per example, in the data's own
        units (tabular: standardisation undone; images: density on [0, 1)^D).
      bits_per_dim: `tfflow.data.bits_per_dim(nll, D, num_levels)`.
      max_round_trip_error: max |x - decode(encode(x))| over the split, or None.
      gaussian_nll: Test NLL of a full-covariance Gaussian fitted to the
        training rows (tabular and 2-D data), or None.
      true_entropy: Entropy of the generating density where known, or None.
      conv_condition_numbers: {layer name: condition number of its 1x1
        convolution's matrix W} (`conv1x1_condition_numbers`), or None when not
        measured; empty when the model has no 1x1 convolutions.
    """

    split: str
    num_examples: int
    nll: float
    bits_per_dim: float
    max_round_trip_error: float | None = None
    gaussian_nll: float | None = None
    true_entropy: float | None = None
    conv_condition_numbers: dict[str, float] | None = None

    def summary(self) -> str:
        """One line: bits/dim, NLL, and the baselines that apply."""
        parts = [f"{self.split} {self.bits_per_dim:.4f} bits/dim (NLL {self.nll:.4f} nats)"]
        if self.gaussian_nll is not None:
            parts.append(f"Gaussian NLL {self.gaussian_nll:.4f} nats")
        if self.true_entropy is not None:
            parts.append(f"true entropy {self.true_entropy:.4f} nats, gap "
                         f"{self.nll - self.true_entropy:.4f}")
        if self.max_round_trip_error is not None:
            parts.append(f"max round-trip error {self.max_round_trip_error:.3g}")
        if self.conv_condition_numbers:
            name, worst = max(self.conv_condition_numbers.items(), key=lambda item: item[1])
            parts.append(f"{len(self.conv_condition_numbers)} 1x1 convs, worst condition "
                         f"number {worst:.3g} ({name})")
        return ", ".join(parts)


@dataclasses.dataclass
class TrainResult:
    """What `train` did.

    Attributes:
      config: The resolved config (workdir filled in).
      model: The trained model (best validation weights).
      history: Keras history: per-epoch "loss", "bits_per_dim", "val_..." lists.
      epochs_run: Epochs started (the last may be partial if the budget hit).
      best_epoch: 1-based epoch whose weights were kept (lowest val loss).
      stopped_by: "epochs", "early stopping" or "time budget" (a NaN loss
        raises `TrainingDiverged` instead).
      train_seconds: Wall-clock seconds inside `fit`.
      total_seconds: Wall-clock seconds of the whole `train` call.
      test: The test-split evaluation.
      files: Written files, by role ("model", "config", "logs", "samples_T0.7", ...);
        empty on a non-chief worker, which writes nothing.
    """

    config: TrainConfig
    model: Any = dataclasses.field(repr=False)
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int
    stopped_by: str
    train_seconds: float
    total_seconds: float
    test: EvalResult
    files: dict[str, str]

    def summary(self) -> str:
        """The one-line report printed last by `tfflow-train`."""
        config = self.config
        return (f"{config.model} on {config.dataset}: {self.test.summary()}; "
                f"{self.epochs_run} epoch{'s' if self.epochs_run != 1 else ''} "
                f"({self.stopped_by}, best epoch {self.best_epoch}) "
                f"in {self.train_seconds:.0f} s; "
                f"{'wrote' if self.files else 'the chief worker writes'} {config.workdir}")


# --------------------------------------------------------------- strategies


def _default_strategy(tpu: str | None) -> tf.distribute.Strategy:
    del tpu
    return tf.distribute.get_strategy()


def _mirrored_strategy(tpu: str | None) -> tf.distribute.Strategy:
    del tpu
    # Every local GPU; on a machine without one, the CPU (one replica).
    return tf.distribute.MirroredStrategy()


def _multi_worker_strategy(tpu: str | None) -> tf.distribute.Strategy:
    del tpu
    if not os.environ.get("TF_CONFIG"):
        raise UserError("strategy multi_worker reads the cluster from the TF_CONFIG environment "
                        "variable, which is not set; set it on every worker, e.g. "
                        '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
                        '"task": {"type": "worker", "index": 0}}.')
    try:
        cluster = json.loads(os.environ["TF_CONFIG"])
    except json.JSONDecodeError as error:
        raise UserError(f"TF_CONFIG is not valid JSON: {error}.") from None
    if not isinstance(cluster, dict) or "cluster" not in cluster or "task" not in cluster:
        raise UserError(f"expected TF_CONFIG with 'cluster' and 'task' keys, got "
                        f"{os.environ['TF_CONFIG']!r}.")
    return tf.distribute.MultiWorkerMirroredStrategy()


def _tpu_strategy(tpu: str | None) -> tf.distribute.Strategy:
    if not tpu:
        raise UserError("strategy tpu needs --tpu: the TPU's name or grpc:// address, or "
                        "'local' on a TPU VM.")
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError) as error:
        raise UserError(f"cannot reach TPU {tpu!r}: {' '.join(str(error).split())}") from None
    return tf.distribute.TPUStrategy(resolver)


# Strategy name -> factory(tpu address). tf.distribute does all communication;
# tfflow's train step scales the loss by the replica count and its metrics
# and ActNorm initialisation are replica-safe (see FlowModel).
STRATEGIES: dict[str, Callable[[str | None], tf.distribute.Strategy]] = {
    "default": _default_strategy,
    "mirrored": _mirrored_strategy,
    "multi_worker": _multi_worker_strategy,
    "tpu": _tpu_strategy,
}


def make_strategy(name: str, tpu: str | None = None) -> tf.distribute.Strategy:
    """Creates the `tf.distribute.Strategy` named `name` (the only place one is created).

    Args:
      name: "default" (no distribution: one device), "mirrored" (every local
        GPU, synchronous all-reduce), "multi_worker" (several hosts, the cluster
        from the TF_CONFIG environment variable; run the same command on every
        worker) or "tpu".
      tpu: For "tpu": the TPU's name or address ("local" on a TPU VM).

    Raises:
      UserError: for an unknown name, a missing TF_CONFIG or --tpu, or an
        unreachable TPU.
    """
    if name not in STRATEGIES:
        raise UserError(f"unknown strategy {name!r}; expected one of {', '.join(STRATEGIES)}.")
    return STRATEGIES[name](tpu)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's files (always, except non-chief workers).

    Under multi-worker training every worker runs the same program; only the
    chief (the "chief" task, or worker 0 when there is none) may write to the
    shared workdir, or the workers would overwrite each other's files.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type is None or task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


# ---------------------------------------------------------------- callbacks


class TimeBudget(keras.callbacks.Callback):
    """Stops `fit` after the first batch that ends past a wall-clock budget.

    The epoch in progress still runs its validation, so early stopping and
    best-weight restoring see it. `stopped` tells whether the budget fired.
    `seconds_before`: training seconds spent before this `fit` (a resumed run
    keeps its budget).
    """

    def __init__(self, max_seconds: float, *, seconds_before: float = 0.0) -> None:
        super().__init__()
        self.max_seconds = float(max_seconds)
        self.seconds_before = float(seconds_before)
        self.stopped = False
        self._start = 0.0

    def elapsed(self) -> float:
        """Training seconds so far, those before this `fit` included."""
        return time.monotonic() - self._start

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._start = time.monotonic() - self.seconds_before
        self.stopped = False

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if time.monotonic() - self._start > self.max_seconds:
            self.stopped = True
            self.model.stop_training = True


class AnnealLearningRate(keras.callbacks.Callback):
    """Linear warm-up to `peak`, then cosine decay to `final_fraction * peak`.

    The decay runs on the fraction of the run done, `max(steps / total_steps,
    seconds / max_seconds)`, so the rate reaches its floor when the epochs or
    the wall-clock budget run out, whichever comes first: a run cut short by
    the budget still ends on a small learning rate. The rate is set on the
    optimizer before every step (its `learning_rate` must be a float, not a
    schedule) and logged per epoch as "learning_rate".
    """

    def __init__(self, peak: float, *, total_steps: int, warmup_steps: int = 200,
                 max_seconds: float | None = None, final_fraction: float = 0.02,
                 step_before: int = 0, seconds_before: float = 0.0) -> None:
        super().__init__()
        self.peak = float(peak)
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps = int(warmup_steps)
        self.max_seconds = max_seconds or math.inf
        self.final_fraction = float(final_fraction)
        # A resumed run continues the schedule where the interrupted one was.
        self.step_before = int(step_before)
        self.seconds_before = float(seconds_before)
        self.step = self.step_before
        self._start = 0.0

    def learning_rate(self, step: int, seconds: float) -> float:
        """The rate for `step` (0-based) after `seconds` of training."""
        warmup = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps > 0 else 1.0
        done = min(1.0, max(step / self.total_steps, seconds / self.max_seconds))
        cosine = 0.5 * (1.0 + math.cos(math.pi * done))
        return self.peak * warmup * (self.final_fraction + (1.0 - self.final_fraction) * cosine)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._start = time.monotonic() - self.seconds_before
        self.step = self.step_before

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.model.optimizer.learning_rate = self.learning_rate(
            self.step, time.monotonic() - self._start)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.step += 1

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None:
            # Under a strategy the rate is a distributed variable, which float() rejects.
            logs["learning_rate"] = float(tf.convert_to_tensor(self.model.optimizer.learning_rate))


class _NonFiniteLoss(RuntimeError):
    """Raised out of `fit` by `DivergenceGuard`: ends training at the step, skipping validation."""

    def __init__(self, *, epoch: int, batch: int, step: int, loss: float) -> None:
        super().__init__(f"non-finite loss {loss} at step {step} (epoch {epoch + 1}, "
                         f"batch {batch + 1})")
        self.epoch, self.batch, self.step, self.loss = epoch, batch, step, loss


class DivergenceGuard(keras.callbacks.Callback):
    """Stops `fit` at the first training step whose loss is NaN or infinite.

    Unlike `keras.callbacks.TerminateOnNaN`, which lets the epoch's validation
    and callbacks run on the broken weights, it raises a `RuntimeError`
    subclass out of `fit` at once, carrying `epoch`, `batch` (0-based) and the
    1-based global `step`. With `restore_last_finite` it copies the weights
    before every step (one traced copy per step) and, on a non-finite loss,
    puts back the weights that produced it, the last finite ones, so that the
    caller can find the layer at fault (`find_non_finite_layer`): the failed
    update itself has usually made every weight NaN.
    """

    def __init__(self, *, restore_last_finite: bool = True) -> None:
        super().__init__()
        self.restore_last_finite = restore_last_finite
        self._variables: list[tf.Variable] = []
        self._copy: Callable[[], list[tf.Tensor]] | None = None
        self._last: list[tf.Tensor] | None = None
        self._epoch = 0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        variables = list(self.model.weights)
        self._variables = variables
        self._copy = tf.function(lambda: [tf.identity(v) for v in variables], autograph=False)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.restore_last_finite and self._copy is not None:
            self._last = self._copy()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        # The logged loss is the epoch's running mean: it turns non-finite at the
        # first non-finite step. (Multi-worker logs are rank 1.)
        loss = float(np.asarray(loss).reshape(-1)[0])
        if math.isfinite(loss):
            return
        step = int(self.model.optimizer.iterations.numpy())
        if self._last is not None:
            for variable, value in zip(self._variables, self._last):
                variable.assign(value)
        raise _NonFiniteLoss(epoch=self._epoch, batch=batch, step=step, loss=loss)


class _ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Keras's `EarlyStopping` on "val_loss" whose state survives a restart.

    `state()` is what `_Backup` stores; `resume_from(state, best_weights)`
    makes the next `fit` continue with it (Keras resets it in `on_train_begin`).
    """

    def __init__(self, patience: int) -> None:
        super().__init__(monitor="val_loss", mode="min", patience=patience,
                         restore_best_weights=True)
        self._resume: tuple[dict[str, Any], list[np.ndarray] | None] | None = None

    def state(self) -> dict[str, Any]:
        return {"wait": int(self.wait),
                "best": None if self.best is None else float(self.best),
                "best_epoch": int(self.best_epoch)}

    def resume_from(self, state: dict[str, Any], best_weights: list[np.ndarray] | None) -> None:
        self._resume = (state, best_weights)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        if self._resume is not None:
            state, self.best_weights = self._resume
            self.wait, self.best, self.best_epoch = state["wait"], state["best"], \
                state["best_epoch"]


class _Backup(keras.callbacks.Callback):
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
                 anneal: AnnealLearningRate | None, early_stopping: _ResumableEarlyStopping,
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

    def save(self, epochs_done: int) -> None:
        """Writes the backup of the state after `epochs_done` epochs."""
        os.makedirs(self.directory, exist_ok=True)
        weights_file = f"epoch-{epochs_done:05d}.npz"
        _save_arrays(os.path.join(self.directory, weights_file),
                     [v.numpy() for v in _training_variables(self.model)])
        stopping = self.early_stopping
        if stopping.best_weights is not None and stopping.best_epoch != self._best_epoch_saved:
            self._best_file = f"best-{stopping.best_epoch:05d}.npz"
            _save_arrays(os.path.join(self.directory, self._best_file), stopping.best_weights)
            self._best_epoch_saved = stopping.best_epoch
        state = {
            "format": 1, "epochs_done": epochs_done, "weights": weights_file,
            "best_weights": self._best_file, "early_stopping": stopping.state(),
            "anneal_step": None if self.anneal is None else self.anneal.step,
            "train_seconds": self.budget.elapsed(), "history": self.history,
        }
        _write_text_atomically(os.path.join(self.directory, BACKUP_STATE_FILE),
                               json.dumps(state, indent=1) + "\n")
        keep = {weights_file, self._best_file, BACKUP_STATE_FILE}
        for name in os.listdir(self.directory):
            if name not in keep:
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(self.directory, name))


def _training_variables(model: Any) -> list[tf.Variable]:
    """Every variable a resumed run needs, in a fixed order: the model's, then the optimizer's."""
    return list(model.weights) + list(model.optimizer.variables)


class TensorBoardLogger(keras.callbacks.Callback):
    """Writes the epoch's logs and pictures of the model as TensorBoard summaries.

    Scalars go to `<log_dir>/train` and `<log_dir>/validation` (tags "loss",
    "bits_per_dim", ...; the "val_" prefix is dropped so TensorBoard overlays
    the two runs), pictures to `<log_dir>/samples`. `pictures(model)` returns
    {tag: uint8 [H, W, C] image}; `train` passes one that draws sample grids at
    T=0.7 and T=1.0 (fixed seed, so epochs compare) for images and the learned
    density beside the data for 2-D data.

    Written with core TensorFlow ops (`tf.summary.write` with TensorBoard's
    plugin metadata), so training does not need the `tensorboard` package;
    viewing does: `pip install tensorboard && tensorboard --logdir <log_dir>`.
    """

    def __init__(self, log_dir: str,
                 pictures: Callable[[keras.Model], dict[str, tf.Tensor]] | None = None) -> None:
        super().__init__()
        self.log_dir = log_dir
        self.pictures = pictures
        self._writers: dict[str, Any] = {}

    def _writer(self, run: str) -> Any:
        if run not in self._writers:
            self._writers[run] = tf.summary.create_file_writer(os.path.join(self.log_dir, run))
        return self._writers[run]

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for key, value in (logs or {}).items():
            run, tag = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            with self._writer(run).as_default():
                tf.summary.write(tag, tf.cast(value, tf.float32), step=epoch,
                                 metadata=_plugin_metadata("scalars"))
        if self.pictures is not None:
            with self._writer("samples").as_default():
                for tag, picture in self.pictures(self.model).items():
                    picture = tf.convert_to_tensor(picture)
                    height, width = picture.shape[0], picture.shape[1]
                    tensor = tf.stack([tf.as_string(width), tf.as_string(height),
                                       tf.io.encode_png(picture)])
                    tf.summary.write(tag, tensor, step=epoch, metadata=_plugin_metadata("images"))
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


def _plugin_metadata(plugin_name: str) -> Any:
    """TensorBoard's SummaryMetadata for a scalar ("scalars") or PNG ("images") summary."""
    from tensorflow.core.framework import summary_pb2  # pylint: disable=import-outside-toplevel
    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin_name))


# ------------------------------------------------------------------- train


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
    _check_workdir_holds_this_run(config)
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
        _remove_temporaries(workdir, backup_dir)
        _write_text_atomically(files["config"], config.to_json() + "\n")

    backup = _read_backup(backup_dir)
    early_stopping = _ResumableEarlyStopping(config.patience)
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
        best_weights = _restore_backup(backup_dir, backup, model)
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
    backup_callback = _Backup(backup_dir, budget=budget, anneal=anneal,
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
    except _NonFiniteLoss as stop:
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


def _check_workdir_holds_this_run(config: TrainConfig) -> None:
    """Refuses a workdir whose config.json describes a different run.

    The same run (every field equal but `RESUMABLE_DIFFERENCES`) is resumed
    from its backup, or trained again when it has none.
    """
    path = os.path.join(config.workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return
    try:
        with open(path, encoding="utf-8") as handle:
            stored = json.load(handle)
        if not isinstance(stored, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as error:
        raise UserError(f"workdir {config.workdir!r} holds an unreadable {CONFIG_FILE} "
                        f"({error}); use another workdir or remove it.") from None
    wanted = json.loads(config.to_json())
    differences = sorted(key for key in set(stored) | set(wanted)
                         if key not in RESUMABLE_DIFFERENCES
                         and stored.get(key) != wanted.get(key))
    if not differences:
        return
    shown = "; ".join(f"{key}: {stored.get(key)!r} there, {wanted.get(key)!r} here"
                      for key in differences[:4])
    more = f" and {len(differences) - 4} more" if len(differences) > 4 else ""
    raise UserError(
        f"workdir {config.workdir!r} holds a different run ({stored.get('model')} on "
        f"{stored.get('dataset')}; this one is {config.model} on {config.dataset}; "
        f"{shown}{more}); use another workdir or remove that one.")


def _read_backup(directory: str) -> dict[str, Any] | None:
    """The backup's state (see `_Backup`), or None when there is none to resume."""
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


def _restore_backup(directory: str, state: dict[str, Any],
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


def _initialize(model: Any, config: TrainConfig, num_classes: int | None,
                size: int = 512) -> None:
    """Glow's data-dependent initialisation on up to `size` training examples."""
    if model.is_initialized:
        return
    xs, labels, count = [], [], 0
    for batch in _load(config, "train", shuffle=True):
        x, label = batch if num_classes is not None else (batch, None)
        xs.append(x)
        labels.append(label)
        count += int(x.shape[0])
        if count >= size:
            break
    model.initialize(tf.concat(xs, 0)[:size],
                     None if num_classes is None else tf.concat(labels, 0)[:size])


def _training_batch(config: TrainConfig, epoch: int, batch: int) -> Any:
    """The `batch`-th training batch of epoch `epoch` (0-based), as `train` saw it."""
    ds = _load(config, "train", shuffle=True)
    for _ in range(epoch):
        iter(ds)  # see `train`: each pass draws its seeds when its iterator is made
    for index, element in enumerate(ds):
        if index == batch:
            return element
    return element  # pylint: disable=undefined-loop-variable


def _diverged(model: Any, config: TrainConfig, stop: _NonFiniteLoss,
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
    _check_positive_int("num_samples", num_samples)
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


def default_workdir(model: str, dataset: str) -> str:
    """`./tfflow_runs/<model>-<dataset>`, with a file path reduced to its stem."""
    name = dataset
    if name.lower().endswith((".npy", ".csv")):
        name = os.path.splitext(os.path.basename(name))[0]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "data"
    return os.path.join(".", "tfflow_runs", f"{model}-{name}")


# ------------------------------------------------------------------ helpers


def _say(config: TrainConfig, message: str) -> None:
    if config.verbose != 0:
        print(message, flush=True)


def _check_positive_int(name: str, value: Any, *, allow_none: bool = False,
                        allow_zero: bool = False) -> None:
    if value is None and allow_none:
        return
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise UserError(f"expected {name} an int >= {low}, got {value!r}.")


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


# ------------------------------------------------------------- atomic files


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


def _write_text_atomically(path: str, text: str) -> str:
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


def _remove_temporaries(*directories: str) -> None:
    """Removes what killed processes left of their atomic writes."""
    for directory in directories:
        if not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            if name.startswith(TMP_PREFIX):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(directory, name))


# ------------------------------------------------------- numerical health


def _flow_children(layer: Any) -> list[Any]:
    from tfflow.layers import structure  # pylint: disable=import-outside-toplevel
    if isinstance(layer, structure.ChainLayer):
        return list(layer.flow_layers)
    if isinstance(layer, structure.FactorOutLayer):
        return [layer.inner]
    return []


class _Found(Exception):
    pass


def find_non_finite_layer(model: Any, x: Any, labels: Any = None) -> str | None:
    """Names the first part of the flow that is not finite on `x`, or None.

    Walks the model's flow layers (`model.flow`, ChainLayers and factored-out
    levels descended into) in the data -> latent direction, as `log_prob` and
    training run it (batch statistics for batch norm). First every layer's
    weights are checked, then each leaf layer's output and log-det on `x`.

    Returns:
      A phrase such as "layer 'level_0/affine_coupling_layer_1' gave a
      non-finite log-det", or None when everything is finite.
    """
    from tfflow.layers.base import FlowContext  # pylint: disable=import-outside-toplevel

    def walk(layer: Any, path: str, visit: Callable[[Any, str], None]) -> None:
        children = _flow_children(layer)
        if not children:
            visit(layer, path)
        for child in children:
            walk(child, f"{path}/{child.name}" if path else child.name, visit)

    def check_weights(layer: Any, path: str) -> None:
        bad = [weight.name for weight in layer.weights
               if tf.as_dtype(weight.dtype).is_floating
               and not np.all(np.isfinite(weight.numpy()))]
        if bad:
            raise _Found(f"layer {path!r} has non-finite weights ({', '.join(bad)})")

    context = FlowContext(training=True, labels=None if labels is None else
                          tf.convert_to_tensor(labels, tf.int32))
    largest_growth: list[Any] = ["", 0.0]  # [path, max|out| / max|in|] of the worst layer

    def run(layer: Any, path: str, value: tf.Tensor) -> tf.Tensor:
        from tfflow.layers import structure  # pylint: disable=import-outside-toplevel
        if isinstance(layer, structure.ChainLayer):
            for child in layer.flow_layers:
                value = run(child, f"{path}/{child.name}", value)
            return value
        if isinstance(layer, structure.FactorOutLayer):
            kept = run(layer.inner, f"{path}/{layer.inner.name}", value[..., :layer.channels])
            return tf.concat([kept, value[..., layer.channels:]], axis=-1)
        bijector = layer.bijector(context)
        output = bijector.inverse(value)
        growth = float(tf.reduce_max(tf.abs(output))) / max(float(tf.reduce_max(tf.abs(value))),
                                                             1e-30)
        if growth > largest_growth[1]:
            largest_growth[:] = [path, growth]
        log_det = bijector.inverse_log_det_jacobian(value,
                                                    event_ndims=bijector.inverse_min_event_ndims)
        if not np.all(np.isfinite(log_det.numpy())):
            raise _Found(f"layer {path!r} gave a non-finite log-det (its scale overflowed)")
        if not np.all(np.isfinite(output.numpy())):
            raise _Found(f"layer {path!r} gave a non-finite output")
        return output

    try:
        walk(model.flow, model.flow.name, check_weights)
        x = tf.cast(tf.convert_to_tensor(x), model.dtype_name)
        if not np.all(np.isfinite(x.numpy())):
            return "the training batch itself is not finite"
        z = run(model.flow, model.flow.name, x)
        squares = tf.reduce_sum(tf.square(tf.reshape(z, [tf.shape(z)[0], -1])), axis=-1)
        if not np.all(np.isfinite(squares.numpy())):
            return (f"the latent z is finite but so large (max |z| = "
                    f"{float(tf.reduce_max(tf.abs(z))):.3g}) that its Gaussian log-density "
                    f"overflows; layer {largest_growth[0]!r} amplified its input most "
                    f"(x{largest_growth[1]:.3g})")
    except _Found as found:
        return str(found)
    return None


def conv1x1_condition_numbers(model: Any) -> dict[str, float]:
    """{layer name: condition number of W} for every 1x1 convolution of `model`.

    W is read off the layer's own bijector (its forward image of the identity
    basis), so the LU and the full parametrisation are measured alike. A large
    number means the layer is close to singular: its inverse (sampling, for a
    Glow trained by `log_prob`) amplifies round-off by up to that factor.
    """
    from tfflow.layers import mixing  # pylint: disable=import-outside-toplevel
    numbers: dict[str, float] = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):  # pylint: disable=protected-access
        if not isinstance(layer, (mixing.LUConv1x1Layer, mixing.Conv1x1Layer)):
            continue
        bijector = layer.bijector()
        channels = int(layer.weights[-1].shape[-1])
        basis = np.eye(channels, dtype=layer.compute_dtype)
        if layer.event_ndims == 3:
            basis = basis.reshape(channels, 1, 1, channels)
        matrix = np.asarray(bijector.forward(basis), np.float64).reshape(channels, channels)
        name = layer.name
        while name in numbers:
            name += "'"
        numbers[name] = float(np.linalg.cond(matrix))
    return numbers
