"""The user's own table: a `.npy` or `.csv` file of numbers [N, D], read once.

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

import os
from collections.abc import Callable, Iterator

import numpy as np
import tensorflow as tf

from tfflow.data.core import Batching, DatasetInfo, Source, check_split
from tfflow.data.pipelines import gathered_batches

__all__ = ["MIN_ROWS", "TableSource"]

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
    """

    def __init__(self, path: str, *, where: str, validation_fraction: float = 0.1) -> None:
        super().__init__(path, where=where)
        self.validation_fraction = validation_fraction
        self._table = _read_table(where, path)
        self._table.setflags(write=False)
        self._rows = _split_rows(len(self._table), validation_fraction)
        for rows in self._rows.values():
            rows.setflags(write=False)
        self._info = DatasetInfo(name=path, kind="tabular", event_shape=(self._table.shape[1],),
                                 num_levels=None, num_classes=None)

    def info(self) -> DatasetInfo:
        return self._info

    def read(self, split: str, batching: Batching) -> tf.data.Dataset:
        """float32 rows in the file's own units, gathered per batch from the one table."""
        if batching.with_labels:
            raise ValueError(f"{self._where}: tabular file {self.name!r} has no labels; got "
                             "with_labels=True.")
        check_split(self._where, self.name, split)
        rows = self._rows[split]
        if len(rows) == 0:
            raise ValueError(f"{self._where}: split {split!r} of {self.name!r} is empty "
                             f"(validation_fraction={self.validation_fraction}).")
        return gathered_batches(self._table, rows, batching)

    def array(self, split: str) -> np.ndarray:
        """The split's rows in the file's own units, float64.

        A fresh copy: the parsed table stays as it was read whatever the caller does.
        """
        check_split(self._where, self.name, split)
        # Fancy indexing copies; a float32 table is widened exactly.
        return self._table[self._rows[split]].astype(np.float64, copy=False)


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
            # Compared in float64: the float32 value widens back to the file's value.
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


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
