"""Tables at scale: how fitting MAF and NSF grows with a table's rows and columns (issue 11).

    python benchmarks/table_scale.py                 # 6 tables x 2 models, ~15 min on 2 busy cores
    python benchmarks/table_scale.py --rows 1e4,1e5 --columns 10 --steps 20   # smoke run

For every table (rows x columns of float32 standard-normal values, generated
once into a temporary folder and kept there for the next run; never data worth
committing) a fresh worker process (this script with `--worker`, because peak
RSS is per process) runs the user's path, `model.fit` on
`tfflow.data.source(path).dataset("train", batch_size, shuffle=True, repeat=True)`,
and times:

* source: `tfflow.data.source(path)`: read, check and split the file (s);
* epoch start: the first batch of a fresh shuffled pass, the shuffle buffer
  (one index per training row) filled; paid again at every epoch (s);
* init: `tfflow.models.MAF((D,))` / `NSF((D,))` built and `model.initialize` on
  the first `GAUSSIAN_START_EXAMPLES` (100,000) training rows: the data-fitted
  Gaussian start, which reads that many rows from the dataset (s);
* first step: the first `fit` step, tracing included (s);
* step: median wall time of the `--steps` steps after the first `--warmup` (ms);
* epoch (extrapolated): epoch start + (batches per epoch) x step: not a
  measured epoch;
* peak RSS: the worker's high-water mark (VmHWM) from before the source is made
  to the end of that model's steps (the second model's starts again from the
  RSS left after the first); "after import" is the RSS with TensorFlow, Keras,
  TFP and tfflow loaded and nothing else.

Defaults (MAF: 5 affine MADE transforms, hidden 128-128; NSF: its defaults),
batch 512, CPU. Run under `nice -n 19` on a shared machine: the times are then
upper bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MODELS = ("MAF", "NSF")
# NSF((D,)) with D = 100 is run on tables of at most 10,000 rows: its Gaussian start
# (`initialize`) runs the whole flow on min(train rows, 100,000) rows at once, which
# peaked at 5.2 GB on 7,200 rows of 100 columns (measured), ~0.6 MB per row: ~60 GB for
# 100,000 rows, more than this machine has. (model, columns) -> largest table run.
MAX_ROWS = {("NSF", 100): 10_000}


def _table_path(folder: str, rows: int, columns: int) -> str:
    """A float32 standard-normal table, generated once (in 100,000-row pieces)."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    path = os.path.join(folder, f"table_{rows}x{columns}.npy")
    if not os.path.exists(path):
        rng = np.random.default_rng(0)
        table = np.lib.format.open_memmap(path + ".part", mode="w+", dtype=np.float32,
                                          shape=(rows, columns))
        for start in range(0, rows, 100_000):
            stop = min(rows, start + 100_000)
            table[start:stop] = rng.standard_normal((stop - start, columns), dtype=np.float32)
        table.flush()
        del table
        os.replace(path + ".part", path)
    return path


def _worker(args: argparse.Namespace) -> None:
    import numpy as np  # pylint: disable=import-outside-toplevel
    import keras  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    tf.config.set_visible_devices([], "GPU")
    import tfflow  # pylint: disable=import-outside-toplevel
    import tfflow.data  # pylint: disable=import-outside-toplevel
    import tfflow.models  # pylint: disable=import-outside-toplevel
    from tfflow.models.flow_model import initialization_batch  # pylint: disable=import-outside-toplevel
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import common  # pylint: disable=import-outside-toplevel

    result: dict = {"after_import_mb": common.rss_bytes() / 2**20}
    common.reset_peak_rss()
    start = time.perf_counter()
    source = tfflow.data.source(args.worker)
    result["source_s"] = time.perf_counter() - start
    dims = source.info().event_shape[0]
    steps_per_epoch = int(source.dataset("train", batch_size=args.batch_size).cardinality())

    def train_dataset(seed: int):
        return source.dataset("train", batch_size=args.batch_size, shuffle=True, seed=seed,
                              repeat=True)

    start = time.perf_counter()
    next(iter(train_dataset(seed=1)))
    result["epoch_start_s"] = time.perf_counter() - start

    for name in args.models.split(","):
        keras.utils.set_random_seed(0)
        ds = train_dataset(seed=0)
        start = time.perf_counter()
        model = getattr(tfflow.models, name)((dims,))
        # What `fit` runs first, timed apart from the first step.
        model.initialize(*initialization_batch(ds, None, model.initialization_examples))
        init_s = time.perf_counter() - start
        model.compile()
        ends: list[float] = []
        callback = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs: ends.append(time.perf_counter()))
        start = time.perf_counter()
        model.fit(ds, epochs=1, steps_per_epoch=1 + args.warmup + args.steps, verbose=0,
                  callbacks=[callback])
        steps = np.diff(ends)[args.warmup:]
        step_s = float(np.median(steps))
        result[name] = {
            "init_s": init_s,
            "first_step_s": ends[0] - start,
            "step_ms": 1e3 * step_s,
            "epoch_s": result["epoch_start_s"] + steps_per_epoch * step_s,
            "peak_mb": common.peak_rss_bytes() / 2**20,
        }
        del model, ds
        common.reset_peak_rss()
    common.print_result(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1e4,1e5,1e6", help="comma-separated row counts")
    parser.add_argument("--columns", default="10,100", help="comma-separated column counts")
    parser.add_argument("--batch_size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=50, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps after the first")
    parser.add_argument("--folder", default=os.path.join(tempfile.gettempdir(),
                                                         "tfflow_table_scale"),
                        help="where the generated tables are kept")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--models", default=",".join(MODELS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return

    os.makedirs(args.folder, exist_ok=True)
    rows_list = [int(float(r)) for r in args.rows.split(",")]
    columns_list = [int(c) for c in args.columns.split(",")]
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import common  # pylint: disable=import-outside-toplevel

    lines = []
    begin = time.perf_counter()
    for columns in columns_list:
        for rows in rows_list:
            path = _table_path(args.folder, rows, columns)
            models = [name for name in MODELS if rows <= MAX_ROWS.get((name, columns), rows)]
            command = [sys.executable, os.path.abspath(__file__), "--worker", path,
                       "--batch_size", str(args.batch_size), "--steps", str(args.steps),
                       "--warmup", str(args.warmup), "--models", ",".join(models)]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            result = common.worker_result(output)
            print(f"{rows:,d} x {columns}: {json.dumps(result)}", file=sys.stderr, flush=True)
            for name in MODELS:
                if name not in result:
                    lines.append([name, f"{rows:,d}", columns, f"{rows * columns * 4 / 2**20:,.1f}"]
                                 + ["not run (see MAX_ROWS)"] + ["-"] * 7)
                    continue
                model = result[name]
                lines.append([name, f"{rows:,d}", columns, f"{rows * columns * 4 / 2**20:,.1f}",
                              f"{result['source_s']:.2f}", f"{result['epoch_start_s']:.2f}",
                              f"{model['init_s']:.1f}", f"{model['first_step_s']:.1f}",
                              f"{model['step_ms']:.1f}", f"{model['epoch_s']:.1f}",
                              f"{model['peak_mb']:,.0f}", f"{result['after_import_mb']:,.0f}"])
    print(f"\ncode {common.code_version()}, batch {args.batch_size}, {args.steps} timed steps "
          f"after {1 + args.warmup}, total {time.perf_counter() - begin:.0f} s\n")
    common.print_table(["model", "rows", "columns", "table (MB, float32)", "source (s)",
                        "epoch start (s)", "init (s)", "first step (s)", "step (ms)",
                        "epoch, extrapolated (s)", "peak RSS (MB)", "after import (MB)"], lines)


if __name__ == "__main__":
    main()
