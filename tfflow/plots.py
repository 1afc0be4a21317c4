"""Pictures with axes, colour bars and captions, drawn with matplotlib (an optional extra).

`pip install "tfflow[plots]"` brings matplotlib; without it `available()` is
False and `tfflow.training` writes the plain pixel pictures of `tfflow.images`
instead. matplotlib is imported on first use only, so `import tfflow` and the
apps' `--help` do not pay for it.

Every function returns a uint8 RGB picture [height, width, 3] (NumPy), which
`tfflow.images.write_png` writes and TensorBoard shows as it is:

* `density_plot`: for 2-D data, a 2-D histogram of the data beside the model's
  density p(x) on the same extent, each with its colour bar (both per unit
  area, so the numbers compare), axes, ticks and titles.
* `sample_grid_plot`: a grid of image samples under a caption (temperature,
  model, data set).
* `pair_plot`: for tables, samples against data for a few columns: scatter
  plots of each pair below the diagonal, histograms of each column on it.
* `scatter_plot`: 2-D samples alone, as a histogram with axes.

Figures are made with `matplotlib.figure.Figure` and rendered by the Agg
canvas: no pyplot, no display, no global figure list to leak into.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["INSTALL_HINT", "available", "density_plot", "pair_plot", "sample_grid_plot",
           "scatter_plot"]

INSTALL_HINT = 'pip install "tfflow[plots]"'
_DPI = 100
_DATA_COLOUR = "#1f77b4"     # blue: the data
_SAMPLE_COLOUR = "#ff7f0e"   # orange: the model's samples
_COLOUR_MAP = "viridis"      # as the pixel pictures' colour map


def available() -> bool:
    """Whether matplotlib can be imported (the `plots` extra is installed)."""
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        return False
    return True


def density_plot(log_prob_fn: Callable[[Any], Any], points: Any, *, title: str,
                 extent: tuple[float, float, float, float] | None = None,
                 resolution: int = 128, bins: int = 64,
                 axis_labels: Sequence[str] = ("x[0]", "x[1]"),
                 points_label: str = "data") -> np.ndarray:
    """The data's 2-D histogram beside the model density exp(log_prob_fn) on one extent.

    Both panels are densities per unit area: the histogram is normalised by
    the number of points and the bin area, the model's panel is p(x) itself,
    so where they agree the colour bars read alike. Colours follow the square
    root of the value (a power norm), so thin tails stay visible.

    Args:
      log_prob_fn: float32 [M, 2] -> [M] log-densities (a model's `log_prob`).
      points: [N, 2] data in the units `log_prob_fn` takes.
      title: The figure's title (e.g. "realnvp on two_moons").
      extent: (x_min, x_max, y_min, y_max); default `images.data_extent(points)`.
      resolution: Grid points per side for the model's panel.
      bins: Histogram bins per side.
      axis_labels: Names of the two coordinates.
      points_label: What the points are, for the left panel's title.

    Returns:
      uint8 [H, W, 3], about 1000 x 430 pixels.
    """
    from tfflow import images  # pylint: disable=import-outside-toplevel
    colors = _matplotlib("colors")
    # pylint: disable=protected-access  (the checks images' own pictures make)
    points = images.finite_rows("density_plot", "2-D points", points, width=2)
    extent = images.data_extent(points) if extent is None else images._check_extent(extent)
    # pylint: enable=protected-access
    log_probs = images.log_density_grid(log_prob_fn, extent, resolution=resolution,
                                        where="density_plot")
    density = np.where(np.isfinite(log_probs), np.exp(np.minimum(log_probs, 700.0)), 0.0)
    counts, _, _ = np.histogram2d(points[:, 0], points[:, 1], bins=bins,
                                  range=[extent[:2], extent[2:]])
    area = (extent[1] - extent[0]) * (extent[3] - extent[2]) / bins ** 2
    empirical = counts.T[::-1] / (len(points) * area)  # rows from y_max down, as `density`

    figure, (left, right) = _figure(10.0, 4.3, columns=2)
    for axes, values, panel_title in (
            (left, empirical, f"{points_label}: 2-D histogram ({len(points):,} points)"),
            (right, density, "model density p(x)")):
        peak = float(np.max(values)) if np.max(values) > 0 else 1.0
        shown = axes.imshow(values, extent=extent, origin="upper", aspect="auto",
                            cmap=_COLOUR_MAP, interpolation="nearest",
                            norm=colors.PowerNorm(gamma=0.5, vmin=0.0, vmax=peak))
        colour_bar = figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.03)
        colour_bar.set_label("density per unit area")
        axes.set_title(panel_title, fontsize=10)
        axes.set_xlabel(axis_labels[0])
        axes.set_ylabel(axis_labels[1])
    figure.suptitle(title, fontsize=12)
    return _render(figure)


def scatter_plot(points: Any, *, title: str,
                 axis_labels: Sequence[str] = ("x[0]", "x[1]"), bins: int = 64) -> np.ndarray:
    """A 2-D histogram of points (e.g. samples) with axes, a colour bar and a title."""
    from tfflow import images  # pylint: disable=import-outside-toplevel
    colors = _matplotlib("colors")
    points = images.finite_rows("scatter_plot", "2-D points", points, width=2)
    extent = images.data_extent(points)
    figure, axes = _figure(5.6, 4.6)
    counts, _, _ = np.histogram2d(points[:, 0], points[:, 1], bins=bins,
                                  range=[extent[:2], extent[2:]])
    shown = axes.imshow(counts.T[::-1], extent=extent, origin="upper", aspect="auto",
                        cmap=_COLOUR_MAP, interpolation="nearest",
                        norm=colors.PowerNorm(gamma=0.5, vmin=0.0, vmax=max(counts.max(), 1)))
    figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.03).set_label("points per bin")
    axes.set_xlabel(axis_labels[0])
    axes.set_ylabel(axis_labels[1])
    axes.set_title(title, fontsize=10)
    return _render(figure)


def sample_grid_plot(grid: Any, *, title: str) -> np.ndarray:
    """An image grid (`tfflow.images.image_grid`'s uint8 [H, W, C]) under a caption.

    The grid keeps its pixels (nearest-neighbour, never shrunk): the figure
    grows with it, and is at least 480 pixels wide so the caption fits.
    """
    grid = np.asarray(grid)
    if grid.ndim != 3 or grid.shape[-1] not in (1, 3, 4) or grid.dtype != np.uint8:
        raise ValueError(f"sample_grid_plot: expected a uint8 [H, W, C] grid with C in "
                         f"{{1, 3, 4}}, got {grid.dtype} of shape {grid.shape}.")
    height, width = grid.shape[:2]
    caption_lines = title.count("\n") + 1
    caption = 0.15 + 0.2 * caption_lines  # inches above the grid
    # Enlarge small grids by an integer factor so that pixels stay square and sharp.
    scale = max(1, int(np.ceil(400 / max(width, 1))))
    fig_width = max(width * scale / _DPI + 0.4, 4.8)
    fig_height = height * scale / _DPI + 0.2 + caption
    figure, axes = _figure(fig_width, fig_height)
    # Place the grid by hand: centred, at `scale` pixels per grid pixel.
    axes.set_position([(fig_width - width * scale / _DPI) / 2 / fig_width, 0.1 / fig_height,
                       width * scale / _DPI / fig_width, height * scale / _DPI / fig_height])
    if grid.shape[-1] == 1:
        axes.imshow(grid[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        axes.imshow(grid, interpolation="nearest")
    axes.set_axis_off()
    figure.text(0.5, 1.0 - 0.12 / fig_height, title, ha="center", va="top", fontsize=10)
    return _render(figure, tight=False)


def pair_plot(samples: Any, data: Any, *, title: str, columns: Sequence[int] | None = None,
              column_names: Sequence[str] | None = None, samples_label: str = "model samples",
              data_label: str = "data", max_points: int = 1000) -> np.ndarray:
    """Samples against data for a few columns of a table.

    Below the diagonal: scatter plots of each pair of the chosen columns,
    data (blue) under samples (orange); on the diagonal: each column's
    histogram for both, on shared bins. The axes span the data's
    0.5%..99.5% quantiles (widened by 10%), so a few wild samples do not
    shrink the picture; how many samples fall outside is part of the title.

    Args:
      samples: [N, D] model samples in the data's units.
      data: [M, D] data rows.
      title: The figure's title; say there which columns are shown.
      columns: Indices of the columns to draw; default the first min(4, D).
      column_names: Names of all D columns; default "column i".
      samples_label: The samples' name in the legend.
      data_label: The data's name in the legend.
      max_points: At most this many rows of each (the first ones) are drawn.

    Returns:
      uint8 [H, W, 3]; about 250 pixels per column, at least 500 wide.
    """
    from tfflow import images  # pylint: disable=import-outside-toplevel
    samples = images.finite_rows("pair_plot", "samples", samples)
    data = images.finite_rows("pair_plot", "data", data)
    if samples.shape[1] != data.shape[1]:
        raise ValueError(f"pair_plot: expected samples and data with the same number of "
                         f"columns, got {samples.shape[1]} and {data.shape[1]}.")
    num_columns = data.shape[1]
    columns = list(range(min(4, num_columns))) if columns is None else list(columns)
    if not columns or any(not 0 <= c < num_columns for c in columns):
        raise ValueError(f"pair_plot: expected column indices in 0..{num_columns - 1}, got "
                         f"{columns}.")
    names = ([f"column {c}" for c in range(num_columns)] if column_names is None
             else [str(name) for name in column_names])
    samples, data = samples[:max_points], data[:max_points]
    low = np.quantile(data, 0.005, axis=0)
    high = np.quantile(data, 0.995, axis=0)
    size = np.maximum(high - low, 1e-6)
    low, high = low - 0.1 * size, high + 0.1 * size
    chosen = np.array(columns)
    outside = np.any((samples[:, chosen] < low[chosen]) | (samples[:, chosen] > high[chosen]),
                     axis=1)

    k = len(columns)
    num_bins = int(np.clip(np.sqrt(min(len(data), len(samples))), 10, 30))
    marker = 8 if max(len(data), len(samples)) < 500 else 3  # few points: bigger dots
    side = max(2.5 * k, 5.0) / k
    figure, grid = _figure(side * k, side * k + 0.6, rows=k, columns=k)
    grid = np.asarray(grid).reshape(k, k)
    for row, row_column in enumerate(columns):
        for col, col_column in enumerate(columns):
            axes = grid[row, col]
            if col > row:
                axes.set_axis_off()
                continue
            if row == col:
                bins = np.linspace(low[row_column], high[row_column], num_bins + 1)
                axes.hist(data[:, row_column], bins=bins, density=True, histtype="stepfilled",
                          color=_DATA_COLOUR, alpha=0.45, label=data_label)
                axes.hist(samples[:, row_column], bins=bins, density=True, histtype="step",
                          color=_SAMPLE_COLOUR, linewidth=1.5, label=samples_label)
                axes.set_yticks([])
            else:
                axes.scatter(data[:, col_column], data[:, row_column], s=marker, alpha=0.4,
                             color=_DATA_COLOUR, linewidths=0)
                axes.scatter(samples[:, col_column], samples[:, row_column], s=marker, alpha=0.4,
                             color=_SAMPLE_COLOUR, linewidths=0)
                axes.set_ylim(low[row_column], high[row_column])
            axes.set_xlim(low[col_column], high[col_column])
            axes.tick_params(labelsize=7)
            if row == k - 1:
                axes.set_xlabel(names[col_column], fontsize=9)
            if col == 0 and row > 0:
                axes.set_ylabel(names[row_column], fontsize=9)
            if row == col == 0:
                axes.set_ylabel(names[row_column], fontsize=9)
    handles, labels = grid[0, 0].get_legend_handles_labels()
    labels = [f"{data_label} ({len(data):,})" if label == data_label else
              f"{samples_label} ({len(samples):,})" for label in labels]
    if k > 1:  # in the empty top-right cell, clear of the title
        grid[0, k - 1].legend(handles, labels, loc="center", fontsize=9, frameon=False)
    else:
        grid[0, 0].legend(handles, labels, loc="upper right", fontsize=8, frameon=False)
    suffix = (f"\n{int(outside.sum())} of {len(samples):,} samples fall outside the axes"
              if outside.any() else "")
    figure.suptitle(title + suffix, fontsize=11)
    return _render(figure)


# -------------------------------------------------------------------- helpers


def _matplotlib(submodule: str | None = None) -> Any:
    """matplotlib (or one of its submodules), with an ImportError that says how to get it."""
    try:
        module = importlib.import_module("matplotlib")
        return importlib.import_module(f"matplotlib.{submodule}") if submodule else module
    except ImportError as error:
        raise ImportError(f"tfflow.plots needs matplotlib: {INSTALL_HINT}") from error


def _figure(width: float, height: float, *, rows: int = 1, columns: int = 1) -> tuple[Any, Any]:
    """A Figure on an Agg canvas (no pyplot, no display) and its axes."""
    figure_module = _matplotlib("figure")
    agg = _matplotlib("backends.backend_agg")
    figure = figure_module.Figure(figsize=(width, height), dpi=_DPI)
    agg.FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=True) if rows * columns > 1 else \
        figure.add_subplot(1, 1, 1)
    return figure, axes


def _render(figure: Any, *, tight: bool = True) -> np.ndarray:
    """Draws the figure and returns its pixels, uint8 [H, W, 3] on white."""
    if tight:
        figure.tight_layout(rect=(0, 0, 1, 0.95))
    figure.canvas.draw()
    rgba = np.asarray(figure.canvas.buffer_rgba())
    picture = np.array(rgba[..., :3])  # a copy: the canvas's buffer goes with the figure
    figure.clear()
    return picture


