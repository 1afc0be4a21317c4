"""zuko's conditional NSF p(x | c) on one problem of quality_conditional.py, same protocol as tfflow's.

Runs in the benchmark-only virtualenv of benchmarks/peers_requirements.md, not
in tfflow's (PyTorch and zuko are no dependencies of tfflow).
benchmarks/quality_conditional.py writes the problem and calls this script;
by hand:

    /work/bench-venv/bin/python benchmarks/torch_conditional.py --data=problem.npz \
        --model=zuko_nsf --seconds=60 --clock=process --seed=0 --out=result.npz

`--data` is an .npz with float arrays (D = features of x, C = of the context):

* `x_train` [N, D], `c_train` [N, C], `x_validation`, `c_validation`: the
  simulated pairs the flow is fitted on and selected with;
* `kl_x` [K, D], `kl_c` [K, C]: points at which log q(x | c) is wanted (samples
  of the true conditional at a grid of contexts, for KL(p || q));
* `cal_x` [R, D], `cal_c` [R, C]: held-out pairs (x_true, c) for calibration.

Models (zuko's defaults, not tuned here):

* `zuko_nsf`: `zuko.flows.NSF(D, C)`: 3 masked-autoregressive rational-quadratic
  spline transforms (8 bins), MADE hyper-networks with hidden (64, 64) that
  take the context as an extra input, the order reversed between transforms,
  a diagonal-normal base.
* `zuko_maf`: `zuko.flows.MAF(D, C)`: the same with affine transforms.

Protocol (as benchmarks/torch_peers.py and the TensorFlow models):

* x and c are standardised with the training split's mean and std inside the
  script, z = (x - m) / s, u = (c - mc) / sc; the flow models q(z | u) and
  log q(x | c) = log q(z | u) - sum log s, so every density is in the file's units.
* Adam, lr 1e-3, batch `--batch-size` (default 256), reshuffled every epoch;
  a step whose loss is not finite is skipped and counted.
* The clock (`--clock`) starts before the model is built; training runs the
  whole budget (stops after the first step that ends past `--seconds`); the
  validation NLL is evaluated after every epoch and once more at the end,
  and the weights with the lowest one are restored.

The .npz written to `--out` holds `kl_logq` [K] (log q at `kl_x` given
`kl_c`), `cal_logq` [R] (log q(x_true | c)), `cal_sample_logq` [R, S] (log q of
`--samples` S draws from q( . | c) per calibration row), and `stats`, a JSON
string with steps, epochs, best epoch, seconds and the architecture.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import time

# Before torch loads its OpenMP runtime (see torch_peers.py): spinning OpenMP
# threads on 2 shared cores slow zuko's steps ~10x; passive waiting removes that.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import zuko  # noqa: E402
from torch_common import CLOCKS, adam_step, warm_up_adam  # noqa: E402

MODELS = ("zuko_nsf", "zuko_maf")
EVAL_BATCH = 8192
ARRAYS = ("x_train", "c_train", "x_validation", "c_validation", "kl_x", "kl_c", "cal_x", "cal_c")


def load(path: str) -> dict[str, np.ndarray]:
    """The problem's arrays, checked: pairs of [rows, D] / [rows, C] with one D and one C."""
    with np.load(path) as stored:
        missing = [key for key in ARRAYS if key not in stored.files]
        if missing:
            raise ValueError(f"torch_conditional: expected arrays {', '.join(ARRAYS)} in "
                             f"{path!r}, got {stored.files} (missing {missing}).")
        arrays = {key: np.asarray(stored[key], np.float64) for key in ARRAYS}
    for part in ("train", "validation", "kl", "cal"):
        names = ("x_" + part, "c_" + part) if part in ("train", "validation") else \
            (part + "_x", part + "_c")
        x, c = arrays[names[0]], arrays[names[1]]
        if x.ndim != 2 or c.ndim != 2 or len(x) != len(c):
            raise ValueError(f"torch_conditional: expected {names[0]} [rows, D] and {names[1]} "
                             f"[rows, C] with the same rows, got {x.shape} and {c.shape}.")
        if x.shape[1] != arrays["x_train"].shape[1] or c.shape[1] != arrays["c_train"].shape[1]:
            raise ValueError(f"torch_conditional: expected D = {arrays['x_train'].shape[1]} and "
                             f"C = {arrays['c_train'].shape[1]} in {names}, got {x.shape[1]} "
                             f"and {c.shape[1]}.")
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(c))):
            raise ValueError(f"torch_conditional: expected finite values in {names}.")
    return arrays


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    arrays = load(args.data)
    x_mean, x_std = arrays["x_train"].mean(0), arrays["x_train"].std(0)
    c_mean, c_std = arrays["c_train"].mean(0), arrays["c_train"].std(0)
    if np.any(x_std == 0) or np.any(c_std == 0):
        raise ValueError("torch_conditional: expected no constant training columns in x or c.")
    # log q(x | c) = log q(z | u) - sum(log s): the standardisation's log-det.
    log_det = float(np.sum(np.log(x_std)))
    as_x = lambda a: torch.from_numpy(((a - x_mean) / x_std).astype(np.float32))  # noqa: E731
    as_c = lambda a: torch.from_numpy(((a - c_mean) / c_std).astype(np.float32))  # noqa: E731
    x_train, c_train = as_x(arrays["x_train"]), as_c(arrays["c_train"])
    x_val, c_val = as_x(arrays["x_validation"]), as_c(arrays["c_validation"])
    num_train, features = x_train.shape
    context = c_train.shape[1]
    batch_size = min(args.batch_size, num_train)
    shuffle = torch.Generator().manual_seed(args.seed)

    warm_up_adam(args.lr)

    now = CLOCKS[args.clock]
    clock_start, wall_start, cpu_start = now(), time.perf_counter(), time.process_time()
    flow_class = zuko.flows.NSF if args.model == "zuko_nsf" else zuko.flows.MAF
    flow = flow_class(features, context)
    parameters = sum(p.numel() for p in flow.parameters() if p.requires_grad)
    optimizer = torch.optim.Adam(flow.parameters(), lr=args.lr)

    def nll(x: torch.Tensor, c: torch.Tensor) -> float:
        flow.eval()
        total = 0.0
        with torch.no_grad():
            for start in range(0, len(x), EVAL_BATCH):
                values = flow(c[start:start + EVAL_BATCH]).log_prob(x[start:start + EVAL_BATCH])
                total -= float(values.double().sum())
        flow.train()
        return total / len(x) if math.isfinite(total) else math.inf

    best = {"nll": math.inf, "epoch": 0, "state": copy.deepcopy(flow.state_dict())}
    epochs = steps = skipped = 0
    num_batches = math.ceil(num_train / batch_size)
    stopped = False
    while not stopped:
        order = torch.randperm(num_train, generator=shuffle)
        for index in range(num_batches):
            rows = order[index * batch_size:(index + 1) * batch_size]
            if not adam_step(optimizer, -flow(c_train[rows]).log_prob(x_train[rows]).mean()):
                skipped += 1
            steps += 1
            if now() - clock_start > args.seconds:
                stopped = True
                break
        epochs += 1
        value = nll(x_val, c_val)
        if value < best["nll"]:
            best.update(nll=value, epoch=epochs, state=copy.deepcopy(flow.state_dict()))
    train_seconds = now() - clock_start
    train_wall = time.perf_counter() - wall_start
    train_cpu = time.process_time() - cpu_start
    flow.load_state_dict(best["state"])
    flow.eval()

    def log_q(x: np.ndarray, c: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for start in range(0, len(x), EVAL_BATCH):
                out.append(flow(as_c(c[start:start + EVAL_BATCH])).log_prob(
                    as_x(x[start:start + EVAL_BATCH])).double().numpy() - log_det)
        return np.concatenate(out)

    kl_logq = log_q(arrays["kl_x"], arrays["kl_c"])
    cal_logq = log_q(arrays["cal_x"], arrays["cal_c"])
    # Draws in the standardised space; their log q there differs from the
    # data's units by the same constant as cal_logq's, so ranks are unchanged,
    # and both are reported in the data's units.
    sample_logq = []
    rows_per_chunk = max(1, EVAL_BATCH // args.samples)
    generator_seed = args.seed + 1_000_003
    torch.manual_seed(generator_seed)
    with torch.no_grad():
        for start in range(0, len(arrays["cal_c"]), rows_per_chunk):
            dist = flow(as_c(arrays["cal_c"][start:start + rows_per_chunk]))
            draws = dist.sample((args.samples,))                      # [S, rows, D]
            sample_logq.append(dist.log_prob(draws).double().numpy().T - log_det)  # [rows, S]
    stats = {
        "model": args.model, "steps": steps, "skipped_steps": skipped, "epochs": epochs,
        "best_epoch": best["epoch"], "validation_nll": best["nll"] + log_det,
        "train_seconds": train_seconds, "train_wall_seconds": train_wall,
        "train_cpu_seconds": train_cpu, "clock": args.clock,
        "budget_seconds": args.seconds, "batch_size": batch_size, "lr": args.lr,
        "seed": args.seed, "threads": args.threads, "samples": args.samples,
        "architecture": {"library": f"zuko {zuko.__version__}", "class": flow_class.__name__,
                         "features": features, "context": context, "transforms": 3,
                         "hidden_features": [64, 64], "parameters": parameters},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "numpy": np.__version__},
    }
    return {"kl_logq": kl_logq, "cal_logq": cal_logq,
            "cal_sample_logq": np.concatenate(sample_logq), "stats": json.dumps(stats)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="the problem's .npz (see the docstring)")
    parser.add_argument("--out", required=True, help="write the result .npz here")
    parser.add_argument("--model", default="zuko_nsf", choices=MODELS)
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="training budget in seconds of --clock (default 60)")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                        help="wall (default) or process (CPU seconds of this process)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--samples", type=int, default=256,
                        help="draws from q( . | c) per calibration row (default 256)")
    args = parser.parse_args(argv)
    for flag in ("seconds", "threads", "batch_size", "lr", "samples"):
        if getattr(args, flag) <= 0:
            parser.error(f"expected --{flag.replace('_', '-')} > 0, got {getattr(args, flag)}")
    result = run(args)
    np.savez(args.out, **result)
    stats = json.loads(result["stats"])
    print(f"{args.model} {os.path.basename(args.data)}: validation NLL "
          f"{stats['validation_nll']:.4f}; {stats['steps']} steps, {stats['epochs']} epochs "
          f"(best {stats['best_epoch']}), {stats['train_seconds']:.0f} s ({args.clock})")


if __name__ == "__main__":
    main()
