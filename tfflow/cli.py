"""Flags and main functions of the command-line apps `tfflow-train`, `-sample`, `-evaluate`, `-export`.

Each app in `bin/` defines its own flags and runs its main:

    cli.define_train_flags()
    app.run(cli.train_main, flags_parser=cli.parse_flags)

The logic lives in `tfflow.training`; here are only flags and printing. User
errors (an unknown model or data set, a missing run, a bad flag value) print one
line `<app>: error: ...` on stderr and exit with status 2, without a traceback;
so does every OS error (a path that is a file, a folder that cannot be written,
a full disk: the message names the path and the system's reason), and the
flags that name paths or numbers are checked before TensorFlow is imported.
Ctrl-C prints one line and exits with status 130; `tfflow-train` keeps its
backup, and the same command resumes the run.

Nothing here imports TensorFlow at module level: the flags are defined and
parsed first (`--help` lists an app's own flags with their defaults and exits 0
at once), and each main imports `tfflow.training`, and TensorFlow with it, when
it runs, keeping TensorFlow's C++ start-up lines off the terminal unless the
user set `TF_CPP_MIN_LOG_LEVEL`.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import re
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

from absl import flags
from absl import logging

# These load without TensorFlow (see the module docstring).
from tfflow import _rules
from tfflow._heap import freeze_long_lived
from tfflow.data import names as data_names
from tfflow.training import config as run_config
from tfflow.training.errors import UserError

__all__ = [
    "define_evaluate_flags",
    "define_export_flags",
    "define_sample_flags",
    "define_train_flags",
    "evaluate_main",
    "export_main",
    "parse_flags",
    "sample_main",
    "train_main",
]

FLAGS = flags.FLAGS
USER_ERROR_EXIT_CODE = 2
INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, as shells report a Ctrl-C

_DEFAULTS = run_config.TrainConfig()
_DEFAULT_WORKDIR = run_config.default_workdir(_DEFAULTS.model, _DEFAULTS.dataset)
# absl's spellings of a request for help; --helpfull (every flag) stays absl's.
_HELP_ARGS = ("-h", "-?", "-help", "--help", "-helpshort", "--helpshort")


# tfflow-train's flags for TrainConfig's fields: what each says. A flag's type and
# default are its field's (`_define_config_flag`), so the two cannot disagree.
_TRAIN_FLAG_HELP: dict[str, str] = {
    "model": "Flow model: a name in tfflow.models.MODELS (glow for images); an unknown name "
             "is answered with the list.",
    "preset": "A paper's model, a name in tfflow.models.PRESETS (e.g. glow_cifar10); an "
              "unknown name is answered with the list. Sets --model and the architecture "
              "(architecture flags given too override it); made for 32x32x3 images "
              "(--dataset=cifar10).",
    "dataset": f"Embedded set ({', '.join(data_names.EMBEDDED_DATASETS)}), a TFDS image set "
               f"prepared under --data_dir ({', '.join(data_names.TFDS_IMAGE_DATASETS)}, "
               f"...), or a path to a {'/'.join(data_names.TABLE_EXTENSIONS)} table [N, D].",
    "data_dir": "TFDS data directory (nothing is downloaded).",
    "workdir": "Output folder (default ./tfflow_runs/<model>-<dataset>).",
    "epochs": "Most passes over the training split.",
    "batch_size": "Global batch size; default 64 for images, 32 for tables and toy densities.",
    "learning_rate": "Adam's peak learning rate; default 8e-3 for images, 2e-3 for tables "
                     "and toy densities.",
    "lr_schedule": f"One of {', '.join(run_config.LR_SCHEDULES)}. cosine: warm-up, then "
                   "cosine decay until the epochs or the time budget run out; constant: "
                   "warm-up, then flat.",
    "warmup_steps": "Steps of linear learning-rate warm-up; at most a tenth of the planned "
                    "steps are used (the first line of the run says so).",
    "clipnorm": "Gradient-norm clipping (default: none).",
    "weight_decay": "Decoupled weight decay (AdamW) if > 0.",
    "ema_momentum": "Momentum of the moving average of the weights that is validated and "
                    "saved; 0: no averaging.",
    "patience": "Epochs without a better validation loss before stopping; the best weights "
                "are restored either way.",
    "max_train_seconds": "Wall-clock budget for training in seconds; 0: none.",
    "validation_fraction": "Share of the training rows held out for early stopping.",
    "num_examples": "Training examples drawn from a toy density (toy sets only).",
    "num_bits": "Bits kept per 8-bit pixel (TFDS images).",
    "image_size": "Crop and resize TFDS images to this side.",
    "conditional": "Class-conditional model (uses labels).",
    "context_columns": "Tables: columns (CSV header names, or 0-based indices) that are the "
                       "context c; trains p(other columns | c) with a vector model (maf, "
                       "iaf, nsf, realnvp, nice). Sample with tfflow-sample --context.",
    "scales": "Glow and RealNVP on images: number of scales L.",
    "steps_per_scale": "Glow: flow steps K per scale.",
    "hidden_channels": "Glow and RealNVP on images: width of the coupling networks.",
    "coupling": "Glow: coupling, a name in tfflow.models.glow.COUPLINGS; default: the "
                "factory's; an unknown name is answered with the list.",
    "permutation": "Glow: channel mixing, a name in tfflow.models.glow.PERMUTATIONS (lu: 1x1 conv "
                   "in LU form); default: the factory's.",
    "blocks": "RealNVP on images: ResNet blocks per conditioner.",
    "num_couplings": "RealNVP on vectors and NICE: number of coupling layers.",
    "hidden_units": "RealNVP on vectors, NICE, MAF, IAF, NSF: MLP (MADE) widths, e.g. "
                    "128,128.",
    "transforms": "MAF, IAF, NSF: number of autoregressive layers (defaults: 5, 5, 3).",
    "num_bins": "Spline bins (NSF; coupling=spline in Glow and RealNVP).",
    "memory_saving": "Rebuild activations from the flow's outputs in the backward pass "
                     "instead of storing them: memory stops growing with depth, a step "
                     "costs ~1 more pass.",
    "precision": f"One of {', '.join(run_config.PRECISIONS)} (mixed: coupling networks in "
                 "16 bits; the flow, log-dets and loss stay float32).",
    "seed": "Seeds weights, data order, noise and samples (0 to 2**32-1).",
    "deterministic": "Reproducible: TensorFlow's op determinism, and a learning-rate "
                     "schedule that follows the steps, not the clock; two runs with the same "
                     "flags and --seed, and a killed run resumed, end with bit-identical "
                     "weights. Without it the schedule follows the time budget too, and "
                     "runs differ.",
    "strategy": "Distribution strategy: default (one device), mirrored (all local GPUs), "
                "multi_worker (cluster from TF_CONFIG; run on every worker) or tpu (with "
                "--tpu). --batch_size is the global batch.",
    "tpu": "TPU name or address for --strategy=tpu ('local' on a TPU VM).",
    "intra_op_threads": "CPU threads one TensorFlow op may use; 0: TensorFlow's default "
                        "(every core). Default: 1 for the embedded data sets and tables on a "
                        "machine without a GPU (small ops: about 2x faster on 2 cores), 0 "
                        "otherwise.",
    "num_samples": "Samples per picture.",
}

# The absl definer of a TrainConfig field, by the first type of its annotation
# ("int | None" -> "int"; a tuple field is a comma-separated list flag).
_CONFIG_FLAG_DEFINERS: dict[str, Callable[..., Any]] = {
    "str": flags.DEFINE_string, "int": flags.DEFINE_integer, "float": flags.DEFINE_float,
    "bool": flags.DEFINE_boolean, "tuple": flags.DEFINE_list,
}


def define_train_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines `tfflow-train`'s flags: one per `training.TrainConfig` field, and two more.

    A field's flag has the field's name, type and default (`_define_config_flag`);
    `verbose` has its own default (chosen by the terminal), and `overwrite` is
    no field: it says what to do with the run already in the workdir.
    """
    for name, help_text in _TRAIN_FLAG_HELP.items():
        _define_config_flag(name, help_text, flag_values)
    # The old names, for one release: --levels=3 sets --scales (the help lists them).
    for old, new in run_config.RENAMED_FIELDS.items():
        flags.DEFINE_alias(old, new, flag_values=flag_values)
    flags.DEFINE_boolean(
        "overwrite", False, "Remove the run already in --workdir (its model, backup, logs and "
        "pictures) and train from scratch. Without it, a finished run of the same flags is "
        "refused, and one with more --epochs, --max_train_seconds or --patience is continued.",
        flag_values=flag_values)
    flags.DEFINE_integer(
        "verbose", None, "Keras verbosity: 1 progress bars, 2 a line per epoch, 0 silent (the "
        "summary line is printed regardless); default: progress bars in a terminal, a line "
        "per epoch when the output goes to a file or pipe.", flag_values=flag_values)


def _define_config_flag(name: str, help_text: str, flag_values: flags.FlagValues) -> None:
    """Defines --<name> with the type and default of the `TrainConfig` field `name`."""
    field = run_config.TrainConfig.__dataclass_fields__[name]
    # config.py postpones annotations: `field.type` is their text, e.g. "int | None".
    kind = re.match(r"\w+", field.type).group()
    _CONFIG_FLAG_DEFINERS[kind](name, field.default, help_text, flag_values=flag_values)


def define_sample_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines `tfflow-sample`'s flags."""
    string, integer, real = _definers(flag_values)
    string("workdir", _DEFAULT_WORKDIR, "A folder written by tfflow-train.")
    integer("num_samples", 64, "How many samples.")
    real("temperature", 1.0, "Scale of the latent standard deviation (Glow: 0.7).")
    integer("seed", 0, "Sampling seed.")
    integer("label", None, "Class to sample (class-conditional models); default: "
            "cycle through the classes.")
    string("context", None, "Models trained with --context_columns: one context row, "
           "comma-separated numbers in the order of those columns, e.g. 1.5,2.0; --output "
           "gets --num_samples rows [n, D] of the other columns.")
    string("context_file", None, "Like --context for many rows: a .csv (header optional; if "
           "present, the context columns' names in order) or .npy file [R, C]; the .npy "
           "output is [R, n, D].")
    string("output", None,
           "A .png (image grid, or 2-D histogram for 2-D data) or .npy (raw "
           "samples in the data's units) file; default <workdir>/samples.png.")


def define_evaluate_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines `tfflow-evaluate`'s flags."""
    string, integer, _ = _definers(flag_values)
    string("workdir", _DEFAULT_WORKDIR, "A folder written by tfflow-train.")
    string("split", "test", f"Split to evaluate: {', '.join(data_names.SPLITS)}.")
    integer("batch_size", 256, "Examples per evaluation batch.")


def define_export_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines `tfflow-export`'s flags."""
    string, integer, _ = _definers(flag_values)
    string("workdir", _DEFAULT_WORKDIR, "A folder written by tfflow-train.")
    string("export_dir", None, "Base folder of the SavedModel; the export goes to "
           "<export_dir>/<version>/ (default <workdir>/export).")
    integer("version", None, "Version number (default: one more than the largest present).")
    # The default is tfflow.export.DEFAULT_MAX_SAMPLES (not imported: it loads TensorFlow).
    integer("max_samples", 1024, "The most samples one request to the exported sample "
            "signature may draw (n, times the context rows of a conditional model); larger "
            "requests are refused. Memory grows linearly in it.", lower_bound=1)


def _definers(flag_values: flags.FlagValues) -> tuple[Callable[..., Any], ...]:
    """flags.DEFINE_{string, integer, float} bound to `flag_values`."""
    return tuple(functools.partial(define, flag_values=flag_values) for define in (
        flags.DEFINE_string, flags.DEFINE_integer, flags.DEFINE_float))


def parse_flags(argv: Sequence[str]) -> list[str]:
    """`app.run`'s flags parser: a bad flag is a one-line error and exit status 2.

    `--help` (`-h`, `--helpshort`) prints the app's own flags with their
    defaults and exits 0, before anything imports TensorFlow.
    """
    if any(arg in _HELP_ARGS for arg in argv[1:]):
        try:
            print(_usage(argv), flush=True)
        except BrokenPipeError:  # `--help | head`: the reader has all it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    try:
        return FLAGS(argv)
    except flags.Error as error:
        _fail(_program(argv), str(error))


def train_main(argv: Sequence[str]) -> None:
    """`tfflow-train`: trains, writes the run's files, prints a one-line summary last."""
    workdir = FLAGS.workdir
    if workdir is None:
        workdir = run_config.default_workdir(FLAGS.model, FLAGS.dataset)

    def check() -> None:
        _reject_positional(argv)
        _check_seed(FLAGS.seed)
        _check_folder_to_write("workdir", workdir)
        if data_names.is_table_file(FLAGS.dataset):
            _check_file_to_read("dataset", FLAGS.dataset)

    def run(training: Any) -> None:
        values = {field: getattr(FLAGS, field) for field in _train_config_fields()}
        if values["verbose"] is None:  # Keras's bars rewrite their line: a terminal's job
            values["verbose"] = 1 if sys.stdout.isatty() else 2
        if values["hidden_units"] is not None:
            values["hidden_units"] = tuple(_int_list("hidden_units", values["hidden_units"]))
        config = training.TrainConfig(**values)
        result = training.train(config, overwrite=FLAGS.overwrite)
        for role, path in sorted(result.files.items()):
            print(f"  {role}: {path}")
        print(result.summary(), flush=True)

    _run_reporting_user_errors(argv, run, check=check,
                               resume_hint=lambda: _train_resume_hint(workdir))


def sample_main(argv: Sequence[str]) -> None:
    """`tfflow-sample`: samples a trained model into a PNG or .npy file."""
    output = FLAGS.output or os.path.join(FLAGS.workdir, "samples.png")

    def check() -> None:
        _reject_positional(argv)
        _check_run_folder(FLAGS.workdir)
        _check_count("num_samples", FLAGS.num_samples)
        _check_seed(FLAGS.seed)
        if not _rules.is_temperature(FLAGS.temperature):  # FlowModel.sample's rule
            raise UserError(f"expected --temperature a finite number >= 0 (1: the model's "
                            f"spread, 0.7: Glow's usual), got {FLAGS.temperature!r}.")
        if not output.lower().endswith((".png", ".npy")):
            raise UserError(f"expected --output ending in .png or .npy, got {output!r}.")
        _check_file_to_write("output", output)
        if FLAGS.context_file is not None:
            _check_file_to_read("context_file", FLAGS.context_file)

    def run(training: Any) -> None:
        model, config = training.load_run(FLAGS.workdir)
        context = _sample_context(config)
        path = training.write_samples(model, config, output, num_samples=FLAGS.num_samples,
                                      temperature=FLAGS.temperature, seed=FLAGS.seed,
                                      label=FLAGS.label, context=context)
        given = "" if context is None else f" for each of {len(context)} context rows"
        print(f"wrote {FLAGS.num_samples} samples{given} at T={FLAGS.temperature:g} to {path}")

    _run_reporting_user_errors(argv, run, check=check)


def evaluate_main(argv: Sequence[str]) -> None:
    """`tfflow-evaluate`: bits/dim and worst round-trip error of a trained model."""
    def check() -> None:
        _reject_positional(argv)
        if FLAGS.split not in data_names.SPLITS:
            raise UserError(f"expected --split one of {', '.join(data_names.SPLITS)}, got "
                            f"{FLAGS.split!r}.")
        _check_count("batch_size", FLAGS.batch_size)
        _check_run_folder(FLAGS.workdir)

    def run(training: Any) -> None:
        model, config = training.load_run(FLAGS.workdir)
        result = training.evaluate(model, config, split=FLAGS.split,
                                   batch_size=FLAGS.batch_size)
        for name, number in (result.conv_condition_numbers or {}).items():
            print(f"  1x1 conv {name}: condition number {number:.4g}")
        print(f"{config.model} on {config.dataset} ({FLAGS.workdir}): {result.summary()}",
              flush=True)

    _run_reporting_user_errors(argv, run, check=check)


def export_main(argv: Sequence[str]) -> None:
    """`tfflow-export`: writes a trained model as a versioned SavedModel for TF Serving."""
    base = FLAGS.export_dir or os.path.join(FLAGS.workdir, "export")

    def check() -> None:
        _reject_positional(argv)
        _check_run_folder(FLAGS.workdir)
        if FLAGS.version is not None:
            _check_count("version", FLAGS.version)
        _check_folder_to_write("export_dir", base)

    def run(training: Any) -> None:
        from tfflow import export  # pylint: disable=import-outside-toplevel
        model, _ = training.load_run(FLAGS.workdir)
        try:
            path = export.export_saved_model(model, base, version=FLAGS.version,
                                             max_samples=FLAGS.max_samples)
        except ValueError as error:
            raise UserError(str(error)) from None
        print(f"exported to {path} (signatures: {', '.join(export.SIGNATURES)})", flush=True)

    _run_reporting_user_errors(argv, run, check=check)


# ------------------------------------------------------- checks before TensorFlow
# The rules are tfflow._rules' (the API's too); here only the flags' wording.


def _check_seed(seed: int) -> None:
    if not _rules.is_seed(seed):
        raise UserError(f"expected --seed an integer in [0, {_rules.MAX_SEED}], got {seed}.")


def _check_count(name: str, value: int) -> None:
    if not _rules.is_count(value):
        raise UserError(f"expected --{name} >= 1, got {value}.")


def _existing_ancestor(path: str) -> str:
    """The nearest of `path` and its parents that exists (at worst the root or the cwd)."""
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _check_folder_to_write(name: str, path: str) -> None:
    """`path` is, or can be made, a folder this process writes in; creates nothing.

    Whether the nearest existing folder takes a new file is asked by creating
    (and removing) an empty one there: permissions, read-only mounts and
    pseudo file systems such as /proc answer only that.
    """
    if not path.strip():
        raise UserError(f"expected --{name} a folder, got an empty path {path!r}.")
    if os.path.lexists(path) and not os.path.isdir(path):
        raise UserError(f"expected --{name} a folder, got {path!r}, which is a file; name a "
                        "new or existing folder.")
    ancestor = _existing_ancestor(path)
    if not os.path.isdir(ancestor):
        raise UserError(f"expected --{name} a folder, got {path!r}, which lies under the file "
                        f"{ancestor!r}.")
    _check_writable(name, path, ancestor)


def _check_writable(name: str, path: str, folder: str) -> None:
    try:
        descriptor, probe = tempfile.mkstemp(prefix=".tfflow-write-check-", dir=folder)
    except OSError as error:
        where = "" if os.path.abspath(folder) == os.path.abspath(path) else f" in {folder!r}"
        raise UserError(f"cannot write --{name}={path!r}: creating a file{where} failed: "
                        f"{_os_reason(error)}.") from None
    os.close(descriptor)
    with contextlib.suppress(OSError):
        os.remove(probe)


def _check_file_to_write(name: str, path: str) -> None:
    """`path` can become a file: not a folder, not under a file, its folder writable."""
    if os.path.isdir(path):
        raise UserError(f"expected --{name} a file name, got {path!r}, which is a folder.")
    folder = os.path.dirname(os.path.abspath(path))
    ancestor = _existing_ancestor(folder)
    if not os.path.isdir(ancestor):
        raise UserError(f"expected --{name} a file name, got {path!r}, which lies under the "
                        f"file {ancestor!r}.")
    _check_writable(name, path, ancestor)


def _check_file_to_read(name: str, path: str) -> None:
    """`path` is a readable, non-empty file."""
    expanded = os.path.expanduser(path)
    if not os.path.exists(expanded):
        return  # tfflow.data says what it looked for, and where
    if os.path.isdir(expanded):
        raise UserError(f"expected --{name} a file, got {path!r}, which is a folder.")
    try:
        with open(expanded, "rb") as handle:
            empty = not handle.read(1)
    except OSError as error:
        raise UserError(f"cannot read --{name}={path!r}: {_os_reason(error)}.") from None
    if empty:
        raise UserError(f"expected --{name} a file of rows, got {path!r}, which is empty "
                        "(0 bytes).")


def _check_run_folder(workdir: str) -> None:
    """`workdir` is an existing folder (what is in it, `load_run` checks)."""
    if not workdir.strip():
        raise UserError(f"expected --workdir a folder written by tfflow-train, got an empty "
                        f"path {workdir!r}.")
    if not os.path.exists(workdir):
        raise UserError(f"no folder {workdir!r} (a run's folder, holding model.keras and "
                        f"config.json); train a model there first with tfflow-train "
                        f"--workdir={workdir}.")
    if not os.path.isdir(workdir):
        raise UserError(f"expected --workdir a folder written by tfflow-train, got "
                        f"{workdir!r}, which is a file.")


def _train_resume_hint(workdir: str) -> str:
    """What `tfflow-train` says when stopped: whether the same command resumes or restarts."""
    # `checkpoints.BACKUP_DIR` and its state file; not imported here, as the
    # interrupt may have come while TensorFlow was still loading.
    state = os.path.join(workdir, "backup", "state.json")
    try:
        with open(state, encoding="utf-8") as handle:
            done = int(json.load(handle)["epochs_done"])
    except (OSError, ValueError, KeyError, TypeError):
        return (f"no backup yet in {workdir}: the same command starts the run again.")
    return (f"the run is saved in {workdir} (backup after epoch {done}); run the same command "
            f"to resume from epoch {done + 1}.")


# ------------------------------------------------------------------ helpers


def _train_config_fields() -> list[str]:
    # An old name is an alias of its new flag: the value reaches the config once.
    return [field for field in run_config.TrainConfig.__dataclass_fields__
            if field in FLAGS and field not in run_config.RENAMED_FIELDS]


def _sample_context(config: Any) -> Any:
    """The rows of `--context` or `--context_file` [R, C] (float64), or None; checked by
    `write_samples` against the model (count, finiteness)."""
    if FLAGS.context is not None and FLAGS.context_file is not None:
        raise UserError("expected --context or --context_file, got both.")
    if FLAGS.context is not None:
        try:
            return [[float(value) for value in FLAGS.context.split(",")]]
        except ValueError:
            raise UserError(f"expected --context as comma-separated numbers, e.g. 1.5,2.0, "
                            f"got {FLAGS.context!r}.") from None
    if FLAGS.context_file is not None:
        from tfflow.data import table  # pylint: disable=import-outside-toplevel
        columns = config.context_columns or ()
        # A header must list the columns by name (indices name no header).
        named = columns if columns and not any(c.isdigit() for c in columns) else None
        try:
            return table.read_rows("--context_file", FLAGS.context_file, names=named)
        except ValueError as error:
            raise UserError(str(error)) from None
    return None


def _int_list(name: str, values: Sequence[str]) -> list[int]:
    try:
        return [int(value) for value in values]
    except ValueError:
        raise UserError(f"expected --{name} a comma-separated list of ints, got "
                        f"{','.join(values)!r}.") from None


def _program(argv: Sequence[str]) -> str:
    return os.path.basename(argv[0]) if argv else "tfflow"


def _reject_positional(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {list(argv[1:])}; every option is a "
                        "--flag=value (see --help).")


def _run_reporting_user_errors(argv: Sequence[str], run: Callable[[Any], Any], *,
                               check: Callable[[], None] | None = None,
                               resume_hint: Callable[[], str] | None = None) -> None:
    """Runs `check()`, then `run(tfflow.training)`, reporting what the user can act on.

    A `UserError` or an OS error (`OSError`, or TensorFlow's file errors) is
    one line `<app>: error: ...` and exit status 2; so is a lost peer
    (TensorFlow's `UnavailableError`: another worker of a multi-worker run
    died). Ctrl-C is one line `<app>: interrupted; ...` and exit status 130.
    Both stops end with `resume_hint()` (where the run is saved, how to go
    on) when given. `check` runs before TensorFlow is imported, so that a bad
    flag is answered at once. Anything else is a bug in tfflow and keeps its
    traceback.
    """
    program = _program(argv)
    # absl's app.run turns on INFO logging, which TFDS and TF fill with noise.
    logging.set_verbosity(logging.WARNING)
    try:
        if check is not None:
            check()
        run(_import_training())
    except UserError as error:
        _fail(program, str(error))
    except KeyboardInterrupt:
        # A second Ctrl-C while the line is written would print a traceback.
        handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            hint = f"; {resume_hint()}" if resume_hint is not None else "."
            print(f"{program}: interrupted{hint}", file=sys.stderr, flush=True)
        finally:
            signal.signal(signal.SIGINT, handler)
        sys.exit(INTERRUPTED_EXIT_CODE)
    except OSError as error:
        _fail(program, _os_error_message(error))
    except Exception as error:  # pylint: disable=broad-except  # re-raised unless a file error
        message = _tensorflow_file_error_message(error)
        if message is None:
            message = _lost_peer_message(error)
            if message is None:
                raise
            if resume_hint is not None:
                message = f"{message}; {resume_hint()}"
        _fail(program, message)
    finally:
        # Python's collection at exit would walk the whole heap and free nothing needed.
        freeze_long_lived()


def _lost_peer_message(error: Exception) -> str | None:
    """One line for a collective op whose peer is gone (a worker killed mid-step), else None."""
    tf = sys.modules.get("tensorflow")
    if tf is None or not isinstance(error, tf.errors.UnavailableError):
        return None
    reason = re.search(r"grpc_message:\"([^\"]*)\"", str(error))
    detail = reason.group(1) if reason else " ".join(str(error).split())[:160]
    return f"lost contact with another worker of the run ({detail}); start every worker again"


def _os_reason(error: OSError) -> str:
    """"Permission denied (EACCES)": the system's words and the error's name."""
    reason = error.strerror or str(error) or type(error).__name__
    name = errno.errorcode.get(error.errno) if error.errno is not None else None
    return f"{reason} ({name})" if name else reason


def _os_error_message(error: OSError) -> str:
    """The path(s) an OS error names and its reason, e.g. "'/a/b': Not a directory (ENOTDIR)"."""
    paths = [repr(os.fsdecode(path)) for path in (error.filename, error.filename2)
             if path is not None]
    where = " -> ".join(paths)
    return f"{where}: {_os_reason(error)}." if where else f"{_os_reason(error)}."


def _tensorflow_file_error_message(error: Exception) -> str | None:
    """One line for TensorFlow's errors about files and folders (its own I/O ops), else None."""
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return None
    file_errors = (tf.errors.NotFoundError, tf.errors.PermissionDeniedError,
                   tf.errors.AlreadyExistsError, tf.errors.FailedPreconditionError,
                   tf.errors.ResourceExhaustedError)
    text = getattr(error, "message", None) or str(error)
    if not isinstance(error, file_errors):
        return None
    if isinstance(error, (tf.errors.FailedPreconditionError, tf.errors.ResourceExhaustedError)) \
            and not re.search(r"directory|file|No space|Read-only", text, re.IGNORECASE):
        return None  # not about a path: a bug, keep its traceback
    # "{{function_node __wrapped__WriteFile_device_/job:...}} /a/b; Is a directory [Op:WriteFile]"
    text = re.sub(r"\{\{[^}]*\}\}\s*", "", text)
    text = re.sub(r"\s*\[Op:\w+\]", "", text)
    return " ".join(text.split()).rstrip(".") + "."


def _usage(argv: Sequence[str]) -> str:
    """The app's summary (its script's docstring) and its own flags with their defaults."""
    main = sys.modules.get("__main__")
    summary = ((getattr(main, "__doc__", None) or "").strip() or _program(argv))
    # absl heads the list with this module's name; the user knows the app by its own.
    own = FLAGS.module_help(__name__).strip().removeprefix(f"{__name__}:").strip("\n")
    return (f"{summary}\n\nUsage: {_program(argv)} [--flag=value ...]\n\nFlags:\n{own}\n\n"
            "--helpfull lists every flag, absl's included.")


# What TensorFlow prints through absl's C++ logging before it is configured:
# the "before absl::InitializeLog()" banner, then INFO/WARNING lines such as
# "oneDNN custom operations are on" and "Could not find cuda drivers", and on
# a machine without a GPU the ERROR "failed call to cuInit".
_TF_START_UP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\]"
    r"|E\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] failed call to cuInit)")


def _import_training() -> Any:
    """Imports `tfflow.training` (TensorFlow with it) and lets TF find its devices.

    Unless the user set `TF_CPP_MIN_LOG_LEVEL`, it becomes "2" (TF's C++
    INFO and WARNING lines off). What TensorFlow writes to stderr while it
    starts is held back: its start-up lines are dropped (they come before its
    logging reads that variable, so "2" alone does not silence them), anything
    else (a real error) is written out afterwards. A user who set the level to
    "0" asked for everything and gets it.
    """
    if not os.environ.get("TF_CPP_MIN_LOG_LEVEL"):  # unset or empty (`VAR= cmd`): TF reads 0
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0":
        return _import_training_and_devices()
    with _stderr_without(_TF_START_UP_NOISE):
        return _import_training_and_devices()


def _import_training_and_devices() -> Any:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tfflow import training  # pylint: disable=import-outside-toplevel
    tf.config.list_physical_devices()  # device discovery logs here (cuInit), not mid-run
    return training


@contextlib.contextmanager
def _stderr_without(noise: re.Pattern[str]) -> Iterator[None]:
    """Holds back file descriptor 2 (C++ writes there too); replays the lines not matching `noise`."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().decode("utf-8", "replace").splitlines(True)
                    if not noise.match(line)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def _fail(program: str, message: str) -> NoReturn:
    one_line = " ".join(message.split())
    print(f"{program}: error: {one_line}", file=sys.stderr, flush=True)
    sys.exit(USER_ERROR_EXIT_CODE)
