"""What a run draws: sample grids, 2-D density pictures, TensorBoard images, `write_samples`.

Images get sample grids at `SAMPLE_TEMPERATURES`; 2-D data (toy densities, or
a two-column table) gets the model's density beside the test points; other
tables get a pair plot of samples against the test rows for their first
`PAIR_PLOT_COLUMNS` columns.

With matplotlib (`pip install "tfflow[plots]"`) the pictures have axes, colour
bars and captions (`tfflow.plots`); without it, sample grids and densities are
the plain pixel pictures of `tfflow.images`, tables get no picture, and
`plots_note()` says once how to get the better ones.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfflow import images, plots
from tfflow.models import _checks
from tfflow.training.config import TrainConfig, check_positive_int
from tfflow.training.errors import UserError
from tfflow.training.run_data import RunData

__all__ = ["PAIR_PLOT_COLUMNS", "SAMPLE_TEMPERATURES", "epoch_pictures", "plots_note", "sample",
           "write_pictures", "write_samples"]


SAMPLE_TEMPERATURES: tuple[float, ...] = (0.7, 1.0)
PAIR_PLOT_COLUMNS = 4       # a table's pair plot shows its first columns, this many at most
_PAIR_PLOT_ROWS = 1000      # test rows (and as many samples) in a pair plot
_EPOCH_PAIR_PLOT_ROWS = 300  # fewer in TensorBoard's, drawn every epoch
# A matplotlib picture takes 0.5-1.5 s on a CPU (measured, 2 cores): in TensorBoard it is
# drawn only when that keeps pictures under this share of the run's wall-clock time.
_EPOCH_PLOT_TIME_SHARE = 0.05


def plots_note(data: RunData) -> str | None:
    """One line saying how to get plots with axes, when matplotlib is missing; else None."""
    if plots.available():
        return None
    if _pair_plot_applies(data):
        return (f"no pair plot of samples against the data (matplotlib is not installed): "
                f"{plots.INSTALL_HINT}")
    return (f"pictures without axes or captions (matplotlib is not installed); for plots "
            f"with axes, colour bars and captions: {plots.INSTALL_HINT}")


def sample(model: Any, num_samples: int, *, temperature: float = 1.0, seed: int | None = 0,
           labels: Any = None, context: Any = None) -> np.ndarray:
    """Draws `num_samples` samples at `temperature` as a NumPy array (data space).

    With `context` [rows, C] (a conditional model), `num_samples` per row: [rows, n, D].
    """
    check_positive_int("num_samples", num_samples)
    try:  # the model's own rule (0 decodes the latent mode), as in the API and the export
        temperature = _checks.temperature("sample", temperature)
    except ValueError as error:
        raise UserError(str(error)) from None
    kwargs = {"temperature": temperature, "seed": seed}
    if labels is not None:
        kwargs["labels"] = tf.constant(labels, tf.int32)
    if context is not None:
        kwargs["context"] = context
    return np.asarray(model.sample(num_samples, **kwargs))


def write_samples(model: Any, config: TrainConfig, path: str, *, num_samples: int = 64,
                  temperature: float = 1.0, seed: int | None = 0,
                  label: int | None = None, context: np.ndarray | None = None) -> str:
    """Samples a trained run's model into `path` and returns `path`.

    `.npy`: the samples in the data's own units (the models hold any
    standardisation). `.png`: a grid for images, a 2-D histogram for 2-D
    data. Needs only the model: the training data may be gone.

    Args:
      model: The run's model.
      config: The run's config (says what the data is).
      path: Output file ending in .png or .npy.
      num_samples: How many samples.
      temperature: Latent standard deviation scale.
      seed: Sampling seed.
      label: Class to sample from a class-conditional model; default: cycle
        through the classes.
      context: The contexts [rows, C] of a conditional model (a table with
        `context_columns`), in the data's own units: `num_samples` samples per
        row, saved as [num_samples, D] for one row and [rows, num_samples, D]
        for more. Required for a conditional model, refused otherwise.
    """
    num_classes = model.num_classes
    context = _checked_context(model, config, context)
    if label is not None:
        if num_classes is None:
            raise UserError(f"a label was given, but the model in {config.workdir!r} is not "
                            "class-conditional.")
        if not 0 <= label < num_classes:
            raise UserError(f"expected a label in 0..{num_classes - 1}, got {label}.")
        labels = np.full([num_samples], label, np.int32)
    else:
        labels = _sample_labels(num_samples, num_classes)
    x = sample(model, num_samples, temperature=temperature, seed=seed, labels=labels,
               context=context)
    if context is not None and len(context) == 1:
        x = x[0]  # one context row: [n, D], as an unconditional table's samples
    if path.lower().endswith(".npy"):
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        np.save(path, x)
        return path
    if not path.lower().endswith(".png"):
        raise UserError(f"expected an output path ending in .png or .npy, got {path!r}.")
    if len(model.event_shape) == 3:
        if plots.available():
            return images.write_png(path, plots.sample_grid_plot(
                images.image_grid(x), title=_grid_title(len(x), temperature, config)))
        return images.write_image_grid(path, x)
    if model.event_shape == (2,):  # several context rows: their samples pooled
        points = x.reshape(-1, 2)
        if plots.available():
            return images.write_png(path, plots.scatter_plot(
                points, title=f"{len(points):,} samples at temperature T={temperature:g}\n"
                              f"{_run_name(config)}"))
        return images.write_png(path, images.histogram_image(points))
    raise UserError(f"cannot draw {model.event_shape[0]}-dimensional samples as a PNG; "
                    "write them to a .npy file instead.")


def _checked_context(model: Any, config: TrainConfig,
                     context: np.ndarray | None) -> np.ndarray | None:
    """The contexts as the model takes them, or a `UserError` saying what was expected."""
    columns = ",".join(config.context_columns or ())
    if model.context_shape is None:
        if context is not None:
            raise UserError(f"a context was given, but the model in {config.workdir!r} is not "
                            "conditional (it was trained without --context_columns).")
        return None
    expected = (f"{model.context_units} number{'s' if model.context_units != 1 else ''} per "
                f"row{f' (columns {columns})' if columns else ''}")
    if context is None:
        raise UserError(f"the model in {config.workdir!r} is conditional: expected a context "
                        f"of {expected}, e.g. --context=... or --context_file=rows.csv.")
    context = np.asarray(context, np.float64)
    if context.ndim != 2 or context.shape[1] != model.context_units or len(context) < 1:
        got = (f"{context.shape[-1]} per row" if context.ndim == 2 and len(context) else
               f"shape {context.shape}")
        raise UserError(f"expected a context of {expected}, got {got}.")
    if not np.all(np.isfinite(context)):
        row = int(np.argwhere(~np.isfinite(context))[0][0])
        raise UserError(f"expected a context of finite numbers ({expected}), got NaN/Inf "
                        f"(first in row {row}, counting from 0).")
    return context.astype(model.dtype_name)


def epoch_pictures(config: TrainConfig, data: RunData
                   ) -> Callable[[keras.Model], dict[str, Any]] | None:
    """What `TensorBoardLogger` draws each epoch for this data; None when nothing.

    Image samples stay plain pixel grids of `config.num_samples` (TensorBoard
    names the temperature in the tag); the density and the pair plot are the
    end-of-run pictures at a lower resolution, pixel versions where matplotlib
    is missing. A table without matplotlib gets None, so its TensorBoard run
    holds no empty `samples` entry. matplotlib pictures are drawn after the
    first epoch and then only on epochs that keep their drawing under 5% of
    the wall-clock time (on other epochs `pictures` returns {}), so that short
    epochs do not spend their time budget on plots.
    """
    info, num_classes = data.info, data.num_classes
    # As many as the end-of-run grids: the model traces its decoding once per batch
    # shape, and a second count would trace it again at the end (0.8 CPU s for the
    # default Glow, measured; the larger grid costs 0.02 s an epoch more).
    num_samples = config.num_samples
    labels = _sample_labels(num_samples, num_classes)
    # p(x | c) changes with c: no single density picture of a conditional table.
    points = data.array("test") if _density_applies(data) else None
    if info.kind != "image" and points is None and not (
            _pair_plot_applies(data) and plots.available()):
        return None
    traced: dict[int, Callable[[tf.Tensor], tf.Tensor]] = {}  # trace once per model
    last = {"end": -math.inf, "cost": 0.0}  # the last matplotlib drawing: when, how long

    def plotted(draw: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        start = time.monotonic()
        if (start - last["end"]) * _EPOCH_PLOT_TIME_SHARE < last["cost"]:
            return {}
        drawn = draw()
        last["end"] = time.monotonic()
        last["cost"] = last["end"] - start
        return drawn

    def pictures(model: keras.Model) -> dict[str, Any]:
        if info.kind == "image":
            return {f"samples/T={temperature:g}": images.image_grid(
                        sample(model, num_samples, temperature=temperature, seed=config.seed,
                               labels=labels))
                    for temperature in SAMPLE_TEMPERATURES}
        if points is not None:
            if id(model) not in traced:
                traced[id(model)] = _marginal_log_prob_fn(model, num_classes)
            if plots.available():
                return plotted(lambda: {"density": plots.density_plot(
                    traced[id(model)], points, title=_run_name(config), resolution=64,
                    points_label="test data")})
            return {"density": images.density_image(traced[id(model)], points, resolution=64)}
        return plotted(lambda: {"pairs": _pair_plot(model, config, data,
                                                    rows=_EPOCH_PAIR_PLOT_ROWS)})
    return pictures


def write_pictures(model: Any, config: TrainConfig, data: RunData) -> dict[str, str]:
    """Writes the end-of-run pictures into `config.workdir`; returns {role: path}."""
    files = {}
    workdir = config.workdir
    info, num_classes = data.info, data.num_classes
    with_plots = plots.available()
    if info.kind == "image":
        labels = _sample_labels(config.num_samples, num_classes)
        for temperature in SAMPLE_TEMPERATURES:
            x = sample(model, config.num_samples, temperature=temperature, seed=config.seed,
                       labels=labels)
            path = os.path.join(workdir, f"samples_T{temperature:.1f}.png")
            files[f"samples_T{temperature:.1f}"] = images.write_png(path, plots.sample_grid_plot(
                images.image_grid(x), title=_grid_title(len(x), temperature, config))) \
                if with_plots else images.write_image_grid(path, x)
    elif _density_applies(data):
        points = data.array("test")  # in the data's own units
        path = os.path.join(workdir, "density.png")
        log_prob_fn = _marginal_log_prob_fn(model, num_classes)
        files["density"] = images.write_png(path, plots.density_plot(
            log_prob_fn, points, title=_run_name(config), points_label="test data")) \
            if with_plots else images.write_density_png(path, log_prob_fn, points)
    elif _pair_plot_applies(data) and with_plots:
        files["pairs"] = images.write_png(os.path.join(workdir, "pairs.png"),
                                          _pair_plot(model, config, data, rows=_PAIR_PLOT_ROWS))
    return files


def _density_applies(data: RunData) -> bool:
    """2-D data without a context: one density picture says it all."""
    return data.info.kind != "image" and data.info.event_shape == (2,) and \
        data.context_shape is None


def _pair_plot_applies(data: RunData) -> bool:
    """Vector data that no density picture shows: wider tables, conditional ones."""
    return data.info.kind != "image" and len(data.info.event_shape) == 1 and \
        not _density_applies(data)


def _run_name(config: TrainConfig) -> str:
    return f"{config.model} on {os.path.basename(config.dataset) or config.dataset}"


def _grid_title(num_samples: int, temperature: float, config: TrainConfig) -> str:
    return f"{num_samples} samples at temperature T={temperature:g}\n{_run_name(config)}"


def _pair_plot(model: Any, config: TrainConfig, data: RunData, *, rows: int) -> np.ndarray:
    """Samples against the test rows, first `PAIR_PLOT_COLUMNS` columns, as a picture.

    A conditional model draws one sample per test row's context, so its
    samples follow the same mixture over contexts as the test rows do.
    """
    test = data.array("test")[:rows]
    context = data.context_array("test")
    if context is not None:
        context = context[:rows].astype(model.dtype_name)
        x = sample(model, 1, seed=config.seed, context=context)[:, 0]
        given = [str(column) for column in config.context_columns or ()]
        drawn = (f"one sample per test row's context (column{'s' if len(given) > 1 else ''} "
                 f"{','.join(given)})")
    else:
        x = sample(model, len(test), seed=config.seed,
                   labels=_sample_labels(len(test), data.num_classes))
        drawn = f"{len(x):,} samples at T=1"
    num_columns = test.shape[1]
    shown = min(PAIR_PLOT_COLUMNS, num_columns)
    kind = "columns" if context is None else "x columns"
    which = (f"all {num_columns} {kind}" if shown == num_columns else
             f"the first {shown} of {num_columns} {kind}")
    # A conditional table's x leaves the context columns out: number x's own columns.
    names = [f"x[{i}]" for i in range(num_columns)] if context is not None else None
    return plots.pair_plot(
        x, test, title=f"{_run_name(config)}: samples against the test rows\n{drawn}; "
                       f"{which}", columns=range(shown), column_names=names,
        data_label="test rows")


def _marginal_log_prob_fn(model: Any,
                          num_classes: int | None) -> Callable[[tf.Tensor], tf.Tensor]:
    """log p(x) for pictures of 2-D densities; a class-conditional model mixed over its classes.

    Models take rows in the data's own units (tables too), so this is log p(x) there.
    """
    log_prob = model.log_prob  # labels are ignored by unconditional models

    def marginal(x: tf.Tensor) -> tf.Tensor:
        if num_classes is None:
            return log_prob(x)
        per_class = tf.stack([
            log_prob(x, tf.fill([tf.shape(x)[0]], tf.constant(label, tf.int32)))
            for label in range(num_classes)], axis=-1)
        return tf.reduce_logsumexp(per_class, axis=-1) - math.log(num_classes)
    return marginal


def _sample_labels(num_samples: int, num_classes: int | None) -> np.ndarray | None:
    if num_classes is None:
        return None
    return np.arange(num_samples, dtype=np.int32) % num_classes
