"""PyTorch flow peers (zuko NSF/MAF, normflows NSF) on one table, same protocol as tfflow's.

Runs in the benchmark-only virtualenv of benchmarks/peers_requirements.md, not
in tfflow's: PyTorch, zuko and normflows are no dependencies of tfflow.

    /work/bench-venv/bin/python benchmarks/torch_peers.py --data=/tmp/tfflow_tables/randhie.npz \
        --model=zuko_nsf --seconds=90 --seed=0 --threads=2 --out=result.json

`--data` is an .npz with float arrays `train`, `validation`, `test`, each
[rows, D] with D >= 2, in the file's units: a table written by
benchmarks/tables.py, or a 2-D toy density saved the same way.

Models (each library's own defaults, not tuned here):

* `zuko_nsf`: `zuko.flows.NSF(D)`: 3 masked-autoregressive rational-quadratic
  spline transforms (8 bins), MADE hyper-networks with hidden (64, 64), the
  feature order reversed between transforms, a trainable diagonal-normal base.
* `zuko_maf`: `zuko.flows.MAF(D)`: the same with monotonic affine transforms.
* `normflows_nsf`: normflows has no ready-made flow class; this is the neural
  spline flow of its own example (examples/neural_spline_flow.ipynb): K = 16
  `AutoregressiveRationalQuadraticSpline(D, 2, 128)` (2 residual blocks of
  128 units, 8 bins, linear tails past +-3), each followed by
  `LULinearPermute(D)`, over a fixed `DiagGaussian(D, trainable=False)`.
  `--transforms` and `--hidden` override the defaults of all three.

Protocol (as benchmarks/common.py for the TensorFlow models):

* Rows are standardised with the training split's mean and std inside the
  script, z = (x - m) / s; the flow models z, and log p(x) = log p(z) - sum log s,
  so every NLL below is nats per row in the file's units.
* Adam, lr 1e-3, batch 256 (512 when the training split has over 10,000 rows;
  never more than the split), reshuffled every epoch, the last partial batch
  kept. A step whose loss is not finite is skipped and counted.
* The clock (`--clock`, wall by default) starts before the model is built.
  Training stops after the first step that ends past `--seconds`, or when the
  validation NLL has not improved for `--patience` evaluations. Validation is
  evaluated after every epoch, and also within an epoch once `--eval-seconds`
  have passed since the last evaluation (long epochs on large tables), and
  once more when training stops; its time counts towards the budget. The
  weights with the lowest validation NLL are restored before the test split
  is scored.

The JSON written to `--out` holds the test NLL, the best validation NLL, the
full-covariance Gaussian's test NLL (benchmarks/tables.py `gaussian_nll`) and
the margin over it (positive: the flow is better), the best epoch, epochs,
steps, seconds and the architecture.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable

# Before torch loads its OpenMP runtime: with the default (spinning) wait
# policy, 2 intra-op threads on 2 cores that other processes also use run a
# zuko NSF step about 10x slower than 1 thread (0.45 s against 0.04 s measured
# here on 163 x 14 rows); passive waiting removes that. Export OMP_WAIT_POLICY
# to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import normflows as nf  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import zuko  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tables import gaussian_nll  # noqa: E402  (the benchmark's own module, NumPy only)
from torch_common import CLOCKS, adam_step, warm_up_adam  # noqa: E402

MODELS = ("zuko_nsf", "zuko_maf", "normflows_nsf")
EVAL_BATCH = 4096


def build_model(name: str, features: int, transforms: int | None,
                hidden: tuple[int, ...] | None) -> tuple[torch.nn.Module,
                                                         Callable[[torch.Tensor], torch.Tensor],
                                                         dict]:
    """Builds a peer flow; returns the module, its log_prob function and its architecture."""
    if name in ("zuko_nsf", "zuko_maf"):
        kwargs = {"transforms": transforms or 3, "hidden_features": hidden or (64, 64)}
        flow_class = zuko.flows.NSF if name == "zuko_nsf" else zuko.flows.MAF
        flow = flow_class(features, **kwargs)
        arch = {"library": f"zuko {zuko.__version__}", "class": flow_class.__name__,
                **{key: list(value) if isinstance(value, tuple) else value
                   for key, value in kwargs.items()}}
        return flow, lambda x: flow().log_prob(x), arch
    if name == "normflows_nsf":
        blocks, units = (len(hidden), hidden[0]) if hidden else (2, 128)
        if hidden and len(set(hidden)) != 1:
            raise ValueError(f"torch_peers: normflows_nsf uses residual blocks of one width; "
                             f"expected equal --hidden sizes, got {hidden}.")
        num_layers = transforms or 16
        flows = []
        for _ in range(num_layers):
            flows.append(nf.flows.AutoregressiveRationalQuadraticSpline(features, blocks, units))
            flows.append(nf.flows.LULinearPermute(features))
        model = nf.NormalizingFlow(q0=nf.distributions.DiagGaussian(features, trainable=False),
                                   flows=flows)
        arch = {"library": f"normflows {nf.__version__}",
                "class": "AutoregressiveRationalQuadraticSpline + LULinearPermute",
                "transforms": num_layers, "residual_blocks": blocks, "hidden_units": units,
                "bins": 8, "tail_bound": 3}
        return model, model.log_prob, arch
    raise ValueError(f"torch_peers: expected --model in {MODELS}, got {name!r}.")


def mean_nll(log_prob: Callable[[torch.Tensor], torch.Tensor], module: torch.nn.Module,
             rows: torch.Tensor) -> tuple[float, int]:
    """Mean NLL of standardised rows (float64 accumulation) and the count of non-finite rows."""
    module.eval()
    total, nonfinite = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(rows), EVAL_BATCH):
            values = log_prob(rows[start:start + EVAL_BATCH]).double()
            finite = torch.isfinite(values)
            nonfinite += int((~finite).sum())
            total -= float(values[finite].sum())
    module.train()
    return (total / len(rows) if nonfinite == 0 else math.inf), nonfinite


def load_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as stored:
        missing = [key for key in ("train", "validation", "test") if key not in stored.files]
        if missing:
            raise ValueError(f"torch_peers: expected arrays train, validation, test in "
                             f"{path!r}, got {stored.files} (missing {missing}).")
        splits = {key: np.asarray(stored[key], np.float64)
                  for key in ("train", "validation", "test")}
    shapes = {key: value.shape for key, value in splits.items()}
    if any(len(shape) != 2 for shape in shapes.values()) or \
            len({shape[1] for shape in shapes.values()}) != 1 or shapes["train"][1] < 2:
        raise ValueError(f"torch_peers: expected [rows, D] splits with one D >= 2 in {path!r}, "
                         f"got {shapes}.")
    for key, value in splits.items():
        if not np.all(np.isfinite(value)):
            raise ValueError(f"torch_peers: expected finite values in {path!r}, "
                             f"got non-finite entries in {key!r}.")
    return splits


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    splits = load_npz(args.data)
    train = splits["train"]
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    if np.any(std == 0):
        raise ValueError(f"torch_peers: expected no constant training columns in "
                         f"{args.data!r}, got std 0 in columns {np.flatnonzero(std == 0)}.")
    # log p(x) = log p(z) - sum(log s): the standardisation's log-det, added
    # back so NLLs are in the file's units.
    log_det_standardise = float(np.sum(np.log(std)))
    tensors = {key: torch.from_numpy(((value - mean) / std).astype(np.float32))
               for key, value in splits.items()}
    num_train, features = tensors["train"].shape
    batch_size = min(args.batch_size or (512 if num_train > 10_000 else 256), num_train)
    shuffle = torch.Generator().manual_seed(args.seed)

    warm_up_adam(args.lr)

    now = CLOCKS[args.clock]
    clock_start, wall_start = now(), time.perf_counter()
    module, log_prob, arch = build_model(args.model, features, args.transforms,
                                         tuple(args.hidden) if args.hidden else None)
    arch["parameters"] = sum(p.numel() for p in module.parameters() if p.requires_grad)
    optimizer = torch.optim.Adam(module.parameters(), lr=args.lr)

    best = {"nll": math.inf, "epoch": 0, "state": copy.deepcopy(module.state_dict())}
    epochs = steps = skipped = evaluations = since_best = 0
    history = []
    last_eval = now()

    def evaluate(epoch_position: float) -> None:
        nonlocal evaluations, since_best, last_eval
        nll, _ = mean_nll(log_prob, module, tensors["validation"])
        evaluations += 1
        history.append([round(epoch_position, 3),
                        round(nll + log_det_standardise, 4) if math.isfinite(nll) else None])
        if nll < best["nll"]:
            best.update(nll=nll, epoch=epoch_position, state=copy.deepcopy(module.state_dict()))
            since_best = 0
        else:
            since_best += 1
        last_eval = now()

    num_batches = math.ceil(num_train / batch_size)
    stopped = None
    while stopped is None:
        order = torch.randperm(num_train, generator=shuffle)
        for index in range(num_batches):
            batch = tensors["train"][order[index * batch_size:(index + 1) * batch_size]]
            if not adam_step(optimizer, -log_prob(batch).mean()):
                skipped += 1
            steps += 1
            if now() - clock_start > args.seconds:
                stopped = "budget"
                break
            if index + 1 < num_batches and now() - last_eval > args.eval_seconds:
                evaluate(epochs + (index + 1) / num_batches)
                if args.patience and since_best >= args.patience:
                    stopped = "patience"
                    break
        if index + 1 == num_batches:
            epochs += 1
        if stopped != "patience":  # A patience stop inside an epoch has just evaluated.
            evaluate(epochs + ((index + 1) / num_batches if index + 1 < num_batches else 0))
        if stopped is None and args.patience and since_best >= args.patience:
            stopped = "patience"
    train_seconds = now() - clock_start
    train_wall = time.perf_counter() - wall_start

    module.load_state_dict(best["state"])
    test_nll, nonfinite = mean_nll(log_prob, module, tensors["test"])
    test_nll += log_det_standardise
    gauss = gaussian_nll(splits["train"], splits["test"])
    return {
        "model": args.model, "data": os.path.abspath(args.data),
        "rows": {key: len(value) for key, value in splits.items()}, "features": features,
        "test_nll": test_nll, "validation_nll": best["nll"] + log_det_standardise,
        "gaussian_test_nll": gauss, "margin_over_gaussian": gauss - test_nll,
        "nonfinite_test_rows": nonfinite,
        "best_epoch": best["epoch"], "epochs": epochs, "steps": steps, "skipped_steps": skipped,
        "evaluations": evaluations, "stopped": stopped,
        "train_seconds": train_seconds, "train_wall_seconds": train_wall, "clock": args.clock,
        "budget_seconds": args.seconds, "patience": args.patience,
        "batch_size": batch_size, "lr": args.lr, "seed": args.seed, "threads": args.threads,
        "architecture": arch, "validation_history": history,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "numpy": np.__version__},
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="npz with train/validation/test [rows, D]")
    parser.add_argument("--model", required=True, choices=MODELS)
    parser.add_argument("--seconds", type=float, default=90.0,
                        help="training budget in seconds of --clock (default 90)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--out", default=None, help="write the result JSON here")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                        help="wall (default) or process (CPU seconds of this process)")
    parser.add_argument("--patience", type=int, default=20,
                        help="stop after this many evaluations without a better validation "
                             "NLL (0: never; default 20)")
    parser.add_argument("--eval-seconds", type=float, default=1.0,
                        help="also evaluate validation within an epoch once this many "
                             "seconds passed since the last evaluation (default 1)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default 256, or 512 when the training split has >10k rows")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--transforms", type=int, default=None,
                        help="override the number of transforms (zuko 3, normflows 16)")
    parser.add_argument("--hidden", type=int, nargs="+", default=None,
                        help="override hidden sizes (zuko 64 64; normflows 128 128 = "
                             "2 residual blocks of 128)")
    args = parser.parse_args(argv)
    for flag in ("seconds", "threads", "eval_seconds", "lr"):
        if getattr(args, flag) <= 0:
            parser.error(f"expected --{flag.replace('_', '-')} > 0, got {getattr(args, flag)}")
    result = run(args)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(result, handle, indent=1)
    print(f"{args.model} {os.path.basename(args.data)}: test NLL {result['test_nll']:.3f} "
          f"(Gaussian {result['gaussian_test_nll']:.3f}, margin "
          f"{result['margin_over_gaussian']:+.3f}) best epoch {result['best_epoch']:g}/"
          f"{result['epochs']} steps {result['steps']} {result['train_seconds']:.1f} s "
          f"stopped by {result['stopped']}")


if __name__ == "__main__":
    main()
