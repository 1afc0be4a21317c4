"""Steps/s of tfflow's `fit` under tf.distribute strategies on CPU (issue 4).

Each configuration trains the same Glow on the embedded digits, with the same
global batch, in a fresh process (logical devices must be configured before
TensorFlow starts):

* `default`: no strategy (`tf.distribute.get_strategy()`), one device;
* `mirrored1`: `MirroredStrategy(["/cpu:0"])`, one replica: the cost of the
  strategy path itself (the issue's bound: at most 10% over `default`);
* `mirrored2`: `MirroredStrategy` over 2 logical CPU devices (two replicas on
  the same cores: shows the all-reduce overhead, not a speed-up).

Steps/s is the median over windows of `--window` steps after `--warmup`
steps (the first epoch's trace is excluded). Configurations run in turn,
`--repeats` times each, interleaved, so machine load hits them alike.

    python benchmarks/distribute.py                 # ~3 min on 2 cores
    python benchmarks/distribute.py --repeats 5 --steps 200
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CONFIGS = ("default", "mirrored1", "mirrored2")

_CHILD = r"""
import json, sys, time
import tensorflow as tf
config, steps, warmup, window, batch, jit = sys.argv[1], *map(int, sys.argv[2:7])
cpu = tf.config.list_physical_devices("CPU")[0]
if config == "mirrored2":
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import tfflow

strategy = {"default": tf.distribute.get_strategy,
            "mirrored1": lambda: tf.distribute.MirroredStrategy(["/cpu:0"]),
            "mirrored2": lambda: tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])}[config]()
keras.utils.set_random_seed(0)
data = tfflow.data.load("digits", "train", batch_size=batch, shuffle=True, seed=0,
                        drop_remainder=True, repeat=True)
with strategy.scope():
    model = tfflow.models.Glow((8, 8, 1), scales=2, steps_per_scale=4, hidden_channels=64,
                               num_levels=17)
    model.compile(jit_compile=bool(jit))

class Times(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.ends = []
    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())

times = Times()
start = time.perf_counter()
model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[times])
ends = times.ends[warmup:]
rates = [window / (ends[i + window] - ends[i]) for i in range(0, len(ends) - window, window)]
print(json.dumps({"steps_per_s": rates, "first_step_s": times.ends[0] - start,
                  "replicas": strategy.num_replicas_in_sync}))
"""


def run_child(config: str, args: argparse.Namespace) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, config, str(args.steps), str(args.warmup),
         str(args.window), str(args.batch_size), str(int(args.jit_compile))],
        capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{config} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=120, help="steps per run")
    parser.add_argument("--warmup", type=int, default=20, help="steps not timed")
    parser.add_argument("--window", type=int, default=10, help="steps per timed window")
    parser.add_argument("--batch_size", type=int, default=64, help="global batch")
    parser.add_argument("--jit_compile", action="store_true", help="compile fit with XLA")
    args = parser.parse_args()

    rates: dict[str, list[float]] = {c: [] for c in CONFIGS}
    first: dict[str, list[float]] = {c: [] for c in CONFIGS}
    replicas: dict[str, int] = {}
    for repeat in range(args.repeats):
        for config in CONFIGS:
            out = run_child(config, args)
            rates[config] += out["steps_per_s"]
            first[config].append(out["first_step_s"])
            replicas[config] = out["replicas"]
            print(f"  repeat {repeat}: {config:10s} {statistics.median(out['steps_per_s']):7.2f} "
                  f"steps/s", flush=True)

    base = statistics.median(rates["default"])
    print(f"\nGlow L=2 K=4 h64 on digits 8x8x1, global batch {args.batch_size}, CPU, "
          f"XLA {'on' if args.jit_compile else 'off'}; medians over {args.repeats} runs")
    print(f"{'strategy':12s} {'replicas':>8s} {'steps/s':>9s} {'vs default':>11s} "
          f"{'first step s':>13s}")
    for config in CONFIGS:
        rate = statistics.median(rates[config])
        print(f"{config:12s} {replicas[config]:8d} {rate:9.2f} {rate / base:10.2f}x "
              f"{statistics.median(first[config]):13.1f}")
    overhead = base / statistics.median(rates["mirrored1"]) - 1.0
    verdict = "pass" if overhead <= 0.10 else "MISS"
    print(f"\nstrategy-path overhead on one device (mirrored1 vs default): {overhead:+.1%} "
          f"(bound +10%): {verdict}")


if __name__ == "__main__":
    main()
