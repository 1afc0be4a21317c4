"""tfflow Glow with TensorFlow's default CPU threads vs one thread per op (`tfflow.training.threads`).

Each cell is a fresh process (the setting is fixed when TensorFlow's runtime
starts): build `tfflow.models.Glow`, `initialize` on 256 images, `compile()`,
time the first `train_on_batch`, then the median of `--steps` training steps
and of 20 `log_prob` calls (graph mode, Keras' CPU default). The two settings
alternate run by run; the table gives every run and the medians.

    python benchmarks/threads.py                          # ~4 min on 2 cores
    python benchmarks/threads.py --configs digits --runs 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

import common

# name: (image shape, steps per scale K, batch, quantisation levels)
CONFIGS = {
    "digits": ((8, 8, 1), 8, 64, 17),
    "16x16x1": ((16, 16, 1), 8, 64, 256),
    "28x28x1": ((28, 28, 1), 8, 64, 256),
    "32x32x3": ((32, 32, 3), 4, 32, 256),
}
SETTINGS = {"tensorflow": 0, "one_per_op": 1}  # intra-op threads (0: TensorFlow's default)


def worker(config: str, threads: int, hidden: int, steps: int) -> dict:
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    import tfflow  # pylint: disable=import-outside-toplevel

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    shape, steps_per_scale, batch, levels = CONFIGS[config]
    model = tfflow.models.Glow(shape, scales=2, steps_per_scale=steps_per_scale,
                               hidden_channels=hidden, num_levels=levels)
    rng = np.random.RandomState(0)
    x = ((rng.randint(0, levels, (256,) + shape) + rng.uniform(size=(256,) + shape))
         / levels).astype("float32")
    model.initialize(x)
    model.compile()
    batch_x = x[:batch]
    first, train = common.timed_calls(lambda: model.train_on_batch(batch_x), 2, steps, 300.0)
    log_prob = tf.function(model.log_prob)
    _, lp = common.timed_calls(lambda: log_prob(batch_x).numpy(), 2, 20, 120.0)
    return {"first_s": first, "train_ms": 1e3 * statistics.median(train),
            "log_prob_ms": 1e3 * statistics.median(lp)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--runs", type=int, default=2, help="runs per setting and config")
    parser.add_argument("--hidden", type=int, default=64, help="Glow's hidden channels")
    parser.add_argument("--steps", type=int, default=40, help="timed training steps")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        common.print_result(worker(**spec))
        return
    configs = common.subset("configs", args.configs, CONFIGS)
    print(f"device: cpu ({len(os.sched_getaffinity(0))} cores visible); "
          f"{common.code_version()}; command: python benchmarks/threads.py "
          + " ".join(sys.argv[1:]), flush=True)
    rows = []
    for config in configs:
        results: dict[str, list[dict]] = {name: [] for name in SETTINGS}
        for run in range(args.runs):
            order = list(SETTINGS) if run % 2 == 0 else list(SETTINGS)[::-1]
            for name in order:
                spec = {"config": config, "threads": SETTINGS[name], "hidden": args.hidden,
                        "steps": args.steps}
                done = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker",
                                       json.dumps(spec)], capture_output=True, text=True,
                                      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
                                      check=False)
                result = common.worker_result(done.stdout)
                if result is None:
                    raise SystemExit(f"{config} {name} failed:\n{done.stderr[-2000:]}")
                results[name].append(result)
                print(f"{config} {name} run {run + 1}: {results[name][-1]}", flush=True)
        for metric in ("train_ms", "log_prob_ms", "first_s"):
            values = {name: [r[metric] for r in results[name]] for name in SETTINGS}
            medians = {name: statistics.median(v) for name, v in values.items()}
            rows.append([config, metric,
                         ", ".join(f"{v:.1f}" for v in values["tensorflow"]),
                         ", ".join(f"{v:.1f}" for v in values["one_per_op"]),
                         f"{medians['one_per_op'] / medians['tensorflow']:.2f}"])
    print()
    common.print_table(["config", "metric", "TensorFlow's threads", "one thread per op",
                        "ratio of medians (one / TF)"], rows)


if __name__ == "__main__":
    main()
