"""The contract every data source keeps: `Source`, `DatasetInfo`, the split names, the checks.

A `Source` is one data set, resolved once (by `tfflow.data.source`) from its
name and settings. It describes itself (`info()`), delivers batches
(`dataset(split, ...)`) and, where the data fits in memory, whole splits as
arrays (`array(split)`). Code that trains on it never needs the name.

Also here, the two numbers every source's users compute: `bits_per_dim` and
the Gaussian baseline `fit_gaussian_nll`.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any

import numpy as np
import tensorflow as tf

from tfflow._rules import is_count, is_int
from tfflow.data.names import SPLITS, TABLE_EXTENSIONS

__all__ = [
    "Batching",
    "DatasetInfo",
    "SPLITS",
    "Source",
    "TABLE_EXTENSIONS",
    "bits_per_dim",
    "check_positive_int",
    "check_split",
    "fit_gaussian_nll",
    "is_int",
    "make_batching",
]



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
      context_shape: Shape of one example's context c when the data are
        `(x, c)` pairs for a conditional density p(x | c) (a table with
        context columns); None otherwise.
    """

    name: str
    kind: str
    event_shape: tuple[int, ...]
    num_levels: int | None
    num_classes: int | None
    true_entropy: float | None = None
    context_shape: tuple[int, ...] | None = None

    @property
    def num_dims(self) -> int:
        """Number of scalar dimensions D of one example."""
        return math.prod(self.event_shape)


@dataclasses.dataclass(frozen=True)
class Batching:
    """How a split becomes batches (the arguments of `Source.dataset`, checked)."""

    batch_size: int
    shuffle: bool
    seed: int
    repeat: bool
    drop_remainder: bool
    with_labels: bool


class Source(abc.ABC):
    """One data set, resolved from its name and settings; made by `tfflow.data.source`.

    Subclasses (one per kind of source: `DigitsSource`, `ToySource`,
    `TableSource`, `TfdsSource`) implement `info`, `read` and, where the data
    fits in memory, `array`. `dataset` and `split_name` are the same for all.

    Attributes:
      name: The name or path the source was resolved from.
      in_memory: The whole data set is held as arrays (embedded sets, tables):
        cheap to cache in full, e.g. one draw of a validation split's noise.
    """

    in_memory: bool = True

    def __init__(self, name: str, *, where: str) -> None:
        self.name = name
        # The public function that resolved this source: error messages start with it.
        self._where = where

    @abc.abstractmethod
    def info(self) -> DatasetInfo:
        """Describes the data as `dataset` delivers it."""

    def split_name(self, split: str) -> str:
        """The name `read` takes for the standard split `split` ("train", "validation", "test").

        The identity for every source whose own splits are the standard ones.
        """
        check_split(self._where, self.name, split)
        return split

    def dataset(self, split: str, *, batch_size: int = 64, shuffle: bool | None = None,
                seed: int = 0, with_labels: bool = False, repeat: bool = False,
                drop_remainder: bool = False) -> tf.data.Dataset:
        """Batched, prefetched float32 tensors of a standard split (see `read`).

        Args:
          split: "train", "validation" or "test".
          batch_size: Examples per batch.
          shuffle: Shuffle examples (reshuffled every epoch); default: only "train".
          seed: Seeds shuffling and dequantisation noise; the data itself and the
            splits never depend on it.
          with_labels: Yield `(x, label)` with int32 labels instead of `x`.
          repeat: Repeat forever (fresh shuffle and noise each epoch).
          drop_remainder: Drop the last incomplete batch.

        Returns:
          A `tf.data.Dataset` of `x` or `(x, label)`.
        """
        split_name = self.split_name(split)
        return self.read(split_name, make_batching(
            self._where, split_name, batch_size=batch_size, shuffle=shuffle, seed=seed,
            with_labels=with_labels, repeat=repeat, drop_remainder=drop_remainder))

    @abc.abstractmethod
    def read(self, split: str, batching: Batching) -> tf.data.Dataset:
        """Batches of `split` in the source's own split names (TFDS: any split string)."""

    def array(self, split: str) -> np.ndarray:
        """A standard split as one NumPy array, untransformed (in-memory sources only)."""
        raise ValueError(
            f"{self._where}: expected an embedded data set or a .npy/.csv path, got the TFDS "
            f"data set {self.name!r}; use load() or tfds.as_numpy for it."
        )


def make_batching(where: str, split: Any, *, batch_size: Any, shuffle: bool | None, seed: Any,
                  with_labels: bool, repeat: bool, drop_remainder: bool) -> Batching:
    """Checks the batching arguments; `shuffle=None` means: shuffle "train" only."""
    check_positive_int(where, "batch_size", batch_size)
    if not is_int(seed):
        raise ValueError(f"{where}: expected seed an int, got {seed!r}.")
    if not isinstance(split, str) or not split:
        raise ValueError(f"{where}: expected split a non-empty string, got {split!r}.")
    if shuffle is None:
        shuffle = split == "train"
    return Batching(batch_size=batch_size, shuffle=bool(shuffle), seed=int(seed),
                    repeat=repeat, drop_remainder=drop_remainder, with_labels=with_labels)


def bits_per_dim(nll_nats: Any, num_dims: int, num_levels: int | None) -> Any:
    """Converts a negative log-likelihood into bits per dimension.

    For data with `B = num_levels` levels scaled to [0, 1), the density on
    [0, 1)^D relates to the discrete probability by a factor B**D, so

        bits/dim = (NLL_nats + D * log(B)) / (D * ln 2).

    With `num_levels=None` (continuous data) the offset is dropped. The one
    owner of this formula: `FlowModel.nll_to_bits_per_dim` calls it with D = 1
    on an NLL per dimension.

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
    if not is_count(num_dims):
        raise ValueError(f"bits_per_dim: expected num_dims a positive int, got {num_dims!r}.")
    if num_levels is not None and not is_count(num_levels, 2):
        raise ValueError(
            f"bits_per_dim: expected num_levels an int >= 2 or None, got {num_levels!r}."
        )
    offset = num_dims * math.log(num_levels) if num_levels is not None else 0.0
    return (nll_nats + offset) / (num_dims * math.log(2.0))


def fit_gaussian_nll(train_array: np.ndarray, test_array: np.ndarray, *,
                     train_context: np.ndarray | None = None,
                     test_context: np.ndarray | None = None) -> float:
    """Test NLL of a full-covariance Gaussian fitted to the training rows.

    The baseline a flow has to beat on tabular data: maximum-likelihood mean
    and covariance from `train_array`, average negative log-density of the
    rows of `test_array`, in nats per example and in the arrays' own units
    (tfflow's vector models score tables in those units too, and start from
    this fit: `tfflow.models.MAF`).

    With contexts, the conditional Gaussian: the linear-Gaussian regression
    `x | c ~ N(a + B c, S)`, with `a`, `B` by least squares on the training
    pairs (minimum-norm where context columns are redundant) and `S` the
    maximum-likelihood covariance of the residuals; the test rows are scored
    given their own contexts. It is what a conditional vector model starts
    from (its Gaussian start is this regression).

    Args:
      train_array: [N, D] array, N > D (+ C with contexts).
      test_array: [M, D] array.
      train_context: [N, C] contexts of the training rows, or None.
      test_context: [M, C] contexts of the test rows (with `train_context`).

    Returns:
      Mean NLL over the test rows (nats per example).

    Raises:
      ValueError: for mismatched shapes, NaN/Inf, too few rows, or a singular
        (residual) covariance.
    """
    train = _as_finite_matrix(train_array, "train_array")
    test = _as_finite_matrix(test_array, "test_array")
    if train.shape[1] != test.shape[1]:
        raise ValueError(
            "fit_gaussian_nll: expected train_array and test_array with the same number of "
            f"columns, got {train.shape[1]} and {test.shape[1]}."
        )
    if (train_context is None) != (test_context is None):
        raise ValueError("fit_gaussian_nll: expected train_context and test_context together "
                         "(or neither), got only one.")
    num_rows, num_dims = train.shape
    num_context = 0
    if train_context is not None:
        c_train = _as_finite_matrix(train_context, "train_context")
        c_test = _as_finite_matrix(test_context, "test_context")
        if c_train.shape[1] != c_test.shape[1] or len(c_train) != num_rows or \
                len(c_test) != len(test):
            raise ValueError(
                "fit_gaussian_nll: expected train_context [N, C] and test_context [M, C] with "
                f"the rows of train_array {train.shape} and test_array {test.shape}, got "
                f"{c_train.shape} and {c_test.shape}.")
        num_context = c_train.shape[1]
    if num_rows <= num_dims + num_context:
        raise ValueError(
            "fit_gaussian_nll: expected more training rows than columns to fit a covariance, "
            f"got {num_rows} rows and {num_dims} columns"
            f"{f' and {num_context} context columns' if num_context else ''}."
        )
    if num_context:
        design = np.concatenate([np.ones((num_rows, 1)), c_train], axis=1)
        coefficients, *_ = np.linalg.lstsq(design, train, rcond=None)
        residuals = train - design @ coefficients
        test_residuals = test - np.concatenate([np.ones((len(test), 1)), c_test],
                                               axis=1) @ coefficients
    else:
        residuals, test_residuals = train - train.mean(axis=0), test - train.mean(axis=0)
    covariance = np.atleast_2d(residuals.T @ residuals / num_rows)
    try:
        cholesky = np.linalg.cholesky(covariance)
    except np.linalg.LinAlgError:
        raise ValueError(
            "fit_gaussian_nll: the training covariance is singular (a constant column, or "
            "columns that are exact linear combinations of others); drop those columns."
        ) from None
    whitened = np.linalg.solve(cholesky, test_residuals.T)
    log_det = 2.0 * np.sum(np.log(np.diag(cholesky)))
    nll = 0.5 * (num_dims * math.log(2.0 * math.pi) + log_det + np.sum(whitened**2, axis=0))
    return float(np.mean(nll))


def _as_finite_matrix(array: Any, arg: str) -> np.ndarray:
    matrix = np.asarray(array, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] < 1:
        raise ValueError(f"fit_gaussian_nll: expected {arg} of shape [N, D], got shape "
                         f"{matrix.shape}.")
    if not np.all(np.isfinite(matrix)):
        raise ValueError(f"fit_gaussian_nll: expected finite values in {arg}, got NaN/Inf.")
    return matrix


# ---------------------------------------------------------------- validation


def check_positive_int(where: str, arg: str, value: Any, allow_none: bool = False) -> None:
    """Raises a ValueError naming `where` and `arg` unless `value` is an int >= 1."""
    if value is None and allow_none:
        return
    if not is_count(value):
        raise ValueError(f"{where}: expected {arg} a positive int, got {value!r}.")


def check_split(where: str, name: str, split: str) -> None:
    """Raises a ValueError unless `split` is one of `SPLITS`."""
    if split not in SPLITS:
        raise ValueError(
            f"{where}: unknown split {split!r} for {name!r}; expected one of {SPLITS}.")
