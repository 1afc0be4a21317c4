"""The user's own table: a `.npy` or `.csv` file of numbers [N, D], read once.

With `context_columns` the table holds pairs: those columns are the context c
and the others the modelled x of a conditional density p(x | c); batches are
`(x, c)` pairs. Columns are named by the CSV header's names or by 0-based
indices (a `.npy` file, or a CSV without a header, has indices only).

`check_columns` holds the rules for columns a float32 flow can model (used by
`StandardizeLayer`'s initialisation and, with the columns' names, by the
command-line training before it starts).

The rows are split by a fixed seed (never the shuffling seed): 10% test, then
`validation_fraction` of the rest as validation, the remainder train. Rows stay
in the file's own units: the vector models hold the standardisation inside
(`tfflow.layers.StandardizeLayer`, set from the training rows by
`FlowModel.initialize`), so a saved model scores and samples raw rows.

Memory: the table is held once, as one array (float32 when every value is a
float32 exactly, as in a float32 `.npy` file; float64 otherwise). A split is an
array of row indices into it, and batches are gathered from it per batch, so
making the train, validation and test datasets copies no rows. A C-order `.npy`
file is read in chunks, so its peak is the table plus a chunk (a Fortran-order
one is read whole first); a CSV file is parsed to float64 first (NumPy's
parser), so it peaks at the float64 table plus the float32 one when it narrows.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tfflow.data.core import Batching, DatasetInfo, Source, check_split
from tfflow.data.pipelines import gathered_batches

__all__ = ["LARGEST_VALUE", "MIN_ROWS", "MIN_STEPS_PER_STD", "SMALLEST_STD", "TableSource",
           "check_columns", "check_independent_columns", "read_rows", "resolve_columns"]

MIN_ROWS = 10
_TEST_FRACTION = 0.1
# The split of a user's file must not move when the shuffling seed changes.
_SPLIT_SEED = 0
# Values read, checked and converted at a time (16-32 MB): the peak while reading
# a file is the table plus one chunk.
_CHUNK_VALUES = 1 << 22


class TableSource(Source):
    """A `.npy`/`.csv` table, parsed once when the source is made.

    The file is read, checked and split in the constructor, so a bad file is
    reported at once and every later `info`, `dataset` and `array` call reuses
    the one parsed table: the splits are index arrays into it.

    Args:
      path: The file, ending in .npy or .csv (a header row is allowed in CSV).
      where: The public function resolving it (starts error messages).
      validation_fraction: Share of the non-test rows held out as
        "validation", in [0, 1).
      context_columns: Columns that are the context c of a conditional
        density p(x | c), the other columns being x (see `resolve_columns`);
        None: every column is x.

    Attributes:
      columns: Every column's name: the CSV header's, else "column <i>".
      x_columns, context_columns: The names of the modelled columns and of
        the context columns (empty for an unconditional table), in file order
        for x and in the order given for the context.
    """

    def __init__(self, path: str, *, where: str, validation_fraction: float = 0.1,
                 context_columns: Sequence[str | int] | str | None = None) -> None:
        super().__init__(path, where=where)
        self.validation_fraction = validation_fraction
        self._table = _read_table(where, path)
        self._table.setflags(write=False)
        self._rows = _split_rows(len(self._table), validation_fraction)
        for rows in self._rows.values():
            rows.setflags(write=False)
        header = None if path.lower().endswith(".npy") else _header_names(path)
        num_columns = self._table.shape[1]
        if header is not None and len(header) != num_columns:
            header = None  # loadtxt checked the rows; a header of another width names nothing
        self.columns = tuple(header or (f"column {i}" for i in range(num_columns)))
        # How error messages name a column.
        self._shown = tuple(f"column {name!r}" for name in header) if header else self.columns
        self._context_index = ([] if context_columns is None else
                               resolve_columns(where, context_columns, header, num_columns))
        self._x_index = [i for i in range(num_columns) if i not in self._context_index]
        self.x_columns = tuple(self.columns[i] for i in self._x_index)
        self.context_columns = tuple(self.columns[i] for i in self._context_index)
        self._info = DatasetInfo(
            name=path, kind="tabular", event_shape=(len(self._x_index),), num_levels=None,
            num_classes=None,
            context_shape=(len(self._context_index),) if self._context_index else None)

    def info(self) -> DatasetInfo:
        return self._info

    def read(self, split: str, batching: Batching) -> tf.data.Dataset:
        """float32 rows (or `(x, c)` pairs) in the file's own units, gathered per batch."""
        if batching.with_labels:
            raise ValueError(f"{self._where}: tabular file {self.name!r} has no labels; got "
                             "with_labels=True.")
        check_split(self._where, self.name, split)
        rows = self._rows[split]
        if len(rows) == 0:
            raise ValueError(f"{self._where}: split {split!r} of {self.name!r} is empty "
                             f"(validation_fraction={self.validation_fraction}).")
        ds = gathered_batches(self._table, rows, batching)
        if not self._context_index:
            return ds
        x_index = tf.constant(self._x_index, tf.int32)
        context_index = tf.constant(self._context_index, tf.int32)
        return ds.map(lambda batch: (tf.gather(batch, x_index, axis=1),
                                     tf.gather(batch, context_index, axis=1)),
                      num_parallel_calls=tf.data.AUTOTUNE)

    def array(self, split: str) -> np.ndarray:
        """The split's rows (x columns only, for a conditional table) in the file's units, float64.

        A fresh copy: the parsed table stays as it was read whatever the caller does.
        """
        check_split(self._where, self.name, split)
        # Fancy indexing copies; a float32 table is widened exactly.
        rows = self._table[self._rows[split]]
        if self._context_index:
            rows = rows[:, self._x_index]
        return rows.astype(np.float64, copy=False)

    def context_array(self, split: str) -> np.ndarray | None:
        """The split's context columns [N, C] in the file's units, float64; None if unconditional."""
        check_split(self._where, self.name, split)
        if not self._context_index:
            return None
        return self._table[self._rows[split]][:, self._context_index].astype(np.float64)

    def check_columns(self) -> None:
        """Refuses training columns a float32 flow cannot model, before any training.

        On the training split: every x and context column passes
        `check_columns` (finite, within float32's safe range, not constant,
        resolved by float32), and no x column is a linear combination of the
        context and the x columns before it (`check_independent_columns`).

        Raises:
          ValueError: naming the column, what was expected and what it holds.
        """
        train = self._table[self._rows["train"]]
        owner = f"{self._where}: {self.name!r}, training rows,"
        check_columns(owner, train, self._shown)
        check_independent_columns(owner, train[:, self._x_index],
                                  train[:, self._context_index] if self._context_index else None,
                                  [self._shown[i] for i in self._x_index],
                                  [self._shown[i] for i in self._context_index])


def resolve_columns(where: str, spec: Sequence[str | int] | str, header: Sequence[str] | None,
                    num_columns: int) -> list[int]:
    """0-based indices of the columns `spec` names, in `spec`'s order.

    An entry is a column's name in the CSV header, or else a 0-based index
    (an int or a string of digits): a header name wins over an index, so a
    column named "2" is that column, not the third. `spec` may be one
    comma-separated string.

    Raises:
      ValueError: for an empty spec, an unknown name or index, a column named
        twice, or a spec naming every column (nothing would be left to model).
    """
    entries = [part.strip() for part in spec.split(",")] if isinstance(spec, str) else list(spec)
    if not entries or any(entry == "" for entry in entries):
        raise ValueError(f"{where}: expected context_columns as one or more column names or "
                         f"0-based indices, got {spec!r}.")
    names = list(header or [])
    known = (f"the header's columns {names} or indices 0..{num_columns - 1}" if names else
             f"0-based indices 0..{num_columns - 1} (the file has no header row to name them)")
    index: list[int] = []
    for entry in entries:
        text = str(entry).strip()
        if text in names:
            column = names.index(text)
        elif (isinstance(entry, (int, np.integer)) and not isinstance(entry, bool)) or \
                text.isdigit():
            column = int(text)
            if not 0 <= column < num_columns:
                raise ValueError(f"{where}: context column index {column} is out of range; "
                                 f"expected {known}.")
        else:
            raise ValueError(f"{where}: unknown context column {text!r}; expected {known}.")
        if column in index:
            raise ValueError(f"{where}: context column {text!r} is named twice in "
                             f"context_columns ({spec!r}); expected each column once.")
        index.append(column)
    if len(index) == num_columns:
        raise ValueError(f"{where}: context_columns names all {num_columns} columns; expected "
                         "at least one column left to model as x.")
    return index


# Column rules -------------------------------------------------------------------------------
# The flows compute in float32 (under mixed precision too: the flow, its log-dets and the
# loss stay float32). A column is standardised inside the model, z = (x - mean) / std, with
# the moments computed in float64 from the data (`StandardizeLayer`), so every offset and
# scale float32 holds is treated exactly: a column at 1e-13 or 1e+25 scale is standardised
# as one at 1, and log p in the file's units is exact up to float32 rounding.
#
# What float32 cannot hold is refused, not rescaled. A rescale outside the model (say by a
# power of two, which is exact) would break the model's contract that it takes and returns
# rows in the file's own units: every caller of a saved model or an exported SavedModel would
# have to repeat it, and the raw values still overflow float32 on the way in. The error says
# how to rescale the column oneself and what that does to the NLL.
#
# LARGEST_VALUE: float32 ends at 3.4e38; 1e30 leaves eight orders of magnitude for samples far
# in a column's tails (a flow's tails are heavier than the data's) and for x - mean.
LARGEST_VALUE = 1e30
# SMALLEST_STD: 1 / std must be a float32 with room to spare (exp(-log_scale) overflows
# float32 below a std of about 1e-38).
SMALLEST_STD = 1e-30
# MIN_STEPS_PER_STD: float32 rounds a value of magnitude |x| to steps of spacing(|x|); a
# column whose standard deviation spans fewer than 4 such steps reaches the model as a
# handful of repeated values (a column of 1 + 1e-13 noise becomes exactly 1.0), whose
# "density" is spikes, not the column's. From 4 steps on the rounding is a quantisation as
# coarse as an integer count with standard deviation 4, which tables hold and flows model
# (a column of std 1e-3 at 1e3, 16 steps, is modelled as its Gaussian fit to 2e-3 nats:
# tests/test_vector_flows.py).
MIN_STEPS_PER_STD = 4
# A column whose part not explained (linearly) by the columns before it is below 1e-5 of its
# standard deviation: the rows lie (to float32's eye) on a hyperplane, where no density in
# the full dimension exists; the full-covariance Gaussian fit is singular there too.
_DEPENDENT_RESIDUAL = 1e-5


def check_columns(owner: str, values: Any, names: Sequence[str] | None = None, *,
                  constant_ok: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each column of `values` [N, D], in float64, checked.

    The rules for a column that a float32 flow standardises and models
    (see the comments above `LARGEST_VALUE` for why each bound):

    * every value finite, |x| <= `LARGEST_VALUE`;
    * not constant: a point mass has no density, drop the column;
    * std >= `SMALLEST_STD`;
    * std >= `MIN_STEPS_PER_STD` float32 steps at the column's largest |x|.

    Args:
      owner: Starts every error message (who refuses).
      values: [N, D] numbers (any float dtype; moments are taken in float64).
      names: The columns' names for the messages; default "column <i>".
      constant_ok: For a context's columns (a model's context standardisation):
        a constant or float32-unresolved column is centred and left unscaled
        (its std returned as 1) instead of refused. Conditioning on it is
        harmless (a one-hot class absent from the initialisation batch, a bias
        column of ones), and dividing by its float32 noise would blow it up.
        The range rules still apply.

    Returns:
      (mean, std), float64 [D] each.

    Raises:
      ValueError: naming the first column that breaks a rule, the rule and
        what the column holds.
    """
    x = np.asarray(values)
    x = x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)
    num_rows, num_columns = x.shape
    names = list(names) if names is not None else [f"column {i}" for i in range(num_columns)]
    means, stds = np.zeros(num_columns), np.zeros(num_columns)
    for i in range(num_columns):
        column = x[:, i].astype(np.float64)
        name = names[i]
        finite = np.isfinite(column)
        if not finite.all():
            raise ValueError(f"{owner} {name}: expected finite numbers, got "
                             f"{int((~finite).sum())} NaN/Inf values.")
        largest = float(np.max(np.abs(column))) if num_rows else 0.0
        if largest > LARGEST_VALUE:
            low, high = float(column.min()), float(column.max())
            power = int(math.floor(math.log10(largest)))
            raise ValueError(
                f"{owner} {name}: expected values within +-{LARGEST_VALUE:g} (the models "
                f"compute in float32, which ends at 3.4e+38), got values from {low:.4g} to "
                f"{high:.4g}; divide the column by 1e{power} before training (the NLL in the "
                f"original units is then the reported one + {power * math.log(10):.4g} nats "
                "per row).")
        mean = float(np.mean(column))
        std = float(np.sqrt(np.mean((column - mean) ** 2)))
        step = float(np.spacing(np.float32(largest)))
        if constant_ok and std < MIN_STEPS_PER_STD * step:
            means[i], stds[i] = mean, 1.0
            continue
        if std == 0.0:
            raise ValueError(
                f"{owner} {name}: expected a column that varies, got the constant {mean!r} in "
                f"all {num_rows} rows: a point mass has no density; drop the column.")
        if std < SMALLEST_STD:
            raise ValueError(
                f"{owner} {name}: expected a standard deviation of at least {SMALLEST_STD:g} "
                f"(the models compute in float32), got {std:.4g}; multiply the column by a "
                "power of ten before training.")
        if std < MIN_STEPS_PER_STD * step:
            raise ValueError(
                f"{owner} {name}: expected a column that float32 (in which the models compute) "
                f"resolves, at least {MIN_STEPS_PER_STD} float32 steps per standard deviation, "
                f"got a standard deviation of {std:.4g} around {mean:.10g}, where float32's "
                f"steps are {step:.4g}: the column is (nearly) constant to the model; subtract "
                "its mean (or another offset) before training, or drop it.")
        means[i], stds[i] = mean, std
    return means, stds


def check_independent_columns(owner: str, x: Any, context: Any = None,
                              x_names: Sequence[str] | None = None,
                              context_names: Sequence[str] | None = None) -> None:
    """Refuses an x column that is a linear combination of the context and the x columns before it.

    Such rows lie on a hyperplane: no density in the full dimension exists
    (a flow's NLL then runs off towards -inf) and the Gaussian baseline's
    covariance is singular. Redundant context columns are harmless (the
    context's information is the same) and pass. Checked on the correlation
    matrix of [context, x] by a Cholesky factorisation that stops at the
    first x column whose unexplained share of the variance is below
    `_DEPENDENT_RESIDUAL`**2. Call after `check_columns` (no constant column).

    Raises:
      ValueError: naming the column.
    """
    x = np.asarray(x)
    num_context = 0 if context is None else np.shape(context)[1]
    names = list(context_names or [f"context {i}" for i in range(num_context)]) + \
        list(x_names or [f"column {i}" for i in range(x.shape[1])])
    correlation = _correlation(x if context is None else
                               lambda rows: np.concatenate([context[rows], x[rows]], axis=1),
                               len(x))
    size = len(correlation)
    lower = np.zeros_like(correlation)
    for k in range(size):
        residual = correlation[k, k] - lower[k, :k] @ lower[k, :k]
        if residual <= _DEPENDENT_RESIDUAL**2:
            if k >= num_context:
                before = [name for j, name in enumerate(names[:k]) if lower[j, j] > 0.0]
                raise ValueError(
                    f"{owner} {names[k]}: expected a column that is not a linear combination "
                    f"of {', '.join(before) if before else 'the columns before it'}, got one "
                    f"(its part they do not explain is {math.sqrt(max(residual, 0.0)):.2g} of "
                    "its standard deviation): the rows lie on a hyperplane, where they have no "
                    "density; drop the column.")
            continue  # a redundant context column: skip it (its row of the factor stays 0)
        lower[k, k] = math.sqrt(residual)
        lower[k + 1:, k] = (correlation[k + 1:, k] - lower[k + 1:, :k] @ lower[k, :k]) / \
            lower[k, k]


def _split_rows(num_rows: int, validation_fraction: float) -> dict[str, np.ndarray]:
    """Sorted row indices of each split (so a split keeps the file's row order)."""
    order = np.random.default_rng(_SPLIT_SEED).permutation(num_rows)
    num_test = max(1, int(round(_TEST_FRACTION * num_rows)))
    num_validation = int(round(validation_fraction * (num_rows - num_test)))
    return {"test": np.sort(order[:num_test]),
            "validation": np.sort(order[num_test:num_test + num_validation]),
            "train": np.sort(order[num_test + num_validation:])}


# Reading ------------------------------------------------------------------------------------
# A table is described by its shape, its dtype in the file and a function that
# yields its rows in chunks (in order), so that it can be checked and converted
# without a second full-size copy.
_Chunks = Callable[[], Iterator[np.ndarray]]


def _read_table(where: str, path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise ValueError(f"{where}: data file {path!r} does not exist "
                         f"(relative paths start at {os.getcwd()!r}).")
    if path.lower().endswith(".npy"):
        shape, dtype, chunks = _open_npy(where, path)
        parsed = None
    else:
        parsed = _read_csv(where, path)
        shape, dtype = parsed.shape, parsed.dtype
        chunks = lambda: _row_chunks(parsed)  # noqa: E731
    if len(shape) != 2:
        hint = " (reshape a single feature to [N, 1])" if len(shape) == 1 else ""
        raise ValueError(f"{where}: expected a 2-D array [N, D] in {path!r}, got shape "
                         f"{tuple(shape)}{hint}.")
    if shape[0] < MIN_ROWS or shape[1] < 1:
        raise ValueError(f"{where}: expected at least {MIN_ROWS} rows and 1 column in "
                         f"{path!r}, got shape {tuple(shape)}.")
    return _compact(where, path, shape, dtype, chunks, parsed)


def _compact(where: str, path: str, shape: tuple[int, int], dtype: np.dtype, chunks: _Chunks,
             parsed: np.ndarray | None) -> np.ndarray:
    """The table as one array: float32 if it holds every value exactly, else float64.

    float32 halves the memory of a float64 file whose values are float32s
    (saved from float32, integers below 2**24), and widening it back gives
    exactly the float64 values the file holds, so `array` is unchanged.
    Non-finite values are reported with their count and first position.
    """
    exact = _float32_holds(dtype)
    checked = exact is None
    if checked:  # a first pass decides, checking finiteness on the way
        exact = True
        for start, chunk in _numbered(chunks):
            _check_finite(where, path, chunks, chunk, start)
            # Compared in float64: the float32 value widens back to the file's value
            # (beyond float32's range it overflows to inf, which is simply not equal).
            with np.errstate(over="ignore"):
                exact = exact and np.array_equal(chunk.astype(np.float32), chunk)
    target = np.dtype(np.float32 if exact else np.float64)
    if parsed is not None and parsed.dtype == target:
        return parsed  # a CSV parsed to float64 (so checked above): no copy
    table = np.empty(shape, target)
    for start, chunk in _numbered(chunks):
        if not checked:
            _check_finite(where, path, chunks, chunk, start)
        table[start:start + len(chunk)] = chunk
    return table


def _float32_holds(dtype: np.dtype) -> bool | None:
    """Whether float32 holds every value of `dtype` exactly; None: it depends on the values."""
    if dtype.kind == "b" or (dtype.kind in "iu" and dtype.itemsize <= 2) or \
            (dtype.kind == "f" and dtype.itemsize <= 4):
        return True
    return None


def _check_finite(where: str, path: str, chunks: _Chunks, chunk: np.ndarray,
                  start: int) -> None:
    if chunk.dtype.kind != "f":
        return
    bad = ~np.isfinite(chunk)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        # The error path reads the file once more to count them all.
        count = sum(int((~np.isfinite(c)).sum()) for c in chunks())
        raise ValueError(f"{where}: expected finite numbers in {path!r}, got {count} NaN/Inf "
                         f"values (first at data row {start + row}, column {column}, counting "
                         "from 0).")


def _numbered(chunks: _Chunks) -> Iterator[tuple[int, np.ndarray]]:
    start = 0
    for chunk in chunks():
        yield start, chunk
        start += len(chunk)


def _row_chunks(table: np.ndarray) -> Iterator[np.ndarray]:
    step = max(1, _CHUNK_VALUES // max(1, table.shape[1]))
    for start in range(0, len(table), step):
        yield table[start:start + step]


def _open_npy(where: str, path: str) -> tuple[tuple[int, ...], np.dtype, _Chunks]:
    """The shape and dtype of a .npy file and its rows in chunks, read with plain reads.

    Memory-mapping only parses the header here: the data is read chunk by chunk
    into the table, so the table does not depend on the file afterwards (a file
    rewritten while a model trains cannot change or crash it).
    """
    try:
        header = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as error:  # object arrays need pickle: not numbers
        raise ValueError(f"{where}: expected a numeric array in {path!r}, got a file NumPy "
                         f"cannot read without pickle ({error}).") from None
    if not isinstance(header, np.ndarray) or header.dtype.kind not in "biuf":
        kind = getattr(header, "dtype", type(header))
        raise ValueError(f"{where}: expected a numeric array in {path!r}, got dtype {kind}.")
    shape, dtype = header.shape, header.dtype
    if not isinstance(header, np.memmap) or not header.flags.c_contiguous or header.ndim != 2:
        # Fortran order (or an empty file): read it whole, as NumPy does.
        del header
        table = np.load(path, allow_pickle=False)
        return shape, dtype, lambda: _row_chunks(table)
    offset = header.offset
    del header

    def chunks() -> Iterator[np.ndarray]:
        step = max(1, _CHUNK_VALUES // max(1, shape[1]))
        with open(path, "rb") as handle:
            handle.seek(offset)
            for start in range(0, shape[0], step):
                num_rows = min(step, shape[0] - start)
                chunk = np.fromfile(handle, dtype=dtype, count=num_rows * shape[1])
                yield chunk.reshape(num_rows, shape[1])

    return shape, dtype, chunks


def _lines_before_data(path: str) -> int:
    """Blank lines and one header line (a line that is not all numbers) before the rows."""
    with open(path, encoding="utf-8-sig") as handle:
        for num_blank, first_line in enumerate(handle):
            if first_line.strip():
                break
        else:
            num_blank, first_line = 0, ""
    has_header = not all(_is_number(field) for field in first_line.split(","))
    # loadtxt's skiprows counts blank lines as well.
    return num_blank + int(has_header)


def _read_csv(where: str, path: str) -> np.ndarray:
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=_lines_before_data(path), ndmin=2,
                           dtype=np.float64, encoding="utf-8-sig")
    except ValueError as error:
        raise ValueError(f"{where}: expected numeric columns in {path!r} (one header row "
                         f"allowed), got: {error}") from None
    return table


def _header_names(path: str) -> list[str] | None:
    """The CSV header's column names (stripped of spaces and quotes), or None without a header."""
    with open(path, encoding="utf-8-sig") as handle:
        for line in handle:
            if line.strip():
                fields = [field.strip().strip('"\'').strip() for field in line.split(",")]
                return None if all(_is_number(field) for field in fields) else fields
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _correlation(columns: Any, num_rows: int) -> np.ndarray:
    """The correlation matrix (float64) of `columns` [N, K], or of `columns(rows)` for a slice.

    In chunks of rows, so that memory is the K x K matrix plus a chunk, not a
    float64 copy of the table. A column without spread gets a zero row.
    """
    take = columns if callable(columns) else lambda rows: columns[rows]
    step = max(1, _CHUNK_VALUES // max(1, take(slice(0, 1)).shape[1]))
    chunks = lambda: (np.asarray(take(slice(start, start + step)), np.float64)  # noqa: E731
                      for start in range(0, num_rows, step))
    mean = sum(chunk.sum(axis=0) for chunk in chunks()) / num_rows
    gram = sum((chunk - mean).T @ (chunk - mean) for chunk in chunks()) / num_rows
    scale = np.sqrt(np.diag(gram))
    scale[scale == 0.0] = 1.0
    return gram / np.outer(scale, scale)


def read_rows(where: str, path: str, names: Sequence[str] | None = None) -> np.ndarray:
    """The rows [R, C] of a small `.csv`/`.npy` file of numbers (e.g. contexts to sample at), float64.

    A header row is allowed in CSV; with `names` given it must list exactly
    those columns in that order (a file whose columns are in another order
    would otherwise be read silently wrong). A 1-D `.npy` array is one row.

    Raises:
      ValueError: for a missing or unreadable file, no rows, a header that
        does not match `names`, or NaN/Inf.
    """
    if not os.path.isfile(path):
        raise ValueError(f"{where}: file {path!r} does not exist (relative paths start at "
                         f"{os.getcwd()!r}).")
    if path.lower().endswith(".npy"):
        try:
            rows = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as error:
            raise ValueError(f"{where}: expected a numeric .npy array in {path!r}, got: "
                             f"{' '.join(str(error).split())[:200]}") from None
        if rows.dtype.kind not in "biuf":
            raise ValueError(f"{where}: expected a numeric array in {path!r}, got dtype "
                             f"{rows.dtype}.")
        rows = np.atleast_2d(rows).astype(np.float64)
    else:
        header = _header_names(path)
        if header is not None and names is not None and list(header) != list(names):
            raise ValueError(f"{where}: expected the header of {path!r} to name the columns "
                             f"{','.join(names)} in that order, got {','.join(header)}.")
        rows = _read_csv(where, path)
    if rows.ndim != 2 or rows.size == 0:
        raise ValueError(f"{where}: expected rows of numbers in {path!r}, got shape "
                         f"{rows.shape}.")
    if not np.all(np.isfinite(rows)):
        row = int(np.argwhere(~np.isfinite(rows))[0][0])
        raise ValueError(f"{where}: expected finite numbers in {path!r}, got NaN/Inf (first in "
                         f"data row {row}, counting from 0).")
    return rows
