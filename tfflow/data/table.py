"""The user's own table: a `.npy` or `.csv` file of numbers [N, D], read once.

The rows are split by a fixed seed (never the shuffling seed): 10% test, then
`validation_fraction` of the rest as validation, the remainder train. Rows are
standardised with the training split's mean and std; `info()` carries those
statistics and the log-det that puts a density back in the file's own units.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from tfflow.data.core import Batching, DatasetInfo, Source, check_split
from tfflow.data.pipelines import continuous_batches

__all__ = ["MIN_ROWS", "TableSource"]

MIN_ROWS = 10
_TEST_FRACTION = 0.1
# The split of a user's file must not move when the shuffling seed changes.
_SPLIT_SEED = 0


class TableSource(Source):
    """A `.npy`/`.csv` table, parsed once when the source is made.

    The file is read, checked, split and its training statistics computed in
    the constructor, so a bad file is reported at once and every later
    `info`, `dataset` and `array` call reuses the parsed arrays.

    Args:
      path: The file, ending in .npy or .csv (a header row is allowed in CSV).
      where: The public function resolving it (starts error messages).
      validation_fraction: Share of the non-test rows held out as
        "validation", in [0, 1); it changes the training statistics.
    """

    def __init__(self, path: str, *, where: str, validation_fraction: float = 0.1) -> None:
        super().__init__(path, where=where)
        self.validation_fraction = validation_fraction
        table = _read_table(where, path)
        self._splits = _split_rows(table, validation_fraction)
        for rows in self._splits.values():
            rows.setflags(write=False)
        mean = self._splits["train"].mean(axis=0)
        std = self._splits["train"].std(axis=0)
        # A constant training column would divide by zero; leave it unscaled.
        std = np.where(std > 1e-12 * np.maximum(1.0, np.abs(mean)), std, 1.0)
        mean.setflags(write=False)
        std.setflags(write=False)
        self._info = DatasetInfo(
            name=path, kind="tabular", event_shape=(table.shape[1],), num_levels=None,
            num_classes=None, mean=mean, std=std,
            standardization_log_det=float(-np.sum(np.log(std))),
        )

    def info(self) -> DatasetInfo:
        return self._info

    def read(self, split: str, batching: Batching) -> tf.data.Dataset:
        """Standardised float32 rows, `(x - mean) / std` with the training statistics."""
        if batching.with_labels:
            raise ValueError(f"{self._where}: tabular file {self.name!r} has no labels; got "
                             "with_labels=True.")
        check_split(self._where, self.name, split)
        rows = self._splits[split]
        if len(rows) == 0:
            raise ValueError(f"{self._where}: split {split!r} of {self.name!r} is empty "
                             f"(validation_fraction={self.validation_fraction}).")
        standardised = (rows - self._info.mean) / self._info.std
        return continuous_batches(standardised.astype(np.float32), None, batching)

    def array(self, split: str) -> np.ndarray:
        """The split's rows in the file's own units (not standardised), float64.

        A fresh copy: the parsed table stays as it was read whatever the caller does.
        """
        check_split(self._where, self.name, split)
        return self._splits[split].copy()


def _split_rows(table: np.ndarray, validation_fraction: float) -> dict[str, np.ndarray]:
    num_rows = len(table)
    order = np.random.default_rng(_SPLIT_SEED).permutation(num_rows)
    num_test = max(1, int(round(_TEST_FRACTION * num_rows)))
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
    if table.shape[0] < MIN_ROWS or table.shape[1] < 1:
        raise ValueError(f"{where}: expected at least {MIN_ROWS} rows and 1 column in "
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
