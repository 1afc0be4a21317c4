"""Glow under XLA: a scale's K steps looped (tfflow's default) vs unrolled, as K grows.

Each cell is a fresh process with one CPU thread per op: build the digits Glow
(8x8x1, b64, L=2, h64, K steps per scale), `initialize` on 256 digits,
`compile(jit_compile=True)`, time the first `train_on_batch` (XLA's compile
and one step; wall and CPU seconds), then the median of 12 training steps,
and the first and median `log_prob` call of a `tf.function(jit_compile=True)`.
"unrolled" forces the steps unrolled in both directions under XLA (tfflow's
default before the looped inverse, `tfflow.bijectors.StackedSteps.unrolled`);
the two modes alternate run by run.

    python benchmarks/xla_steps.py                      # K = 8, 32; ~5 min on 2 cores
    python benchmarks/xla_steps.py --depths 4,8,32 --runs 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import common

MODES = ("looped", "unrolled")


def worker(mode: str, k: int) -> dict:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    import tfflow  # pylint: disable=import-outside-toplevel
    from tfflow.bijectors import stacked_steps  # pylint: disable=import-outside-toplevel

    if mode == "unrolled":
        stacked_steps.StackedSteps.unrolled = lambda self, inverse=True: (
            bool(self._unroll) if self._unroll is not None  # pylint: disable=protected-access
            else tf.executing_eagerly() or stacked_steps.in_xla_context())
    x = common.digits_images((8, 8, 1), 256, 0)
    model = tfflow.models.Glow((8, 8, 1), scales=2, steps_per_scale=k, hidden_channels=64,
                               num_levels=17)
    model.initialize(x)
    model.compile(jit_compile=True)
    batch = x[:64]
    start, cpu = time.perf_counter(), time.process_time()
    model.train_on_batch(batch)
    out = {"first_s": time.perf_counter() - start, "first_cpu_s": time.process_time() - cpu}
    _, times = common.timed_calls(lambda: model.train_on_batch(batch), 3, 12, 120.0)
    out["train_ms"] = 1e3 * statistics.median(times)
    log_prob = tf.function(model.log_prob, jit_compile=True)
    first, times = common.timed_calls(lambda: log_prob(batch).numpy(), 1, 12, 120.0)
    out["log_prob_first_s"], out["log_prob_ms"] = first, 1e3 * statistics.median(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depths", default="8,32", help="steps per scale K, comma-separated")
    parser.add_argument("--runs", type=int, default=1, help="runs per mode and K")
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "K"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        common.print_result(worker(args.worker[0], int(args.worker[1])))
        return
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_NUM_INTRAOP_THREADS="1")
    results: dict = {}
    for depth in (int(v) for v in args.depths.split(",")):
        for _ in range(args.runs):
            for mode in MODES:
                done = subprocess.run([sys.executable, __file__, "--worker", mode, str(depth)],
                                      capture_output=True, text=True, env=env, check=False)
                result = common.worker_result(done.stdout)
                if result is None:
                    raise SystemExit(f"{mode} K={depth} failed:\n{done.stderr[-2000:]}")
                print(f"{mode} K={depth}: {json.dumps(result)}", flush=True)
                results.setdefault((depth, mode), []).append(result)
    fields = ("first_s", "first_cpu_s", "train_ms", "log_prob_first_s", "log_prob_ms")
    rows = [[f"K={depth}", mode] + [f"{common.median([r[f] for r in runs]):.2f}" for f in fields]
            for (depth, mode), runs in results.items()]
    print("\nGlow digits 8x8x1 b64 L=2 h64 under XLA, 1 thread per op, medians of "
          f"{args.runs} run(s) per cell")
    common.print_table(["depth", "steps", "first step (s)", "first step CPU (s)",
                        "train step (ms)", "first log_prob (s)", "log_prob (ms)"], rows)


if __name__ == "__main__":
    main()
