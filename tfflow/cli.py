"""Flags and main functions of the command-line apps `tfflow-train`, `-sample`, `-evaluate`.

Each app in `bin/` defines its own flags and runs its main:

    cli.define_train_flags()
    app.run(cli.train_main, flags_parser=cli.parse_flags)

The logic lives in `tfflow.training`; here are only flags and printing. User
errors (an unknown model or data set, a missing run, a bad flag value) print one
line `<app>: error: ...` on stderr and exit with status 2, without a traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from absl import flags
from absl import logging

from tfflow import training

__all__ = [
    "define_evaluate_flags",
    "define_sample_flags",
    "define_train_flags",
    "evaluate_main",
    "parse_flags",
    "sample_main",
    "train_main",
]

FLAGS = flags.FLAGS
USER_ERROR_EXIT_CODE = 2

_DEFAULTS = training.TrainConfig()
_DEFAULT_WORKDIR = training.default_workdir(_DEFAULTS.model, _DEFAULTS.dataset)


def define_train_flags() -> None:
    """Defines `tfflow-train`'s flags, defaults taken from `training.TrainConfig`."""
    d = _DEFAULTS
    flags.DEFINE_string("model", d.model, f"Flow: {', '.join(training.MODEL_NAMES)}.")
    flags.DEFINE_string("dataset", d.dataset,
                        "Embedded set (digits, two_moons, circles, eight_gaussians, "
                        "checkerboard, pinwheel, spirals), a TFDS image set prepared under "
                        "--data_dir (mnist, fashion_mnist, cifar10, celeb_a, ...), or a path "
                        "to a .npy/.csv table [N, D].")
    flags.DEFINE_string("data_dir", d.data_dir, "TFDS data directory (nothing is downloaded).")
    flags.DEFINE_string("workdir", None,
                        "Output folder (default ./tfflow_runs/<model>-<dataset>).")
    flags.DEFINE_integer("epochs", d.epochs, "Most passes over the training split.")
    flags.DEFINE_integer("batch_size", d.batch_size, "Global batch size.")
    flags.DEFINE_float("learning_rate", d.learning_rate,
                       "Peak learning rate (default: the model's).")
    flags.DEFINE_float("clipnorm", d.clipnorm, "Gradient-norm clipping (default: the model's).")
    flags.DEFINE_integer("patience", d.patience,
                         "Epochs without a better validation loss before stopping; the best "
                         "weights are restored either way.")
    flags.DEFINE_float("max_train_seconds", d.max_train_seconds,
                       "Wall-clock budget for training in seconds; 0: none.")
    flags.DEFINE_float("validation_fraction", d.validation_fraction,
                       "Share of the training rows held out for early stopping.")
    flags.DEFINE_integer("num_examples", d.num_examples,
                         "Training examples drawn from a toy density (toy sets only).")
    flags.DEFINE_integer("num_bits", d.num_bits, "Bits kept per 8-bit pixel (TFDS images).")
    flags.DEFINE_integer("image_size", d.image_size, "Crop and resize TFDS images to this side.")
    flags.DEFINE_boolean("conditional", d.conditional, "Class-conditional model (uses labels).")
    flags.DEFINE_integer("levels", d.levels, "Glow: number of scales L.")
    flags.DEFINE_integer("steps_per_level", d.steps_per_level, "Glow: flow steps K per scale.")
    flags.DEFINE_integer("hidden_channels", d.hidden_channels,
                         "Glow: width of the coupling networks.")
    flags.DEFINE_string("coupling", d.coupling, "Glow: affine or additive coupling.")
    flags.DEFINE_string("permutation", d.permutation,
                        "Glow: lu (1x1 conv, LU form), conv, reverse or shuffle.")
    flags.DEFINE_integer("scales", d.scales, "RealNVP on images: number of scales.")
    flags.DEFINE_integer("filters", d.filters, "RealNVP on images: ResNet conditioner width.")
    flags.DEFINE_integer("blocks", d.blocks, "RealNVP on images: ResNet blocks per conditioner.")
    flags.DEFINE_integer("num_couplings", d.num_couplings,
                         "RealNVP on vectors and NICE: number of coupling layers.")
    flags.DEFINE_list("hidden_units", d.hidden_units,
                      "RealNVP on vectors and NICE: MLP widths, e.g. 128,128.")
    flags.DEFINE_integer("seed", d.seed, "Seeds weights, data order, noise and samples.")
    flags.DEFINE_string("strategy", d.strategy,
                        f"Distribution strategy: {', '.join(training.STRATEGIES)}.")
    flags.DEFINE_integer("num_samples", d.num_samples, "Samples per picture.")
    flags.DEFINE_integer("verbose", 1, "Keras verbosity: 1 progress bars, 2 a line per epoch, "
                         "0 silent (the summary line is printed regardless).")


def define_sample_flags() -> None:
    """Defines `tfflow-sample`'s flags."""
    flags.DEFINE_string("workdir", _DEFAULT_WORKDIR, "A folder written by tfflow-train.")
    flags.DEFINE_integer("num_samples", 64, "How many samples.")
    flags.DEFINE_float("temperature", 1.0, "Scale of the latent standard deviation (Glow: 0.7).")
    flags.DEFINE_integer("seed", 0, "Sampling seed.")
    flags.DEFINE_integer("label", None, "Class to sample (class-conditional models); default: "
                         "cycle through the classes.")
    flags.DEFINE_string("output", None,
                        "A .png (image grid, or 2-D histogram for 2-D data) or .npy (raw "
                        "samples in the data's units) file; default <workdir>/samples.png.")


def define_evaluate_flags() -> None:
    """Defines `tfflow-evaluate`'s flags."""
    flags.DEFINE_string("workdir", _DEFAULT_WORKDIR, "A folder written by tfflow-train.")
    flags.DEFINE_string("split", "test", "Split to evaluate: test, validation or train.")
    flags.DEFINE_integer("batch_size", 256, "Examples per evaluation batch.")


def parse_flags(argv: Sequence[str]) -> list[str]:
    """`app.run`'s flags parser: a bad flag is a one-line error and exit status 2."""
    try:
        return FLAGS(argv)
    except flags.Error as error:
        _fail(_program(argv), str(error))


def train_main(argv: Sequence[str]) -> None:
    """`tfflow-train`: trains, writes the run's files, prints a one-line summary last."""
    def run() -> None:
        _reject_positional(argv)
        values = {field: getattr(FLAGS, field) for field in _train_config_fields()}
        if values["hidden_units"] is not None:
            values["hidden_units"] = tuple(_int_list("hidden_units", values["hidden_units"]))
        config = training.TrainConfig(**values)
        result = training.train(config)
        for role, path in sorted(result.files.items()):
            print(f"  {role}: {path}")
        print(result.summary(), flush=True)
    _run_reporting_user_errors(argv, run)


def sample_main(argv: Sequence[str]) -> None:
    """`tfflow-sample`: samples a trained model into a PNG or .npy file."""
    def run() -> None:
        _reject_positional(argv)
        output = FLAGS.output or os.path.join(FLAGS.workdir, "samples.png")
        if not output.lower().endswith((".png", ".npy")):
            raise training.UserError(f"expected --output ending in .png or .npy, got {output!r}.")
        model, config = training.load_run(FLAGS.workdir)
        path = training.write_samples(model, config, output, num_samples=FLAGS.num_samples,
                                      temperature=FLAGS.temperature, seed=FLAGS.seed,
                                      label=FLAGS.label)
        print(f"wrote {FLAGS.num_samples} samples at T={FLAGS.temperature:g} to {path}")
    _run_reporting_user_errors(argv, run)


def evaluate_main(argv: Sequence[str]) -> None:
    """`tfflow-evaluate`: bits/dim and worst round-trip error of a trained model."""
    def run() -> None:
        _reject_positional(argv)
        if FLAGS.split not in ("train", "validation", "test"):
            raise training.UserError(f"expected --split train, validation or test, got "
                                     f"{FLAGS.split!r}.")
        model, config = training.load_run(FLAGS.workdir)
        result = training.evaluate(model, config, split=FLAGS.split,
                                   batch_size=FLAGS.batch_size)
        print(f"{config.model} on {config.dataset} ({FLAGS.workdir}): {result.summary()}",
              flush=True)
    _run_reporting_user_errors(argv, run)


# ------------------------------------------------------------------ helpers


def _train_config_fields() -> list[str]:
    return [field for field in training.TrainConfig.__dataclass_fields__ if field in FLAGS]


def _int_list(name: str, values: Sequence[str]) -> list[int]:
    try:
        return [int(value) for value in values]
    except ValueError:
        raise training.UserError(f"expected --{name} a comma-separated list of ints, got "
                                 f"{','.join(values)!r}.") from None


def _program(argv: Sequence[str]) -> str:
    return os.path.basename(argv[0]) if argv else "tfflow"


def _reject_positional(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise training.UserError(f"unexpected arguments {list(argv[1:])}; every option is a "
                                 "--flag=value (see --help).")


def _run_reporting_user_errors(argv: Sequence[str], run: Callable[[], Any]) -> None:
    # absl's app.run turns on INFO logging, which TFDS and TF fill with noise.
    logging.set_verbosity(logging.WARNING)
    try:
        run()
    except training.UserError as error:
        _fail(_program(argv), str(error))


def _fail(program: str, message: str) -> NoReturn:
    one_line = " ".join(message.split())
    print(f"{program}: error: {one_line}", file=sys.stderr, flush=True)
    sys.exit(USER_ERROR_EXIT_CODE)
