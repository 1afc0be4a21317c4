"""Data sets for tfflow, every one readable without the internet.

Three sources, one entry point (`load`) and one description (`info`):

* Embedded: `digits` (the 1,797 8x8 handwritten digits of the UCI set as shipped
  in scikit-learn, stored in `tfflow/_data/digits.npz` with a fixed split) and
  2-D toy densities generated in code from fixed seeds: `two_moons`, `circles`,
  `eight_gaussians`, `checkerboard`, `pinwheel`, `spirals`.
* tensorflow-datasets: `mnist`, `fashion_mnist`, `cifar10`, `celeb_a` and any
  other TFDS image set, read from a prepared `data_dir`. Nothing is ever
  downloaded: prepare the data with `tfds build NAME --data_dir=DIR` on a
  machine with internet and copy `DIR` over.
* The user's own table: a path to a `.npy` or `.csv` file of numbers [N, D].

Images come out dequantised: for integer levels `k` in `0..B-1`,
`x = (k + u) / B` with `u ~ Uniform[0, 1)` drawn afresh per example and epoch,
so `x` lies in [0, 1) and a model's NLL converts to bits/dim with
`bits_per_dim(nll_nats, D, B)`. The noise comes from stateless random ops seeded
by `seed`: the same `seed` gives the same stream of batches.

Example:

>>> import tfflow.data
>>> ds = tfflow.data.load("digits", "test", batch_size=8)
>>> x = next(iter(ds))
>>> tuple(x.shape), x.dtype.name
((8, 8, 8, 1), 'float32')
>>> tfflow.data.info("digits").num_levels
17
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

__all__ = [
    "DatasetInfo",
    "EMBEDDED_DATASETS",
    "SPLITS",
    "TFDS_IMAGE_DATASETS",
    "TOY_DATASETS",
    "bits_per_dim",
    "fit_gaussian_nll",
    "info",
    "load",
    "load_array",
]

SPLITS: tuple[str, ...] = ("train", "validation", "test")

TOY_DATASETS: tuple[str, ...] = (
    "two_moons",
    "circles",
    "eight_gaussians",
    "checkerboard",
    "pinwheel",
    "spirals",
)
EMBEDDED_DATASETS: tuple[str, ...] = ("digits",) + TOY_DATASETS
# Named in error messages; any other TFDS image data set loads as well.
TFDS_IMAGE_DATASETS: tuple[str, ...] = ("mnist", "fashion_mnist", "cifar10", "celeb_a")

_DIGITS_PATH = os.path.join(os.path.dirname(__file__), "_data", "digits.npz")
_DIGITS_LEVELS = 17
_TOY_SPLIT_SIZES = {"train": 20_000, "validation": 2_000, "test": 5_000}
_TABULAR_EXTENSIONS = (".npy", ".csv")
_TABULAR_TEST_FRACTION = 0.1
# The split of a user's file must not move when the shuffling seed changes.
_TABULAR_SPLIT_SEED = 0
_MIN_TABULAR_ROWS = 10
_TFDS_SHUFFLE_BUFFER = 10_000
_CELEB_A_DEFAULT_SIZE = 64
# (k + u) / B rounds to exactly 1.0 in float32 for the top level when u is
# within 2**-24 of 1; clamping keeps the promise x < 1.
_BELOW_ONE = float(np.nextafter(np.float32(1.0), np.float32(0.0)))


@dataclasses.dataclass(frozen=True, eq=False)
class DatasetInfo:
    """What training code needs to know about a data set.

    Attributes:
      name: The name (or file path) it was loaded under.
      kind: "image" (NHWC, values in [0, 1)), "toy2d" (2-D points) or "tabular".
      event_shape: Shape of one example, e.g. (8, 8, 1) or (2,).
      num_levels: Quantisation levels B of the dequantised data (17 for digits,
        2**num_bits for 8-bit images); None for continuous data.
      num_classes: Number of labels, or None when there are none.
      true_entropy: Differential entropy of the generating density in nats per
        example where it is known in closed form or to quadrature precision
        (`eight_gaussians`, `checkerboard`); None otherwise.
      mean: Per-column training mean used to standardise tabular data.
      std: Per-column training standard deviation used to standardise tabular
        data (1.0 where a column is constant).
      standardization_log_det: `-sum(log(std))` for tabular data: with
        `z = (x - mean) / std`, `log p(x) = log p(z) + standardization_log_det`,
        so `NLL(x) = NLL(z) - standardization_log_det`. None for other kinds.
    """

    name: str
    kind: str
    event_shape: tuple[int, ...]
    num_levels: int | None
    num_classes: int | None
    true_entropy: float | None = None
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    standardization_log_det: float | None = None

    @property
    def num_dims(self) -> int:
        """Number of scalar dimensions D of one example."""
        return math.prod(self.event_shape)


def bits_per_dim(nll_nats: Any, num_dims: int, num_levels: int | None) -> Any:
    """Converts a negative log-likelihood into bits per dimension.

    For data with `B = num_levels` levels scaled to [0, 1), the density on
    [0, 1)^D relates to the discrete probability by a factor B**D, so

        bits/dim = (NLL_nats + D * log(B)) / (D * ln 2).

    With `num_levels=None` (continuous data) the offset is dropped.

    Args:
      nll_nats: NLL in nats per example: a float, NumPy array or tf.Tensor.
      num_dims: D, the number of dimensions of one example (pixels x channels).
      num_levels: B, or None for continuous data.

    Returns:
      Bits per dimension, of the same kind as `nll_nats`.

    Example:

    >>> round(bits_per_dim(0.0, 784, 256), 6)
    8.0
    """
    if not isinstance(num_dims, (int, np.integer)) or num_dims < 1:
        raise ValueError(f"bits_per_dim: expected num_dims a positive int, got {num_dims!r}.")
    if num_levels is not None and (not isinstance(num_levels, (int, np.integer)) or num_levels < 2):
        raise ValueError(
            f"bits_per_dim: expected num_levels an int >= 2 or None, got {num_levels!r}."
        )
    offset = num_dims * math.log(num_levels) if num_levels is not None else 0.0
    return (nll_nats + offset) / (num_dims * math.log(2.0))


def fit_gaussian_nll(train_array: np.ndarray, test_array: np.ndarray) -> float:
    """Test NLL of a full-covariance Gaussian fitted to the training rows.

    The baseline a flow has to beat on tabular data: maximum-likelihood mean
    and covariance from `train_array`, average negative log-density of the
    rows of `test_array`, in nats per example and in the arrays' own units.
    Compare with a flow's NLL on standardised data minus
    `info(path).standardization_log_det`.

    Args:
      train_array: [N, D] array, N > D.
      test_array: [M, D] array.

    Returns:
      Mean NLL over the test rows (nats per example).
    """
    train = _as_finite_matrix(train_array, "train_array")
    test = _as_finite_matrix(test_array, "test_array")
    if train.shape[1] != test.shape[1]:
        raise ValueError(
            "fit_gaussian_nll: expected train_array and test_array with the same number of "
            f"columns, got {train.shape[1]} and {test.shape[1]}."
        )
    num_rows, num_dims = train.shape
    if num_rows <= num_dims:
        raise ValueError(
            "fit_gaussian_nll: expected more training rows than columns to fit a covariance, "
            f"got {num_rows} rows and {num_dims} columns."
        )
    mean = train.mean(axis=0)
    covariance = np.atleast_2d(np.cov(train, rowvar=False, bias=True))
    try:
        cholesky = np.linalg.cholesky(covariance)
    except np.linalg.LinAlgError:
        raise ValueError(
            "fit_gaussian_nll: the training covariance is singular (a constant column, or "
            "columns that are exact linear combinations of others); drop those columns."
        ) from None
    whitened = np.linalg.solve(cholesky, (test - mean).T)
    log_det = 2.0 * np.sum(np.log(np.diag(cholesky)))
    nll = 0.5 * (num_dims * math.log(2.0 * math.pi) + log_det + np.sum(whitened**2, axis=0))
    return float(np.mean(nll))


def info(
    name: str,
    data_dir: str | None = None,
    *,
    image_size: int | None = None,
    num_bits: int | None = None,
    validation_fraction: float = 0.1,
) -> DatasetInfo:
    """Describes a data set as `load` with the same arguments delivers it.

    TFDS sets are described from their code, so this works before the data is
    prepared. A tabular file is read to compute its training statistics.

    Args:
      name: A name known to `load`, or a path to a `.npy`/`.csv` file.
      data_dir: TFDS data directory (TFDS sets only).
      image_size: Side of the square images after centre crop and resize (TFDS
        sets only; `celeb_a` defaults to 64).
      num_bits: Bits kept per 8-bit pixel (1..8); sets `num_levels = 2**num_bits`.
      validation_fraction: Share of the training rows held out for validation
        (tabular files: it changes the training statistics).

    Returns:
      The `DatasetInfo`.
    """
    _check_common_args("info", num_bits=num_bits, image_size=image_size,
                       validation_fraction=validation_fraction)
    source = _source_kind("info", name)
    if source == "tabular":
        _reject_image_args("info", name, num_bits=num_bits, image_size=image_size)
        return _prepare_tabular("info", name, validation_fraction)[0]
    if source == "digits":
        _reject_image_args("info", name, num_bits=num_bits, image_size=image_size)
        return _digits_info()
    if source == "toy":
        _reject_image_args("info", name, num_bits=num_bits, image_size=image_size)
        return _toy_info(name)
    return _tfds_info("info", _tfds_builder("info", name, data_dir), name, image_size, num_bits)


def load(
    name: str,
    split: str = "train",
    *,
    batch_size: int = 64,
    shuffle: bool | None = None,
    seed: int = 0,
    num_bits: int | None = None,
    data_dir: str | None = None,
    image_size: int | None = None,
    with_labels: bool = False,
    repeat: bool = False,
    drop_remainder: bool = False,
    validation_fraction: float = 0.1,
    num_examples: int | None = None,
) -> tf.data.Dataset:
    """Loads a data set as batched, prefetched float32 tensors.

    Images are NHWC in [0, 1): `x = (k + u) / B`, with `k` the integer level
    (after keeping the top `num_bits` bits of 8-bit data: `k = k8 // 2**(8 -
    num_bits)`, `B = 2**num_bits`), `u ~ Uniform[0, 1)` fresh per example and
    epoch. Toy points are [batch, 2]; tabular rows are standardised with the
    training split's mean and std (see `info(path).standardization_log_det`).

    Splits: "train", "validation", "test". `digits` carves validation from its
    fixed training rows; toy densities draw each split from its own seed; a
    tabular file is split 90/10 into (train + validation)/test by a fixed seed,
    then validation is carved from the first part. For TFDS sets `split` is any
    TFDS split string ("train", "test", "train[:90%]", ...).

    Args:
      name: An embedded name (`EMBEDDED_DATASETS`), a TFDS image data set name,
        or a path to a `.npy`/`.csv` file of numbers [N, D].
      split: Which split.
      batch_size: Examples per batch.
      shuffle: Shuffle examples (reshuffled every epoch); default: only "train".
      seed: Seeds shuffling and dequantisation noise; the data itself and the
        splits never depend on it.
      num_bits: Bits kept per 8-bit pixel, 1..8 (8-bit images only).
      data_dir: Where prepared TFDS data lives (TFDS default when None).
      image_size: Centre-crop to a square and resize to this side (TFDS sets;
        `celeb_a` defaults to 64).
      with_labels: Yield `(x, label)` with int32 labels instead of `x`.
      repeat: Repeat forever (fresh shuffle and noise each epoch).
      drop_remainder: Drop the last incomplete batch.
      validation_fraction: Share of training rows held out as "validation"
        (digits and tabular files), in [0, 1).
      num_examples: Size of the requested split (toy densities only; defaults
        20,000 / 2,000 / 5,000 for train / validation / test).

    Returns:
      A `tf.data.Dataset` of `x` or `(x, label)`.

    Raises:
      ValueError: for an unknown name or split, arguments out of range, a
        TFDS set that is not prepared under `data_dir`, or an unreadable file.
    """
    _check_common_args("load", num_bits=num_bits, image_size=image_size,
                       validation_fraction=validation_fraction)
    _check_positive_int("load", "batch_size", batch_size)
    _check_positive_int("load", "num_examples", num_examples, allow_none=True)
    if not _is_int(seed):
        raise ValueError(f"load: expected seed an int, got {seed!r}.")
    if not isinstance(split, str) or not split:
        raise ValueError(f"load: expected split a non-empty string, got {split!r}.")
    if shuffle is None:
        shuffle = split == "train"
    batching = _Batching(batch_size=batch_size, shuffle=bool(shuffle), seed=int(seed),
                         repeat=repeat, drop_remainder=drop_remainder,
                         with_labels=with_labels)
    source = _source_kind("load", name)
    if source != "toy" and num_examples is not None:
        raise ValueError(
            f"load: num_examples applies to the toy densities {TOY_DATASETS}, got "
            f"num_examples={num_examples} for {name!r}."
        )
    if source == "tfds":
        return _load_tfds(name, split, data_dir, image_size, num_bits, batching)
    _check_embedded_split("load", name, split)
    _reject_image_args("load", name, num_bits=num_bits, image_size=image_size)
    if source == "digits":
        images, labels = _digits_split("load", split, validation_fraction)
        return _image_batches(tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int32))),
                              len(labels), _DIGITS_LEVELS, 1, batching)
    if source == "toy":
        points, labels = _toy_split(name, split, num_examples)
        return _continuous_batches(points.astype(np.float32), labels, batching)
    if with_labels:
        raise ValueError(f"load: tabular file {name!r} has no labels; got with_labels=True.")
    dataset_info, splits = _prepare_tabular("load", name, validation_fraction)
    rows = splits[split]
    if len(rows) == 0:
        raise ValueError(f"load: split {split!r} of {name!r} is empty "
                         f"(validation_fraction={validation_fraction}).")
    standardised = (rows - dataset_info.mean) / dataset_info.std
    return _continuous_batches(standardised.astype(np.float32), None, batching)


def load_array(
    name: str,
    split: str = "train",
    *,
    validation_fraction: float = 0.1,
    num_examples: int | None = None,
) -> np.ndarray:
    """Returns an embedded or tabular split as one NumPy array, untransformed.

    Digits come as their integer levels (uint8 [N, 8, 8, 1]), toy points as
    float64 [N, 2], tabular rows in the file's own units (not standardised):
    the arrays to hand to `fit_gaussian_nll` or to plot. The rows are the same
    as `load`'s for the same arguments.

    Args:
      name: An embedded name or a `.npy`/`.csv` path (not a TFDS set).
      split: "train", "validation" or "test".
      validation_fraction: As in `load`.
      num_examples: As in `load` (toy densities only).

    Returns:
      The split's examples.
    """
    _check_common_args("load_array", num_bits=None, image_size=None,
                       validation_fraction=validation_fraction)
    _check_positive_int("load_array", "num_examples", num_examples, allow_none=True)
    source = _source_kind("load_array", name)
    if source == "tfds":
        raise ValueError(
            f"load_array: expected an embedded data set or a .npy/.csv path, got the TFDS "
            f"data set {name!r}; use load() or tfds.as_numpy for it."
        )
    if source != "toy" and num_examples is not None:
        raise ValueError(f"load_array: num_examples applies to the toy densities {TOY_DATASETS}, "
                         f"got num_examples={num_examples} for {name!r}.")
    _check_embedded_split("load_array", name, split)
    if source == "digits":
        return _digits_split("load_array", split, validation_fraction)[0]
    if source == "toy":
        return _toy_split(name, split, num_examples)[0]
    return _prepare_tabular("load_array", name, validation_fraction)[1][split]


# ---------------------------------------------------------------- validation


def _check_common_args(where: str, *, num_bits: int | None, image_size: int | None,
                       validation_fraction: float) -> None:
    if num_bits is not None and (not _is_int(num_bits) or not 1 <= num_bits <= 8):
        raise ValueError(f"{where}: expected num_bits an int in 1..8 or None, got {num_bits!r}.")
    _check_positive_int(where, "image_size", image_size, allow_none=True)
    if not isinstance(validation_fraction, (int, float)) or not 0.0 <= validation_fraction < 1.0:
        raise ValueError(
            f"{where}: expected validation_fraction in [0, 1), got {validation_fraction!r}."
        )


def _check_positive_int(where: str, arg: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not _is_int(value) or value < 1:
        raise ValueError(f"{where}: expected {arg} a positive int, got {value!r}.")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_embedded_split(where: str, name: str, split: str) -> None:
    if split not in SPLITS:
        raise ValueError(
            f"{where}: unknown split {split!r} for {name!r}; expected one of {SPLITS}.")


def _reject_image_args(where: str, name: str, *, num_bits: int | None,
                       image_size: int | None) -> None:
    # Silently ignoring these would leave a user believing they took effect.
    if num_bits is not None:
        detail = "it has 17 levels (0..16)" if name == "digits" else "it is continuous"
        raise ValueError(f"{where}: num_bits applies to 8-bit images only, got num_bits="
                         f"{num_bits} for {name!r}: {detail}.")
    if image_size is not None:
        raise ValueError(f"{where}: image_size applies to TFDS image sets only, got "
                         f"image_size={image_size} for {name!r}.")


def _source_kind(where: str, name: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: expected a data set name or file path, got {name!r}.")
    if name.lower().endswith(_TABULAR_EXTENSIONS):
        return "tabular"
    if name == "digits":
        return "digits"
    if name in TOY_DATASETS:
        return "toy"
    # Not "contains a slash": TFDS names carry configs, e.g. "celeb_a/align".
    if os.path.exists(name):
        raise ValueError(f"{where}: {name!r} looks like a file path; expected a file ending in "
                         f"{' or '.join(_TABULAR_EXTENSIONS)}.")
    return "tfds"


def _unknown_name_message(where: str, name: str) -> str:
    return (f"{where}: unknown data set {name!r}. Known: embedded {EMBEDDED_DATASETS}; "
            f"through tensorflow-datasets from data_dir {TFDS_IMAGE_DATASETS} or any other TFDS "
            f"image data set (tfds.list_builders()); or a path to a .npy/.csv file.")


# ------------------------------------------------------------------ pipelines


@dataclasses.dataclass(frozen=True)
class _Batching:
    batch_size: int
    shuffle: bool
    seed: int
    repeat: bool
    drop_remainder: bool
    with_labels: bool


def _shuffle_repeat_batch(ds: tf.data.Dataset, buffer_size: int,
                          batching: _Batching) -> tf.data.Dataset:
    if batching.shuffle:
        ds = ds.shuffle(buffer_size, seed=batching.seed, reshuffle_each_iteration=True)
    if batching.repeat:
        ds = ds.repeat()
    return ds.batch(batching.batch_size, drop_remainder=batching.drop_remainder)


def _image_batches(ds: tf.data.Dataset, buffer_size: int, num_levels: int, level_divisor: int,
                   batching: _Batching) -> tf.data.Dataset:
    """Batches (uint8 levels, int32 label) pairs and dequantises each batch."""
    ds = _shuffle_repeat_batch(ds, buffer_size, batching)
    # One seed per batch, a new stream every epoch, reproducible given `seed`.
    noise_seeds = tf.data.Dataset.random(seed=batching.seed + 1, rerandomize_each_iteration=True)

    def dequantise_batch(batch: tuple[tf.Tensor, tf.Tensor], noise_seed: tf.Tensor) -> Any:
        levels, labels = batch
        if level_divisor > 1:
            levels = levels // tf.constant(level_divisor, levels.dtype)
        x = _dequantise(levels, noise_seed, num_levels)
        return (x, labels) if batching.with_labels else x

    ds = tf.data.Dataset.zip((ds, noise_seeds)).map(dequantise_batch,
                                                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _dequantise(levels: tf.Tensor, noise_seed: tf.Tensor, num_levels: int) -> tf.Tensor:
    seed = tf.stack([noise_seed, tf.zeros_like(noise_seed)])
    noise = tf.random.stateless_uniform(tf.shape(levels), seed=seed, dtype=tf.float32)
    x = (tf.cast(levels, tf.float32) + noise) / float(num_levels)
    return tf.minimum(x, _BELOW_ONE)


def _continuous_batches(points: np.ndarray, labels: np.ndarray | None,
                        batching: _Batching) -> tf.data.Dataset:
    if batching.with_labels:
        ds = tf.data.Dataset.from_tensor_slices((points, labels.astype(np.int32)))
    else:
        ds = tf.data.Dataset.from_tensor_slices(points)
    ds = _shuffle_repeat_batch(ds, len(points), batching)
    return ds.prefetch(tf.data.AUTOTUNE)


# --------------------------------------------------------------------- digits


@functools.cache
def _digits_arrays() -> dict[str, np.ndarray]:
    with np.load(_DIGITS_PATH) as stored:
        return {key: stored[key] for key in stored.files}


def _digits_info() -> DatasetInfo:
    return DatasetInfo(name="digits", kind="image", event_shape=(8, 8, 1),
                       num_levels=_DIGITS_LEVELS, num_classes=10)


def _digits_split(where: str, split: str,
                  validation_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    arrays = _digits_arrays()
    if split == "test":
        return arrays["test_images"], arrays["test_labels"]
    # The stored training rows are already in a fixed random order, so the
    # last rows are a random, fixed validation subset.
    images, labels = arrays["train_images"], arrays["train_labels"]
    num_train = len(labels) - int(round(validation_fraction * len(labels)))
    if split == "train":
        return images[:num_train], labels[:num_train]
    if num_train == len(labels):
        raise ValueError(f"{where}: the validation split of 'digits' is empty with "
                         f"validation_fraction={validation_fraction}; expected a fraction > 0.")
    return images[num_train:], labels[num_train:]


# ---------------------------------------------------------------- toy densities


@dataclasses.dataclass(frozen=True)
class _Toy:
    sample: Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]
    num_classes: int
    seed: int
    true_entropy: Callable[[], float] | None = None


def _sample_two_moons(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved half circles of radius 2, isotropic Gaussian noise of std 0.2.

    Upper moon: centre (-1, -0.5), angles [0, pi]; lower moon: centre (1, 0.5),
    angles [pi, 2 pi]; equal weights (label = moon).
    """
    labels = rng.integers(0, 2, size=n)
    angle = rng.uniform(0.0, math.pi, size=n) + math.pi * labels
    centre = np.where(labels[:, None] == 0, [-1.0, -0.5], [1.0, 0.5])
    arc = 2.0 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return centre + arc + 0.2 * rng.standard_normal((n, 2)), labels


def _sample_circles(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two concentric circles of radius 1.5 and 3 about the origin, equal weights.

    Uniform angle, isotropic Gaussian noise of std 0.15; label 0 = inner circle.
    """
    labels = rng.integers(0, 2, size=n)
    radius = np.where(labels == 0, 1.5, 3.0)
    angle = rng.uniform(0.0, 2.0 * math.pi, size=n)
    ring = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return ring + 0.15 * rng.standard_normal((n, 2)), labels


_EIGHT_GAUSSIANS_RADIUS = 2.0 * math.sqrt(2.0)
_EIGHT_GAUSSIANS_STD = math.sqrt(2.0) / 4.0


def _sample_eight_gaussians(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Equal mixture of 8 isotropic Gaussians with std sqrt(2)/4 ~ 0.354.

    Means on the circle of radius 2 sqrt(2) ~ 2.83 at angles k pi / 4,
    k = 0..7 (label = k). Neighbouring means are 6.1 std apart.
    """
    labels = rng.integers(0, 8, size=n)
    angle = labels * (math.pi / 4.0)
    centre = _EIGHT_GAUSSIANS_RADIUS * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return centre + _EIGHT_GAUSSIANS_STD * rng.standard_normal((n, 2)), labels


def _sample_checkerboard(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniform on the 8 dark squares of a 4x4 board of side-2 squares over [-4, 4]^2.

    Square (i, j), i, j in 0..3, covers [-4 + 2i, -2 + 2i] x [-4 + 2j, -2 + 2j]
    and is dark when i + j is even. Support area 32, entropy log 32.
    Label = index of the square, 0..7.
    """
    labels = rng.integers(0, 8, size=n)
    column = labels % 4
    row = 2 * (labels // 4) + column % 2  # the dark square of that column
    corner = np.stack([-4.0 + 2.0 * column, -4.0 + 2.0 * row], axis=1)
    return corner + rng.uniform(0.0, 2.0, size=(n, 2)), labels


def _sample_pinwheel(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Five curved arms, equal weights (label = arm).

    Per point: radial r ~ N(1, 0.3^2), tangential t ~ N(0, 0.1^2); the point
    (r, t) is rotated by 2 pi k / 5 + 0.25 exp(r) and scaled by 2.
    """
    labels = rng.integers(0, 5, size=n)
    radial = 1.0 + 0.3 * rng.standard_normal(n)
    tangential = 0.1 * rng.standard_normal(n)
    angle = 2.0 * math.pi * labels / 5.0 + 0.25 * np.exp(radial)
    cos, sin = np.cos(angle), np.sin(angle)
    points = np.stack([cos * radial - sin * tangential, sin * radial + cos * tangential], axis=1)
    return 2.0 * points, labels


def _sample_spirals(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved Archimedean spirals, point-symmetric about the origin.

    Arm 0: (t / 3) (-cos t, sin t) with t = 3 pi sqrt(u), u ~ U[0, 1) (uniform
    in area, up to radius pi); arm 1 is its negative (label = arm). Isotropic
    Gaussian noise of std 0.1.
    """
    labels = rng.integers(0, 2, size=n)
    turn = 3.0 * math.pi * np.sqrt(rng.uniform(size=n))
    arm = (turn / 3.0)[:, None] * np.stack([-np.cos(turn), np.sin(turn)], axis=1)
    sign = np.where(labels == 0, 1.0, -1.0)[:, None]
    return sign * arm + 0.1 * rng.standard_normal((n, 2)), labels


@functools.cache
def _eight_gaussians_entropy() -> float:
    return _circular_mixture_entropy(8, _EIGHT_GAUSSIANS_RADIUS, _EIGHT_GAUSSIANS_STD)


def _circular_mixture_entropy(num_components: int, radius: float, std: float) -> float:
    """Differential entropy (nats) of an equal mixture of isotropic Gaussians on a circle.

    Deterministic quadrature, not Monte Carlo: the density is symmetric under
    the dihedral group of order 2K, so -p log p is integrated over the wedge
    0 <= angle <= pi/K in polar coordinates (composite 16-point Gauss-Legendre
    in r on panels of std/2 out to radius + 14 std, 32-point in angle) and
    multiplied by 2K. For the eight_gaussians parameters the result agrees to
    1e-11 with grids 4x coarser and 2x finer per axis. It is 0.0063 nats
    below log 8 + entropy of one component: the components overlap slightly.
    """
    r_max = radius + 14.0 * std
    num_panels = int(math.ceil(r_max / (0.5 * std)))
    nodes, weights = np.polynomial.legendre.leggauss(16)
    edges = np.linspace(0.0, r_max, num_panels + 1)
    half_width, middle = 0.5 * np.diff(edges)[:, None], 0.5 * (edges[1:] + edges[:-1])[:, None]
    r, r_weights = (middle + half_width * nodes).ravel(), (half_width * weights).ravel()
    wedge = math.pi / num_components
    angle_nodes, angle_weights = np.polynomial.legendre.leggauss(32)
    theta, theta_weights = 0.5 * wedge * (angle_nodes + 1.0), 0.5 * wedge * angle_weights

    rr, tt = np.meshgrid(r, theta, indexing="ij")
    centre_angles = 2.0 * math.pi * np.arange(num_components) / num_components
    sq_dist = ((rr * np.cos(tt))[..., None] - radius * np.cos(centre_angles)) ** 2 + (
        (rr * np.sin(tt))[..., None] - radius * np.sin(centre_angles)) ** 2
    log_components = -sq_dist / (2.0 * std**2) - math.log(2.0 * math.pi * std**2 * num_components)
    peak = log_components.max(axis=-1)
    log_p = peak + np.log(np.exp(log_components - peak[..., None]).sum(axis=-1))
    integrand = -np.exp(log_p) * log_p * rr  # r dr dtheta is the area element
    return float(2 * num_components * np.einsum("i,j,ij->", r_weights, theta_weights, integrand))


_TOYS: dict[str, _Toy] = {
    "two_moons": _Toy(_sample_two_moons, num_classes=2, seed=101),
    "circles": _Toy(_sample_circles, num_classes=2, seed=102),
    "eight_gaussians": _Toy(_sample_eight_gaussians, num_classes=8, seed=103,
                            true_entropy=_eight_gaussians_entropy),
    "checkerboard": _Toy(_sample_checkerboard, num_classes=8, seed=104,
                         true_entropy=lambda: math.log(32.0)),
    "pinwheel": _Toy(_sample_pinwheel, num_classes=5, seed=105),
    "spirals": _Toy(_sample_spirals, num_classes=2, seed=106),
}


def _toy_info(name: str) -> DatasetInfo:
    toy = _TOYS[name]
    entropy = toy.true_entropy() if toy.true_entropy is not None else None
    return DatasetInfo(name=name, kind="toy2d", event_shape=(2,), num_levels=None,
                       num_classes=toy.num_classes, true_entropy=entropy)


def _toy_split(name: str, split: str, num_examples: int | None) -> tuple[np.ndarray, np.ndarray]:
    toy = _TOYS[name]
    # Distinct seed sequences per split: the splits are independent draws.
    rng = np.random.default_rng([toy.seed, SPLITS.index(split)])
    return toy.sample(rng, num_examples or _TOY_SPLIT_SIZES[split])


# -------------------------------------------------------------------- tabular


def _prepare_tabular(where: str, path: str,
                     validation_fraction: float) -> tuple[DatasetInfo, dict[str, np.ndarray]]:
    table = _read_table(where, path)
    splits = _split_rows(table, validation_fraction)
    mean = splits["train"].mean(axis=0)
    std = splits["train"].std(axis=0)
    # A constant training column would divide by zero; leave it unscaled.
    std = np.where(std > 1e-12 * np.maximum(1.0, np.abs(mean)), std, 1.0)
    mean.setflags(write=False)
    std.setflags(write=False)
    dataset_info = DatasetInfo(
        name=path, kind="tabular", event_shape=(table.shape[1],), num_levels=None,
        num_classes=None, mean=mean, std=std,
        standardization_log_det=float(-np.sum(np.log(std))),
    )
    return dataset_info, splits


def _split_rows(table: np.ndarray, validation_fraction: float) -> dict[str, np.ndarray]:
    num_rows = len(table)
    order = np.random.default_rng(_TABULAR_SPLIT_SEED).permutation(num_rows)
    num_test = max(1, int(round(_TABULAR_TEST_FRACTION * num_rows)))
    num_validation = int(round(validation_fraction * (num_rows - num_test)))
    test = np.sort(order[:num_test])
    validation = np.sort(order[num_test:num_test + num_validation])
    train = np.sort(order[num_test + num_validation:])
    return {"train": table[train], "validation": table[validation], "test": table[test]}


def _read_table(where: str, path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise ValueError(f"{where}: data file {path!r} does not exist "
                         f"(relative paths start at {os.getcwd()!r}).")
    if path.lower().endswith(".npy"):
        table = _read_npy(where, path)
    else:
        table = _read_csv(where, path)
    if table.ndim != 2:
        hint = " (reshape a single feature to [N, 1])" if table.ndim == 1 else ""
        raise ValueError(f"{where}: expected a 2-D array [N, D] in {path!r}, got shape "
                         f"{table.shape}{hint}.")
    if table.shape[0] < _MIN_TABULAR_ROWS or table.shape[1] < 1:
        raise ValueError(f"{where}: expected at least {_MIN_TABULAR_ROWS} rows and 1 column in "
                         f"{path!r}, got shape {table.shape}.")
    bad = ~np.isfinite(table)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise ValueError(f"{where}: expected finite numbers in {path!r}, got {int(bad.sum())} "
                         f"NaN/Inf values (first at data row {row}, column {column}, counting from 0).")
    return table


def _read_npy(where: str, path: str) -> np.ndarray:
    try:
        table = np.load(path, allow_pickle=False)
    except ValueError as error:  # object arrays need pickle: not numbers
        raise ValueError(f"{where}: expected a numeric array in {path!r}, got a file NumPy "
                         f"cannot read without pickle ({error}).") from None
    if not isinstance(table, np.ndarray) or table.dtype.kind not in "biuf":
        kind = getattr(table, "dtype", type(table))
        raise ValueError(f"{where}: expected a numeric array in {path!r}, got dtype {kind}.")
    return table.astype(np.float64)


def _read_csv(where: str, path: str) -> np.ndarray:
    with open(path, encoding="utf-8-sig") as handle:
        for num_blank, first_line in enumerate(handle):
            if first_line.strip():
                break
        else:
            num_blank, first_line = 0, ""
    has_header = not all(_is_number(field) for field in first_line.split(","))
    # loadtxt's skiprows counts blank lines as well.
    skip = num_blank + int(has_header)
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2,
                           dtype=np.float64, encoding="utf-8-sig")
    except ValueError as error:
        raise ValueError(f"{where}: expected numeric columns in {path!r} (one header row "
                         f"allowed), got: {error}") from None
    return table


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _as_finite_matrix(array: Any, arg: str) -> np.ndarray:
    matrix = np.asarray(array, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] < 1:
        raise ValueError(f"fit_gaussian_nll: expected {arg} of shape [N, D], got shape "
                         f"{matrix.shape}.")
    if not np.all(np.isfinite(matrix)):
        raise ValueError(f"fit_gaussian_nll: expected finite values in {arg}, got NaN/Inf.")
    return matrix


# ----------------------------------------------------------------------- TFDS


def _tfds_module(where: str) -> Any:
    try:
        import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ValueError(f"{where}: loading TFDS data sets needs tensorflow-datasets; "
                         "`pip install tensorflow-datasets`.") from None
    return tfds


def _tfds_builder(where: str, name: str, data_dir: str | None) -> Any:
    tfds = _tfds_module(where)
    try:
        parsed, _ = tfds.core.naming.parse_builder_name_kwargs(name)
    except (ValueError, TypeError):
        raise ValueError(_unknown_name_message(where, name)) from None
    if parsed.namespace:
        # Community and Hugging Face namespaces are fetched over the network.
        raise ValueError(f"{where}: expected a local TFDS data set, got the namespaced name "
                         f"{name!r}, which TFDS would fetch from the internet.")
    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(_unknown_name_message(where, name)) from None


def _tfds_image_key(where: str, builder: Any) -> str:
    tfds = _tfds_module(where)
    features = builder.info.features
    image_keys = [key for key, feature in features.items()
                  if isinstance(feature, tfds.features.Image)]
    if not image_keys:
        raise ValueError(f"{where}: expected a TFDS data set with an image feature, got "
                         f"{builder.name!r} with features {list(features.keys())}.")
    return "image" if "image" in image_keys else image_keys[0]


def _tfds_image_size(builder: Any, image_size: int | None) -> int | None:
    """The side to crop and resize to, or None to keep the native shape."""
    if image_size is None and builder.name == "celeb_a":
        return _CELEB_A_DEFAULT_SIZE
    return image_size


def _tfds_label_key(builder: Any) -> str | None:
    features = builder.info.features
    label = features["label"] if "label" in features.keys() else None
    return "label" if label is not None and hasattr(label, "num_classes") else None


def _tfds_info(where: str, builder: Any, name: str, image_size: int | None,
               num_bits: int | None) -> DatasetInfo:
    image = builder.info.features[_tfds_image_key(where, builder)]
    if np.dtype(image.np_dtype) != np.uint8:
        raise ValueError(f"{where}: expected 8-bit images, got dtype {image.np_dtype} in {name!r}.")
    height, width, channels = image.shape
    image_size = _tfds_image_size(builder, image_size)
    if image_size is not None:
        height = width = image_size
    if height is None or width is None or channels is None:
        raise ValueError(f"{where}: {name!r} has images of varying shape {image.shape}; expected "
                         "image_size=... to crop and resize them to a square.")
    label_key = _tfds_label_key(builder)
    num_classes = builder.info.features[label_key].num_classes if label_key else None
    return DatasetInfo(name=name, kind="image", event_shape=(height, width, channels),
                       num_levels=2 ** (num_bits or 8), num_classes=num_classes)


def _load_tfds(name: str, split: str, data_dir: str | None, image_size: int | None,
               num_bits: int | None, batching: _Batching) -> tf.data.Dataset:
    builder = _tfds_builder("load", name, data_dir)
    _tfds_info("load", builder, name, image_size, num_bits)  # validates shape and dtype
    image_key, label_key = _tfds_image_key("load", builder), _tfds_label_key(builder)
    if batching.with_labels and label_key is None:
        raise ValueError(f"load: {name!r} has no 'label' class feature; got with_labels=True.")
    examples = _tfds_examples(builder, name, split, data_dir, batching)
    size = _tfds_image_size(builder, image_size)
    native_height_width = tuple(builder.info.features[image_key].shape[:2])

    def to_levels(example: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        image = example[image_key]
        if size is not None and native_height_width != (size, size):
            image = _centre_crop_resize(image, size)
        label = tf.cast(example[label_key], tf.int32) if label_key else tf.constant(-1, tf.int32)
        return image, label

    examples = examples.map(to_levels, num_parallel_calls=tf.data.AUTOTUNE)
    num_bits = num_bits or 8
    return _image_batches(examples, _TFDS_SHUFFLE_BUFFER, 2**num_bits, 2 ** (8 - num_bits),
                          batching)


def _tfds_examples(builder: Any, name: str, split: str, data_dir: str | None,
                   batching: _Batching) -> tf.data.Dataset:
    tfds = _tfds_module("load")
    # Never download_and_prepare: a missing data set is an error, not a fetch.
    try:
        return builder.as_dataset(
            split=split, shuffle_files=batching.shuffle,
            read_config=tfds.ReadConfig(shuffle_seed=batching.seed))
    except (AssertionError, FileNotFoundError, tf.errors.NotFoundError):
        looked_in = data_dir if data_dir is not None else builder.data_dir_root
        raise ValueError(
            f"load: TFDS data set {name!r} is not prepared under data_dir={looked_in!r} "
            f"(looked for {builder.data_dir!r}); tfflow never downloads. On a machine with "
            f"internet run `tfds build {name} --data_dir={looked_in}`, copy that folder here "
            f"and pass data_dir={looked_in!r} (--data_dir to the bin/ scripts)."
        ) from None
    except ValueError as error:  # TFDS rejects unknown split names this way
        raise ValueError(f"load: cannot read split {split!r} of {name!r}: {error} Use a TFDS "
                         "split string, e.g. 'train', 'test', 'train[:90%]', 'train[90%:]'."
                         ) from None


def _centre_crop_resize(image: tf.Tensor, size: int) -> tf.Tensor:
    shape = tf.shape(image)
    side = tf.minimum(shape[0], shape[1])
    image = tf.image.crop_to_bounding_box(image, (shape[0] - side) // 2,
                                          (shape[1] - side) // 2, side, side)
    resized = tf.image.resize(image, [size, size], method="bilinear", antialias=True)
    # Back to integer levels so dequantisation sees the same 256 levels.
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)
