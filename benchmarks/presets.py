"""The paper presets (issue 13): build each, count its parameters, and take training steps.

For each preset of `tfflow.models.PRESETS` (one fresh process each, so one
model's memory does not inflate the next one's peak):

* build the model with `memory_saving=True` (s, parameters, RSS after build);
* `fit` it for `--steps` steps at `--batch` on synthetic 32x32x3 data drawn
  uniformly from [0, 1) (the data's values do not change the step's cost);
* report the data-dependent initialisation that `fit` runs first (ActNorm,
  batch norm; s), the first step (trace + graph optimisation + one step, s),
  the second step (s), and the process's peak RSS over the whole run (GB;
  Linux VmHWM).

Run it with `nice -n 10` on a shared machine:

    nice -n 10 python benchmarks/presets.py --batch 4 --steps 2

CPU only by default (`--device=gpu` to measure on a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  # pylint: disable=wrong-import-position

GB = 1024 ** 3


def worker(name: str, batch: int, steps: int, seed: int, device: str) -> dict:
    """Builds preset `name` and fits it for `steps` steps; returns the measurements."""
    described = common.setup_device(device)
    import keras  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel

    import tfflow  # pylint: disable=import-outside-toplevel

    out: dict = {"preset": name, "batch": batch, "device": described,
                 "rss_imported_gb": common.rss_bytes() / GB}
    start = time.perf_counter()
    model = tfflow.models.preset(name, memory_saving=True)
    out["build_s"] = time.perf_counter() - start
    out["params"] = model.count_params()
    out["trainable_params"] = common.count_params(model.trainable_variables)
    out["paper_params"] = tfflow.models.PRESETS[name].paper_params
    out["rss_built_gb"] = common.rss_bytes() / GB
    x = np.random.default_rng(seed).uniform(
        0.0, 1.0, (batch * steps,) + tuple(model.event_shape)).astype("float32")
    model.compile(learning_rate=1e-3)

    marks: dict = {}

    class Marks(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            marks.setdefault(f"begin_{batch}", time.perf_counter())

        def on_train_batch_end(self, batch, logs=None):
            marks[f"end_{batch}"] = time.perf_counter()
            marks[f"loss_{batch}"] = float(logs["loss"]) if logs and "loss" in logs else None

    start = time.perf_counter()
    model.fit(x, batch_size=batch, epochs=1, shuffle=False, verbose=0, callbacks=[Marks()])
    out["fit_s"] = time.perf_counter() - start
    # fit runs the data-dependent initialisation (on this data) before Keras' first batch.
    out["init_s"] = marks["begin_0"] - start
    out["step_s"] = [marks[f"end_{k}"] - marks[f"begin_{k}"] for k in range(steps)]
    out["losses"] = [marks[f"loss_{k}"] for k in range(steps)]
    out["peak_rss_gb"] = common.peak_rss_bytes() / GB
    return out


def row(result: dict) -> str:
    steps = result["step_s"]
    paper = result["paper_params"]
    paper_text = "none given" if paper is None else (
        f"{paper / 1e6:.1f}M ({100 * (result['trainable_params'] / paper - 1):+.2f}%)")
    second = f"{steps[1]:.2f}" if len(steps) > 1 else "-"
    return (f"| {result['preset']} | {result['trainable_params']:,} | {paper_text} | "
            f"{result['build_s']:.1f} | {result['init_s']:.1f} | {steps[0]:.1f} | {second} | "
            f"{result['peak_rss_gb']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--presets", default="glow_cifar10,realnvp_cifar10",
                        help="comma-separated preset names")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        common.print_result(worker(args.worker, args.batch, args.steps, args.seed, args.device))
        return
    print(f"# {common.code_version()}; batch {args.batch}, {args.steps} steps, "
          f"memory_saving=True, {time.strftime('%Y-%m-%d %H:%M %Z')}")
    results = []
    for name in args.presets.split(","):
        command = [sys.executable, os.path.abspath(__file__), "--worker", name,
                   "--batch", str(args.batch), "--steps", str(args.steps),
                   "--seed", str(args.seed), "--device", args.device]
        done = subprocess.run(command, text=True, capture_output=True, check=False)
        result = common.worker_result(done.stdout)
        if done.returncode or result is None:
            print(f"{name}: failed (exit {done.returncode})\n{done.stderr[-3000:]}")
            continue
        results.append(result)
        print(f"{name}: {json.dumps(result)}", flush=True)
    if results:
        print(f"\ndevice: {results[0]['device']}\n")
        print("| preset | trainable parameters | paper | build s | data-dependent init s | "
              "first step s | second step s | peak RSS GB |")
        print("|---|---|---|---|---|---|---|---|")
        for result in results:
            print(row(result))


if __name__ == "__main__":
    main()
