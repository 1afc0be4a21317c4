"""PNG pictures of what a flow learned, drawn with TensorFlow ops only.

* `image_grid` / `write_image_grid`: a batch of NHWC images in [0, 1] tiled into
  one picture (samples at a temperature, reconstructions, data).
* `density_image` / `write_density_png`: for 2-D data, a heat-map of a learned
  density `exp(log_prob)` on a grid, beside a 2-D histogram of the data on the
  same axes, so the two can be compared at a glance.
* `histogram_image`: the 2-D histogram alone (e.g. of samples).
* `log_density_grid`: the log-densities behind `density_image`, for other
  renderers (`tfflow.plots` draws them with axes and colour bars).

The images are uint8 tensors [height, width, channels]; `tf.summary.image` takes
them after `[None]` and `/ 255`, and `tf.io.encode_png` writes them.

Example:

>>> import tensorflow as tf
>>> grid = image_grid(tf.random.uniform([6, 8, 8, 1], seed=1), num_columns=3, scale=2)
>>> tuple(grid.shape), grid.dtype.name
((38, 56, 1), 'uint8')
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

__all__ = [
    "data_extent",
    "density_image",
    "histogram_image",
    "image_grid",
    "log_density_grid",
    "write_density_png",
    "write_image_grid",
    "write_png",
]

# Anchors of a perceptually ordered colour map (approximately matplotlib's
# viridis), low to high, RGB in [0, 1]; intermediate values interpolate linearly.
_COLOUR_ANCHORS = np.array([
    [0.267, 0.005, 0.329],
    [0.283, 0.141, 0.458],
    [0.254, 0.265, 0.530],
    [0.207, 0.372, 0.553],
    [0.164, 0.471, 0.558],
    [0.128, 0.567, 0.551],
    [0.135, 0.659, 0.518],
    [0.267, 0.749, 0.441],
    [0.478, 0.821, 0.318],
    [0.741, 0.873, 0.150],
    [0.993, 0.906, 0.144],
], dtype=np.float32)
_BORDER_VALUE = 0.5  # grey between the cells of a grid and between panels
_MIN_CELL_PIXELS = 32


def image_grid(
    images: Any,
    *,
    num_columns: int | None = None,
    padding: int = 1,
    scale: int | None = None,
) -> tf.Tensor:
    """Tiles a batch of images into one uint8 picture.

    Args:
      images: [N, H, W, C] floats in [0, 1] (clipped), C in {1, 3, 4}.
      num_columns: Images per row; default ceil(sqrt(N)).
      padding: Grey pixels between cells and around the border (before scaling).
      scale: Integer nearest-neighbour up-scaling; default enlarges small images
        so a cell is at least 32 pixels high (8x8 digits become 32x32).

    Returns:
      uint8 tensor [rows * (H + p) + p, cols * (W + p) + p, C] times `scale`.
    """
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4 or images.shape[0] == 0:
        raise ValueError(f"image_grid: expected a non-empty batch [N, H, W, C], got shape "
                         f"{images.shape}.")
    num, height, width, channels = images.shape
    if channels not in (1, 3, 4):
        raise ValueError(f"image_grid: expected 1, 3 or 4 channels, got {channels} "
                         f"(shape {images.shape}).")
    if num_columns is None:
        num_columns = math.ceil(math.sqrt(num))
    if not isinstance(num_columns, int) or num_columns < 1:
        raise ValueError(f"image_grid: expected num_columns a positive int, got {num_columns!r}.")
    if not isinstance(padding, int) or padding < 0:
        raise ValueError(f"image_grid: expected padding an int >= 0, got {padding!r}.")
    if scale is None:
        scale = max(1, _MIN_CELL_PIXELS // height)
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"image_grid: expected scale a positive int, got {scale!r}.")
    num_rows = math.ceil(num / num_columns)
    images = tf.clip_by_value(tf.cast(images, tf.float32), 0.0, 1.0)
    # Blank cells fill the last row; then pad every cell on its top and left.
    blank = tf.fill([num_rows * num_columns - num, height, width, channels], _BORDER_VALUE)
    cells = tf.concat([images, blank], axis=0)
    cells = tf.pad(cells, [[0, 0], [padding, 0], [padding, 0], [0, 0]],
                   constant_values=_BORDER_VALUE)
    cells = tf.reshape(cells, [num_rows, num_columns, height + padding, width + padding,
                               channels])
    grid = tf.reshape(tf.transpose(cells, [0, 2, 1, 3, 4]),
                      [num_rows * (height + padding), num_columns * (width + padding), channels])
    grid = tf.pad(grid, [[0, padding], [0, padding], [0, 0]], constant_values=_BORDER_VALUE)
    return _to_uint8(_upscale(grid, scale))


def write_image_grid(path: str, images: Any, **grid_kwargs: Any) -> str:
    """Writes `image_grid(images, **grid_kwargs)` as a PNG file and returns `path`."""
    return write_png(path, image_grid(images, **grid_kwargs))


def write_png(path: str, image: Any) -> str:
    """Writes a uint8 [H, W, C] image as a PNG file (creating folders) and returns `path`."""
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.uint8 or image.shape.rank != 3:
        raise ValueError(f"write_png: expected a uint8 [H, W, C] image, got {image.dtype.name} "
                         f"of shape {image.shape}.")
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    tf.io.write_file(path, tf.io.encode_png(image))
    return path


def data_extent(points: Any, margin: float = 0.1) -> tuple[float, float, float, float]:
    """A square-ish box (x_min, x_max, y_min, y_max) around 2-D points, with a margin.

    The box spans the 0.5%..99.5% quantiles of each coordinate, widened by
    `margin` times its size on each side, so a few outliers do not shrink the
    picture to a dot.
    """
    points = _as_points("data_extent", points)
    low = np.quantile(points, 0.005, axis=0)
    high = np.quantile(points, 0.995, axis=0)
    size = np.maximum(high - low, 1e-6)
    low, high = low - margin * size, high + margin * size
    return float(low[0]), float(high[0]), float(low[1]), float(high[1])


def histogram_image(
    points: Any,
    extent: tuple[float, float, float, float] | None = None,
    *,
    resolution: int = 128,
) -> tf.Tensor:
    """A 2-D histogram of points as a colour-mapped uint8 [resolution, resolution, 3] image.

    Rows run from y_max (top) to y_min (bottom), columns from x_min to x_max, as
    on a plot. The colour is sqrt(count / largest count), so that sparse
    regions stay visible.

    Args:
      points: [N, 2] array.
      extent: (x_min, x_max, y_min, y_max); default `data_extent(points)`.
      resolution: Bins per side (= pixels per side).
    """
    points = _as_points("histogram_image", points)
    extent = data_extent(points) if extent is None else _check_extent(extent)
    _check_resolution("histogram_image", resolution)
    x_min, x_max, y_min, y_max = extent
    column = np.floor((points[:, 0] - x_min) / (x_max - x_min) * resolution).astype(np.int64)
    row = np.floor((y_max - points[:, 1]) / (y_max - y_min) * resolution).astype(np.int64)
    inside = (column >= 0) & (column < resolution) & (row >= 0) & (row < resolution)
    counts = tf.math.unsorted_segment_sum(
        tf.ones([int(inside.sum())], tf.float32),
        tf.constant(row[inside] * resolution + column[inside]),
        resolution * resolution)
    # Square roots, so that sparse bins still show against empty ones.
    counts = tf.sqrt(tf.reshape(counts, [resolution, resolution]))
    return _to_uint8(_colour_map(counts / tf.maximum(tf.reduce_max(counts), 1.0)))


def density_image(
    log_prob_fn: Callable[[tf.Tensor], Any],
    points: Any,
    extent: tuple[float, float, float, float] | None = None,
    *,
    resolution: int = 128,
    batch_size: int = 4096,
) -> tf.Tensor:
    """A learned 2-D density beside a histogram of the data, as one uint8 picture.

    Left panel: `exp(log_prob_fn(grid))` on a `resolution` x `resolution` grid
    of cell centres over `extent`, colour-mapped (normalised by its maximum);
    right panel: `histogram_image(points, extent)`. Both share the axes, so
    where the model puts mass can be compared with where the data lies.

    Args:
      log_prob_fn: Maps a float32 [M, 2] batch to [M] log-densities (e.g. a
        flow model's `log_prob`).
      points: [N, 2] data (or samples) to histogram.
      extent: (x_min, x_max, y_min, y_max); default `data_extent(points)`.
      resolution: Pixels per side of each panel.
      batch_size: Grid points per call to `log_prob_fn`.

    Returns:
      uint8 tensor [resolution + 2, 2 * resolution + 3, 3].
    """
    points = _as_points("density_image", points)
    extent = data_extent(points) if extent is None else _check_extent(extent)
    log_probs = log_density_grid(log_prob_fn, extent, resolution=resolution,
                                 batch_size=batch_size, where="density_image")
    peak = np.max(log_probs)
    density = (np.exp(log_probs - peak) if np.isfinite(peak)  # all -inf: nothing to draw
               else np.zeros_like(log_probs)).astype(np.float32)
    heat = _to_uint8(_colour_map(tf.constant(density)))
    return _side_by_side([heat, histogram_image(points, extent, resolution=resolution)])


def log_density_grid(
    log_prob_fn: Callable[[tf.Tensor], Any],
    extent: tuple[float, float, float, float],
    *,
    resolution: int = 128,
    batch_size: int = 4096,
    where: str = "log_density_grid",
) -> np.ndarray:
    """`log_prob_fn` at the centres of a `resolution` x `resolution` grid over `extent`.

    Returns float64 [resolution, resolution], rows from y_max (top) down to
    y_min, columns from x_min to x_max, as on a plot; NaN and +-inf become -inf (no mass drawn).
    """
    extent = _check_extent(extent)
    _check_resolution(where, resolution)
    x_min, x_max, y_min, y_max = extent
    xs = x_min + (np.arange(resolution) + 0.5) * (x_max - x_min) / resolution
    ys = y_max - (np.arange(resolution) + 0.5) * (y_max - y_min) / resolution
    grid_x, grid_y = np.meshgrid(xs, ys)
    grid = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1).astype(np.float32)
    log_probs = np.concatenate([
        np.reshape(np.asarray(log_prob_fn(tf.constant(grid[start:start + batch_size])),
                              np.float64), [-1])
        for start in range(0, len(grid), batch_size)
    ])
    log_probs = np.where(np.isfinite(log_probs), log_probs, -np.inf)
    return log_probs.reshape(resolution, resolution)


def write_density_png(path: str, log_prob_fn: Callable[[tf.Tensor], Any], points: Any,
                      **density_kwargs: Any) -> str:
    """Writes `density_image(log_prob_fn, points, **density_kwargs)` as a PNG; returns `path`."""
    return write_png(path, density_image(log_prob_fn, points, **density_kwargs))


# -------------------------------------------------------------------- helpers


def _upscale(image: tf.Tensor, scale: int) -> tf.Tensor:
    if scale == 1:
        return image
    image = tf.repeat(image, scale, axis=0)
    return tf.repeat(image, scale, axis=1)


def _to_uint8(image: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 1.0) * 255.0), tf.uint8)


def _colour_map(values: tf.Tensor) -> tf.Tensor:
    """Maps values in [0, 1] of any shape to RGB in [0, 1] (shape + [3])."""
    anchors = tf.constant(_COLOUR_ANCHORS)
    position = tf.clip_by_value(tf.cast(values, tf.float32), 0.0, 1.0) * (len(_COLOUR_ANCHORS) - 1)
    lower = tf.minimum(tf.cast(tf.floor(position), tf.int32), len(_COLOUR_ANCHORS) - 2)
    weight = (position - tf.cast(lower, tf.float32))[..., None]
    return (1.0 - weight) * tf.gather(anchors, lower) + weight * tf.gather(anchors, lower + 1)


def _side_by_side(panels: list[tf.Tensor]) -> tf.Tensor:
    """Places equally tall uint8 RGB panels in a row, with a 1-pixel grey frame."""
    grey = int(round(_BORDER_VALUE * 255))
    framed = [tf.pad(panel, [[1, 1], [1, 0], [0, 0]], constant_values=grey) for panel in panels]
    row = tf.concat(framed, axis=1)
    return tf.pad(row, [[0, 0], [0, 1], [0, 0]], constant_values=grey)


def finite_rows(where: str, what: str, rows: Any, width: int | None = None) -> np.ndarray:
    """`rows` as float64 [N, D] (D = `width` if given) less its non-finite rows.

    Not 2-D, empty, the wrong width, or no finite row left: a `ValueError`
    naming `where` and `what`.
    """
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[0] == 0 or (width is not None and rows.shape[1] != width):
        raise ValueError(f"{where}: expected {what} of shape [N, {width or 'D'}] with N >= 1, "
                         f"got shape {rows.shape}.")
    finite = np.all(np.isfinite(rows), axis=1)
    if not finite.any():
        raise ValueError(f"{where}: expected finite {what}, got only NaN/Inf rows.")
    return rows[finite]


def _as_points(where: str, points: Any) -> np.ndarray:
    return finite_rows(where, "2-D points", points, width=2)


def _check_extent(extent: Any) -> tuple[float, float, float, float]:
    try:
        x_min, x_max, y_min, y_max = (float(value) for value in extent)
    except (TypeError, ValueError):
        raise ValueError(f"expected extent (x_min, x_max, y_min, y_max), got {extent!r}.") from None
    if not (x_min < x_max and y_min < y_max):
        raise ValueError(f"expected extent with x_min < x_max and y_min < y_max, got {extent!r}.")
    return x_min, x_max, y_min, y_max


def _check_resolution(where: str, resolution: Any) -> None:
    if not isinstance(resolution, int) or resolution < 2:
        raise ValueError(f"{where}: expected resolution an int >= 2, got {resolution!r}.")
