"""Real tables for the vector-density benchmarks, built offline from installed packages.

    python benchmarks/tables.py                          # all tables -> /tmp/tfflow_tables
    python benchmarks/tables.py --directory=DIR --tables=randhie,star98

Each table is written to `DIR/NAME.npz` with float64 arrays `train`,
`validation` and `test` (rows x columns, in the file's own units after the
dequantisation below), plus `columns` (the kept column names) and
`dequantisation` (per column: "none", "integer" or "grid"). `load_table`
reads one back; `gaussian_nll` is the full-covariance Gaussian baseline every
model is compared with. Only NumPy is needed at import time (statsmodels is
imported when a statsmodels table is built), so the PyTorch peers' virtualenv
can import this module too.

Tables (`TABLES`):

* `digits`: tfflow's embedded 8x8 digits (`tfflow/_data/digits.npz`, the UCI
  set as shipped in scikit-learn) as 64-column vectors of grey levels 0..16,
  with tfflow's own split (`tfflow.data.load_array("digits", split)` with
  validation_fraction 0.1): 1,293 train, 144 validation, 360 test rows. The
  file is read directly, without importing TensorFlow. Constant pixels are
  dropped (3 of 64 are 0 in every image), leaving 61 columns.
* `randhie` (statsmodels, RAND Health Insurance Experiment, 20,190 x 10):
  doctor visits, log coinsurance, deductible flag, log participation
  incentive, log max. deductible expenditure, physical limitation, number of
  chronic diseases, three health-status flags.
* `star98` (statsmodels, California STAR 1998 test results by school
  district, 303 x 22): pass/fail counts, demographics, teacher and spending
  figures and their interaction columns.
* `macrodata` (statsmodels, US macroeconomic quarterly series 1959-2009,
  203 x 14), rows treated as exchangeable.

statsmodels' `fair` (8 of 9 columns take 4-7 values) and `anes96` (ordinal
survey answers) were left out: they are categorical tables, not continuous
ones. Of the other bundled sets, those with over 250 rows have at most two
numeric columns (co2, cancer, sunspots) or are categorical (modechoice); the
rest have fewer than 250 rows.

Splits: the statsmodels tables are shuffled with
`np.random.default_rng((seed, crc32(name)))` (seed 0 by default) and cut
80/10/10 into train/validation/test (validation and test get
round(0.1 * rows) each).

Dequantisation. A continuous density fitted by maximum likelihood to values
that repeat is unbounded: a flow can pile its mass onto the repeated values
and drive the NLL to minus infinity, which is a failure to model the table,
not a better model. So every column is classified on the whole table (all
splits together, so the grid is the same everywhere) and repeated values are
spread over the gap they stand for:

* "integer": every value is a whole number (counts, flags, grey levels,
  ordinal codes). x -> x + u, u ~ U[0, 1): the grid spacing is 1.
* "grid": not integer-valued, but at least 1% of the rows share their value
  with another row (a column recorded to a coarse precision, a handful of
  levels such as a log coinsurance rate, or an atom such as many exact
  zeros). With u_1 < ... < u_K the column's distinct values and
  w_k = u_{k+1} - u_k (w_K = u_K - u_{K-1}), a value u_k becomes
  u_k + w_k * u, u ~ U[0, 1): each level is spread up to the next observed
  level, so the dequantised column has a bounded piecewise-constant density
  whose mass per interval is the level's frequency.
* "none": the column is left as it is (ties on under 1% of the rows).
* constant columns are dropped.

The noise is drawn once, from the same per-table generator right after the
shuffle (seed fixed), and stored in the .npz, so every model, in every
library, sees identical numbers. The NLLs reported on these tables are
densities of the dequantised rows, in the file's units (nats per row).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
import zlib
from collections.abc import Callable

import numpy as np

__all__ = ["DEFAULT_DIRECTORY", "TABLES", "build_table", "dequantise", "gaussian_nll",
           "load_table", "write_tables"]

DEFAULT_DIRECTORY = "/tmp/tfflow_tables"
TABLES = ["digits", "randhie", "star98", "macrodata"]
SPLITS = ("train", "validation", "test")
# Share of rows that must share their value with another row before a
# non-integer column is treated as recorded on a grid.
TIED_SHARE = 0.01


def _digits_path() -> str:
    """tfflow/_data/digits.npz of the installed tfflow, located without importing it."""
    spec = importlib.util.find_spec("tfflow")
    if spec is not None and spec.submodule_search_locations:
        package = list(spec.submodule_search_locations)[0]
    else:  # The PyTorch peers' venv has no tfflow: use this checkout's copy.
        package = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "tfflow")
    path = os.path.join(package, "_data", "digits.npz")
    if not os.path.exists(path):
        raise ValueError(f"tables: expected the embedded digits at {path!r}, found no file.")
    return path


def _digits(validation_fraction: float = 0.1) -> tuple[dict[str, np.ndarray], list[str]]:
    """The digits as [N, 64] grey levels with tfflow's train/validation/test split."""
    with np.load(_digits_path()) as stored:
        train = stored["train_images"].reshape(-1, 64).astype(np.float64)
        test = stored["test_images"].reshape(-1, 64).astype(np.float64)
    # Same cut as tfflow.data's digits source: the stored training rows are
    # already shuffled, so the last ones are the validation split.
    num_train = len(train) - int(round(validation_fraction * len(train)))
    splits = {"train": train[:num_train], "validation": train[num_train:], "test": test}
    return splits, [f"pixel_{row}_{col}" for row in range(8) for col in range(8)]


def _statsmodels(name: str) -> Callable[[], tuple[np.ndarray, list[str]]]:
    def load() -> tuple[np.ndarray, list[str]]:
        import statsmodels.datasets  # Benchmark-only dependency; imported on use.

        frame = getattr(statsmodels.datasets, name).load().data.select_dtypes("number")
        frame = frame.dropna()
        return frame.to_numpy(np.float64), [str(column) for column in frame.columns]

    return load


_STATSMODELS = {name: _statsmodels(name) for name in ("randhie", "star98", "macrodata")}


def dequantise(values: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Dequantises one column (see the module docstring); returns it and its rule.

    Args:
      values: float64 [N], the column over all splits.
      rng: Draws the N uniforms (always N, whatever the rule, so one column's
        rule does not shift the noise of the next).

    Returns:
      The new column and "integer", "grid" or "none".
    """
    noise = rng.random(len(values))
    if np.all(values == np.round(values)):
        return values + noise, "integer"
    levels, index, counts = np.unique(values, return_inverse=True, return_counts=True)
    if np.mean(counts[index] > 1) < TIED_SHARE:
        return values, "none"
    widths = np.diff(levels)
    widths = np.append(widths, widths[-1])
    return values + widths[index] * noise, "grid"


def build_table(name: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Builds one table: splits, constant columns dropped, dequantised.

    Args:
      name: One of `TABLES`.
      seed: Seeds the shuffle (statsmodels tables) and the dequantisation noise.

    Returns:
      `train`, `validation`, `test` (float64 [rows, columns]), `columns` and
      `dequantisation` (str [columns]).
    """
    if name not in TABLES:
        raise ValueError(f"build_table: expected a table name in {TABLES}, got {name!r}.")
    rng = np.random.default_rng((seed, zlib.crc32(name.encode())))
    if name == "digits":
        splits, columns = _digits()
    else:
        rows, columns = _STATSMODELS[name]()
        order = rng.permutation(len(rows))
        num_held = int(round(0.1 * len(rows)))
        num_train = len(rows) - 2 * num_held
        splits = {"train": rows[order[:num_train]],
                  "validation": rows[order[num_train:num_train + num_held]],
                  "test": rows[order[num_train + num_held:]]}
    sizes = [len(splits[split]) for split in SPLITS]
    table = np.concatenate([splits[split] for split in SPLITS])
    keep = np.ptp(table, axis=0) > 0
    kept_columns, rules, new_columns = [], [], []
    for column in np.flatnonzero(keep):
        values, rule = dequantise(table[:, column], rng)
        new_columns.append(values)
        rules.append(rule)
        kept_columns.append(columns[column])
    table = np.stack(new_columns, axis=1)
    bounds = np.cumsum([0] + sizes)
    result = {split: np.ascontiguousarray(table[bounds[i]:bounds[i + 1]])
              for i, split in enumerate(SPLITS)}
    result["columns"] = np.array(kept_columns)
    result["dequantisation"] = np.array(rules)
    return result


def write_tables(directory: str = DEFAULT_DIRECTORY, names: list[str] | None = None,
                 seed: int = 0) -> dict[str, str]:
    """Builds `names` (default all of `TABLES`) into `directory`; returns name -> path."""
    os.makedirs(directory, exist_ok=True)
    paths = {}
    for name in names or TABLES:
        path = os.path.join(directory, f"{name}.npz")
        np.savez(path, **build_table(name, seed))
        paths[name] = path
    return paths


def load_table(name: str, directory: str = DEFAULT_DIRECTORY) -> dict[str, np.ndarray]:
    """Reads `directory/name.npz` written by `write_tables`.

    Returns:
      `train`, `validation`, `test` (float64 [rows, columns]), `columns`,
      `dequantisation`.
    """
    path = os.path.join(directory, f"{name}.npz")
    if not os.path.exists(path):
        raise ValueError(f"load_table: expected {path!r} (run `python benchmarks/tables.py "
                         f"--directory={directory}` first), found no file.")
    with np.load(path) as stored:
        return {key: stored[key] for key in stored.files}


def gaussian_nll(train: np.ndarray, test: np.ndarray) -> float:
    """Mean test NLL (nats per row) of the maximum-likelihood full-covariance Gaussian.

    mu = mean(train), Sigma = (train - mu)^T (train - mu) / N, and
    NLL(x) = 0.5 * (D log(2 pi) + log det Sigma + (x - mu)^T Sigma^{-1} (x - mu)),
    in float64 via the Cholesky factor L of Sigma (log det = 2 sum log diag L).
    Only if Sigma is numerically singular is a ridge eps * mean(diag Sigma) * I
    added, eps from 1e-12 up by factors of 10.

    Args:
      train: float [N, D], N > 1.
      test: float [M, D].

    Returns:
      The mean NLL over the M test rows.
    """
    train = np.asarray(train, np.float64)
    test = np.asarray(test, np.float64)
    if train.ndim != 2 or test.ndim != 2 or train.shape[1] != test.shape[1] or len(train) < 2:
        raise ValueError(f"gaussian_nll: expected train [N>1, D] and test [M, D], got "
                         f"{train.shape} and {test.shape}.")
    mean = train.mean(axis=0)
    centred = train - mean
    covariance = centred.T @ centred / len(train)
    dims = covariance.shape[0]
    scale = np.mean(np.diag(covariance))
    for eps in [0.0] + [10.0 ** k for k in range(-12, -2)]:
        try:
            factor = np.linalg.cholesky(covariance + eps * scale * np.eye(dims))
            break
        except np.linalg.LinAlgError:
            continue
    else:
        raise ValueError("gaussian_nll: the training covariance is singular even with a "
                         "ridge of 1e-3 * mean variance; expected a full-rank table.")
    whitened = np.linalg.solve(factor, (test - mean).T)
    log_det = 2.0 * np.sum(np.log(np.diag(factor)))
    return float(0.5 * (dims * np.log(2 * np.pi) + log_det) + 0.5 * np.mean(
        np.sum(whitened ** 2, axis=0)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--directory", default=DEFAULT_DIRECTORY,
                        help=f"where NAME.npz go; default {DEFAULT_DIRECTORY}")
    parser.add_argument("--tables", default=",".join(TABLES),
                        help=f"comma-separated subset of {','.join(TABLES)}")
    parser.add_argument("--seed", type=int, default=0,
                        help="shuffle and dequantisation seed (default 0)")
    args = parser.parse_args(argv)
    names = [name for name in args.tables.split(",") if name]
    start = time.perf_counter()
    paths = write_tables(args.directory, names, args.seed)
    print(f"{'table':10s} {'train':>6s} {'valid':>6s} {'test':>6s} {'cols':>4s} "
          f"{'gauss NLL':>10s}  dequantised columns")
    for name, path in paths.items():
        table = load_table(name, args.directory)
        rules = table["dequantisation"]
        grouped = ", ".join(
            f"{rule}: " + (" ".join(table["columns"][rules == rule]) if name != "digits"
                           else f"all {np.sum(rules == rule)}")
            for rule in ("integer", "grid") if np.any(rules == rule))
        print(f"{name:10s} {len(table['train']):6d} {len(table['validation']):6d} "
              f"{len(table['test']):6d} {table['train'].shape[1]:4d} "
              f"{gaussian_nll(table['train'], table['test']):10.3f}  {grouped or '-'}")
    print(f"wrote {len(paths)} tables to {args.directory} in {time.perf_counter() - start:.1f} s",
          file=sys.stderr)


if __name__ == "__main__":
    main()
