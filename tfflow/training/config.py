"""A training run's settings (`TrainConfig`) and what it produced (`TrainResult`, `EvalResult`)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import warnings
from typing import Any

from tfflow._rules import is_count, is_seed
from tfflow.data.names import TOY_DATASETS, is_table_file
from tfflow.training.errors import UserError

__all__ = [
    "ARCHITECTURE_FIELDS",
    "check_positive_int",
    "data_kind",
    "DEFAULT_BATCH_AND_RATE",
    "CONFIG_FILE",
    "default_workdir",
    "EvalResult",
    "LOG_DIR",
    "LR_SCHEDULES",
    "MODEL_FILE",
    "MODEL_NAMES",
    "model_names",
    "PRECISIONS",
    "RESUMABLE_DIFFERENCES",
    "TrainConfig",
    "TrainResult",
]


def model_names() -> tuple[str, ...]:
    """The names `TrainConfig.model` takes: the keys of `tfflow.models.MODELS`, its one owner."""
    from tfflow import models  # pylint: disable=import-outside-toplevel  # imports TensorFlow
    return tuple(models.MODELS)


def __getattr__(name: str) -> Any:
    # `MODEL_NAMES` is read from tfflow.models when asked for, so that this
    # module (and the flags built from it) loads without TensorFlow.
    if name == "MODEL_NAMES":
        return model_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


CONFIG_FILE = "config.json"


MODEL_FILE = "model.keras"


# Config fields that may differ between a run and its resumption: they change
# neither the model nor the training arithmetic.
RESUMABLE_DIFFERENCES: tuple[str, ...] = ("workdir", "data_dir", "verbose", "num_samples",
                                          "strategy", "tpu", "intra_op_threads")


LOG_DIR = "logs"


LR_SCHEDULES: tuple[str, ...] = ("cosine", "constant")


# Names of the architecture fields of TrainConfig; each is passed to the model
# factory only when set, so the factory's own defaults apply otherwise.
# The names are the factories' keyword arguments (tfflow.models.Glow, RealNVP, NICE).
PRECISIONS: tuple[str, ...] = ("float32", "mixed_bfloat16", "mixed_float16")

ARCHITECTURE_FIELDS: tuple[str, ...] = (
    "scales", "hidden_channels",  # Glow and RealNVP on images
    "steps_per_scale", "coupling", "permutation",  # Glow
    "blocks",  # RealNVP on images
    "num_couplings", "hidden_units",  # RealNVP and NICE on vectors (NICE: on anything)
    "transforms", "num_bins",  # MAF, IAF, NSF (with hidden_units); num_bins: splines
)


#: (batch_size, learning_rate) of a run that sets neither, by `data_kind`. Images: the
#: default Glow's one-minute schedule on digits (TrainConfig's docstring). Vectors (tables,
#: toy densities): the rate their flows were measured with (benchmarks/README.md); the
#: images' 8e-3 at batch 64 moved a small conditional MAF's samples off its data.
DEFAULT_BATCH_AND_RATE: dict[str, tuple[int, float]] = {"images": (64, 8e-3),
                                                         "vectors": (32, 2e-3)}


def data_kind(dataset: str) -> str:
    """"vectors" for a table file or a toy density, "images" for every other data set."""
    if is_table_file(dataset) or dataset in TOY_DATASETS:
        return "vectors"
    return "images"


@dataclasses.dataclass
class TrainConfig:
    """Every hyper-parameter of a training run.

    The defaults are the default `tfflow-train` run: Glow on the 1,293 training
    digits in under a minute on 2 CPU cores, where overfitting is the enemy: a
    short cosine-annealed run (26 epochs of batch 64 at a peak rate of 8e-3), a
    moving average of the weights (momentum 0.99), early stopping on the
    validation loss, best weights restored, one CPU thread per op
    (`intra_op_threads`). A training step of this small model costs about as
    much at batch 64 as at 32 on a CPU (per-op overhead, not arithmetic: 72
    vs 65 ms, measured), so batch 64 halves an epoch, and the higher rate
    makes up for the fewer steps. Measured on 2 CPU cores (test bits/dim,
    seeds 0, 1, 2): 2.174, 2.192 and 2.186 in 52-56 s wall (22 epochs: 2.184,
    2.213, 2.193; 30 epochs: 2.173, 2.183, 2.172 in 49-58 s; the validation
    loss is lowest around epoch 21-23 either way). The earlier default (40
    epochs of batch 32 at 2e-3, early-stopped after about 31) took 140-154 CPU
    seconds for 2.18 and 2.21 (seeds 0 and 1); without the moving average
    2.23 and 2.25.

    Attributes:
      model: A name in `tfflow.models.MODELS` ("glow", "realnvp", "nice", ...).
      preset: A paper configuration, a name in `tfflow.models.PRESETS`
        ("glow_cifar10", "realnvp_cifar10"): sets `model` and the
        architecture (`tfflow.models.preset`); architecture fields that are
        set still override it. None: no preset.
      dataset: An embedded name (`tfflow.data.EMBEDDED_DATASETS`), a TFDS image
        set prepared under `data_dir`, or a path to a `.npy`/`.csv` table.
      data_dir: TFDS data directory.
      workdir: Output folder; default `./tfflow_runs/<model>-<dataset>`.
      epochs: Most passes over the training split.
      batch_size: Global batch size; None: `DEFAULT_BATCH_AND_RATE` for the
        kind of data (64 for images, 32 for tables and toy densities).
      learning_rate: Adam's peak learning rate; None: `DEFAULT_BATCH_AND_RATE`
        (8e-3 for images, 2e-3 for tables and toy densities).
      lr_schedule: "cosine": linear warm-up, then cosine decay over the run
        (the epochs or the time budget, whichever ends first; see
        `AnnealLearningRate`); "constant": warm-up, then flat (the model's own
        `compile()` default).
      warmup_steps: Steps of linear learning-rate warm-up; `train` uses at most a
        tenth of the planned steps (epochs x steps per epoch) and says so.
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
      context_columns: Tables only: the columns (CSV header names or 0-based
        indices) that are the context c; the run trains p(other columns | c)
        with a vector model's `context_shape=(C,)`. Stored in config.json, so
        evaluate, sample, export and resume need only the workdir.
      scales, hidden_channels: the number of scales and the coupling
        networks' width, of Glow and of RealNVP on images; None (as for every
        architecture field): the factory's default.
      steps_per_scale, coupling, permutation: Glow's (`tfflow.models.Glow`).
      blocks: RealNVP's ResNet blocks on images (`tfflow.models.RealNVP`).
      num_couplings, hidden_units: RealNVP's on vectors and NICE's
        (`tfflow.models.NICE`); `hidden_units` is a tuple of MLP widths.
      transforms, num_bins: the autoregressive layers of MAF, IAF and NSF
        (`tfflow.models.MAF`; their MADEs take `hidden_units`) and the bins of
        spline transforms (NSF; RealNVP and Glow with coupling "spline").
      memory_saving: Train without storing activations: the backward pass
        rebuilds each flow step's input from its output (the `memory_saving`
        argument of the factories); peak memory stops growing with depth, at
        the cost of about one more pass through the flow per step.
      precision: "float32", or a Keras mixed-precision policy,
        "mixed_bfloat16" or "mixed_float16": the coupling networks compute in
        16 bits, the flow, its log-dets and the loss stay float32
        (`tfflow.mixed_precision`); "mixed_float16" adds loss scaling.
      seed: Seeds weights, shuffling, dequantisation noise and samples; an
        integer in [0, 2**32 - 1].
      deterministic: Make the run reproducible: TensorFlow's op determinism
        (`tfflow.training.enable_determinism`) and a learning-rate schedule
        that follows the steps only; the same config then gives bit-identical
        weights, in one run or killed and resumed. Off, the cosine schedule
        also follows the clock when `max_train_seconds` is set (the default),
        so runs differ (README: Reproducible runs).
      strategy: Distribution strategy name (`STRATEGIES`, see `make_strategy`);
        `batch_size` stays the global batch, split over the replicas.
      tpu: The TPU's name or address for strategy "tpu" ("local" on a TPU VM).
      intra_op_threads: CPU threads one TensorFlow op may use; 0: TensorFlow's
        default (every core). None: 1 for the embedded data sets and tables on
        a machine without a GPU (their ops are too small to split: the
        default run trains in about half the time on 2 cores), 0 otherwise
        (`tfflow.training.threads`). Set once per process, before
        TensorFlow's runtime starts.
      num_samples: Samples per picture.
      verbose: Keras verbosity for `fit` (1: progress bars, 2: a line per
        epoch, 0: silent); prints of `train` follow it too.
      levels, steps_per_level, filters: deprecated names of `scales`,
        `steps_per_scale` and `hidden_channels` (`resolved` moves them, with
        a `DeprecationWarning`; a config.json that has them reads as the new).
    """

    model: str = "glow"
    preset: str | None = None
    dataset: str = "digits"
    data_dir: str | None = None
    workdir: str | None = None
    epochs: int = 26
    batch_size: int | None = None
    learning_rate: float | None = None
    lr_schedule: str = "cosine"
    warmup_steps: int = 200
    clipnorm: float | None = None
    weight_decay: float = 0.0
    ema_momentum: float = 0.99
    patience: int = 10
    max_train_seconds: float | None = 120.0
    validation_fraction: float = 0.1
    num_examples: int | None = None
    num_bits: int | None = None
    image_size: int | None = None
    conditional: bool = False
    context_columns: tuple[str, ...] | None = None
    scales: int | None = None
    steps_per_scale: int | None = None
    hidden_channels: int | None = None
    coupling: str | None = None
    permutation: str | None = None
    blocks: int | None = None
    num_couplings: int | None = None
    hidden_units: tuple[int, ...] | None = None
    transforms: int | None = None
    num_bins: int | None = None
    memory_saving: bool = False
    precision: str = "float32"
    seed: int = 0
    deterministic: bool = False
    strategy: str = "default"
    tpu: str | None = None
    intra_op_threads: int | None = None
    num_samples: int = 64
    verbose: int | str = "auto"
    levels: int | None = dataclasses.field(default=None, repr=False)
    steps_per_level: int | None = dataclasses.field(default=None, repr=False)
    filters: int | None = dataclasses.field(default=None, repr=False)

    def resolved(self) -> TrainConfig:
        """A copy with `workdir` filled in and every field checked."""
        config = dataclasses.replace(self)
        for old, new in RENAMED_FIELDS.items():
            value = getattr(config, old)
            if value is None:
                continue
            if getattr(config, new) is not None:
                raise UserError(f"expected {new} only ({old} is its deprecated old name), "
                                f"got both: {new}={getattr(config, new)!r}, {old}={value!r}.")
            warnings.warn(f"TrainConfig: {old} is deprecated and will be removed in the next "
                          f"release; use {new}.", DeprecationWarning, stacklevel=2)
            setattr(config, new, value)
            setattr(config, old, None)
        names = model_names()
        if config.model not in names:
            raise UserError(f"unknown model {config.model!r}; expected one of "
                            f"{', '.join(names)}.")
        if config.preset is not None:
            config.model = _preset(config.preset).model
        default_batch, default_rate = DEFAULT_BATCH_AND_RATE[data_kind(config.dataset)]
        if config.batch_size is None:
            config.batch_size = default_batch
        if config.learning_rate is None:
            config.learning_rate = default_rate
        for name in ("epochs", "batch_size", "num_samples"):
            check_positive_int(name, getattr(config, name))
        check_positive_int("patience", config.patience, allow_zero=True)
        check_positive_int("intra_op_threads", config.intra_op_threads, allow_none=True,
                           allow_zero=True)
        for name in ("num_examples", "scales", "steps_per_scale", "hidden_channels",
                     "blocks", "num_couplings", "transforms", "num_bins"):
            check_positive_int(name, getattr(config, name), allow_none=True)
        if config.hidden_units is not None:
            config.hidden_units = tuple(config.hidden_units)
            if not config.hidden_units:
                raise UserError("expected hidden_units a non-empty list of widths, got ().")
            for width in config.hidden_units:
                check_positive_int("every hidden_units width", width)
        check_positive_int("warmup_steps", config.warmup_steps, allow_zero=True)
        if not is_seed(config.seed):
            raise UserError(f"expected seed an integer in [0, 2**32 - 1], got "
                            f"{config.seed!r}.")
        config.context_columns = _context_columns(config)
        if is_table_file(config.dataset):
            # The run (config.json) names the file itself, wherever it is run from later.
            config.dataset = os.path.abspath(os.path.expanduser(config.dataset))
        if config.lr_schedule not in LR_SCHEDULES:
            raise UserError(f"unknown lr_schedule {config.lr_schedule!r}; expected one of "
                            f"{', '.join(LR_SCHEDULES)}.")
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
        if config.precision not in PRECISIONS:
            raise UserError(f"unknown precision {config.precision!r}; expected one of "
                            f"{', '.join(PRECISIONS)}.")
        # Here, not at the top: this module loads without TensorFlow (see model_names).
        from tfflow.training.strategies import STRATEGIES  # pylint: disable=import-outside-toplevel
        if config.strategy not in STRATEGIES:
            raise UserError(f"unknown strategy {config.strategy!r}; expected one of "
                            f"{', '.join(STRATEGIES)}.")
        if config.workdir is None:
            config.workdir = default_workdir(config.model, config.dataset)
        return config

    def to_json(self) -> str:
        """The config as indented JSON (what `train` writes to config.json).

        The deprecated field names are left out (`resolved` moved their values).
        """
        values = {name: value for name, value in dataclasses.asdict(self).items()
                  if name not in RENAMED_FIELDS}
        return json.dumps(values, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        """Reads `to_json`'s output; unknown keys (from a newer tfflow) are an error.

        A config.json written before the renames reads under the new names.
        """
        values = renamed_fields(json.loads(text))
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown keys {unknown} in the run's {CONFIG_FILE}.")
        return cls(**values)

    def architecture(self) -> dict[str, Any]:
        """The architecture fields that are set, as factory keyword arguments.

        With a `preset`, its arguments first (less `num_levels`, which the
        data decides), then the fields that are set.
        """
        fields = {name: getattr(self, name) for name in ARCHITECTURE_FIELDS
                  if getattr(self, name) is not None}
        if self.preset is None:
            return fields
        arguments = {name: value for name, value in _preset(self.preset).arguments.items()
                     if name != "num_levels"}
        return {**arguments, **fields}


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
        training rows (tabular and 2-D data), or None; for a conditional
        table, of the conditional Gaussian (the linear-Gaussian regression
        of x on the context columns).
      gaussian_name: What `gaussian_nll` is, for the summary.
      gaussian_note: Why a continuous data set has no Gaussian baseline
        (e.g. a singular training covariance), or None.
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
    gaussian_name: str = "the full-covariance Gaussian fit"
    gaussian_note: str | None = None

    def summary(self) -> str:
        """One line: bits/dim, NLL, and the baselines that apply."""
        if self.gaussian_nll is None and self.gaussian_note is not None:
            parts = [f"{self.split} NLL {self.nll:.4f} nats per row (the data's units); "
                     f"{self.gaussian_note}"]
        elif self.gaussian_nll is None:
            parts = [f"{self.split} {self.bits_per_dim:.4f} bits/dim (NLL {self.nll:.4f} nats "
                     f"per example)"]
        else:  # continuous data (tables, 2-D points): nats per row in the data's own units
            margin = self.gaussian_nll - self.nll
            parts = [f"{self.split} NLL {self.nll:.4f} nats per row (the data's units), "
                     f"{abs(margin):.4f} {'better' if margin >= 0 else 'worse'} than "
                     f"{self.gaussian_name}'s {self.gaussian_nll:.4f}"]
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

    def _stopped(self) -> str:
        if self.stopped_by == "epochs":
            return "all planned"
        if self.stopped_by != "time budget":
            return self.stopped_by
        return (f"stopped by the {self.config.max_train_seconds:g} s time budget after "
                f"{self.epochs_run} of {self.config.epochs} epochs; --max_train_seconds=0 lifts it")

    def summary(self) -> str:
        """The one-line report printed last by `tfflow-train`."""
        config = self.config
        return (f"{config.model} on {config.dataset}: {self.test.summary()}; "
                f"{self.epochs_run} epoch{'s' if self.epochs_run != 1 else ''} "
                f"({self._stopped()}, best epoch {self.best_epoch}"
                f"{' = the initialised model' if self.best_epoch == 0 else ''}) "
                f"in {self.train_seconds:.0f} s; "
                f"{'wrote' if self.files else 'the chief worker writes'} {config.workdir}")


def _context_columns(config: TrainConfig) -> tuple[str, ...] | None:
    """`context_columns` as a tuple of strings, checked where the file is not needed.

    Which names and indices exist is checked when the table is read
    (`tfflow.data.table.resolve_columns`).
    """
    columns = config.context_columns
    if columns is None:
        return None
    if isinstance(columns, str):
        columns = columns.split(",")
    columns = tuple(str(column).strip() for column in columns)
    if not columns or any(not column for column in columns):
        raise UserError(f"expected context_columns as one or more column names or 0-based "
                        f"indices, e.g. a,b or 0,3, got {','.join(columns)!r}.")
    if not is_table_file(config.dataset):
        raise UserError(f"context_columns applies to .npy/.csv tables, got dataset "
                        f"{config.dataset!r}.")
    if config.conditional:
        raise UserError("expected conditional (class labels) or context_columns, got both.")
    return columns


# Fields renamed to the factories' vocabulary: {old name: new name}.
RENAMED_FIELDS: dict[str, str] = {"levels": "scales", "steps_per_level": "steps_per_scale",
                                  "filters": "hidden_channels"}


def renamed_fields(values: dict) -> dict:
    """A config.json's values with the old field names moved to the new ones."""
    values = dict(values)
    for old, new in RENAMED_FIELDS.items():
        value = values.pop(old, None)
        if value is not None and values.get(new) is None:
            values[new] = value
    return values


def _preset(name: str) -> Any:
    """`tfflow.models.PRESETS[name]`; an unknown name is a UserError listing them."""
    from tfflow.models import presets  # pylint: disable=import-outside-toplevel  # TensorFlow
    try:
        return presets.get(name)
    except ValueError:
        raise UserError(f"unknown preset {name!r}; expected one of "
                        f"{', '.join(presets.preset_names())}.") from None


def default_workdir(model: str, dataset: str) -> str:
    """`./tfflow_runs/<model>-<dataset>`, with a file path reduced to its stem."""
    name = dataset
    if is_table_file(name):
        name = os.path.splitext(os.path.basename(name))[0]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "data"
    return os.path.join(".", "tfflow_runs", f"{model}-{name}")


def check_positive_int(name: str, value: Any, *, allow_none: bool = False,
                        allow_zero: bool = False) -> None:
    if value is None and allow_none:
        return
    low = 0 if allow_zero else 1
    if not is_count(value, low):
        raise UserError(f"expected {name} an int >= {low}, got {value!r}.")
