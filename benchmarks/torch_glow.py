"""normflows' Glow (PyTorch, eager) under speed.py's protocol: one configuration per process.

Runs in the benchmark-only virtualenv of benchmarks/peers_requirements.md, not
in tfflow's: PyTorch and normflows are no dependencies of tfflow. speed.py
starts it as its "normflows Glow (PyTorch eager)" peer; by hand:

    /work/bench-venv/bin/python benchmarks/torch_glow.py --data=images.npz \
        --levels=2 --steps=4 --hidden=64 --threads=2

`--data` is an .npz with float32 arrays `x` (the fixed training batch,
[batch, H, W, C] in [0, 1)) and `x_init` (the ActNorm initialisation batch,
same layout); speed.py writes it from the same digits-derived images its
TensorFlow workers use. The last line printed is `RESULT {json}` with the
fields of speed.py's workers (`common.measure_speed`).

The model is normflows' multi-scale Glow as its own example builds it
(examples/glow.ipynb, with our L, K and width): per scale, K
`nf.flows.GlowBlock(channels, hidden)` steps (ActNorm -> LU-parametrised
invertible 1x1 conv -> affine coupling whose network is conv3x3 -> ReLU ->
conv1x1 -> ReLU -> zero-initialised conv3x3, Glow's sigmoid scale, channel
split) and a `Squeeze`, scales joined by `Merge` (a channel split in the
data -> latent direction), one base distribution per scale in an
`nf.MultiscaleFlow`. The example's bases are class-conditional
(`ClassCondDiagGaussian`); this unconditional benchmark uses normflows' own
unconditional Glow base, `nf.distributions.GlowBase` (a learned mean and
log-scale per channel, like tfflow's top prior). normflows has no split
prior predicted from the kept half (tfflow's and tfb.Glow's 3x3 conv), so
each factored-out half gets its own `GlowBase`. Parameter counts come out
within about 2% of tfflow's Glow (printed side by side by speed.py).

Protocol, as speed.py's TensorFlow workers (`common.measure_speed`):
`torch.set_num_threads(--threads)`; data centred (x - 0.5, what tfflow's Glow
does inside and tfb.Glow is fed) and laid out NCHW; the model built
(`build_s`), ActNorms initialised by one `log_prob` of `x_init` without
gradients (`init_s`; normflows' ActNorm initialises on its first call);
then the first step (wall and CPU time of the first training step, Adam's
construction included: PyTorch eager has no trace to pay), the median of
`--repeats` training steps after `--warmup` - 1 more (Adam, lr 1e-3 with
the 200-step linear warm-up of tfflow's `compile()`, loss = NLL per
dimension, a non-finite loss skipped as tfflow's guard does), `log_prob`
and `sample` (a batch at temperature 1; normflows' `sample` also returns
log q, which its API always computes) under `torch.no_grad()`, peak RSS
(reset before the first step) and the non-finite samples among 4 batches at
T=1 and 4 at T=0.7. PyTorch keeps no allocator statistics on the CPU, so
there is no peak tensor memory. Adam's first step imports torch._dynamo
(seconds, once per process): one step on a dummy weight pays it before any
clock starts, as importing TensorFlow is not timed for tfflow.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time

# Before torch loads its OpenMP runtime: spinning waits on 2 cores shared with
# other processes cost PyTorch up to 10x (benchmarks/torch_peers.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import normflows as nf  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (no TensorFlow at import: RSS, timing and the protocol)
from torch_common import adam_step, warm_up_adam  # noqa: E402

#: Adam as `tfflow.FlowModel.compile()`: lr 1e-3, linear warm-up over 200 steps.
LEARNING_RATE = 1e-3
WARMUP_STEPS = 200


def build_glow(image_shape: tuple[int, int, int], *, levels: int, steps: int,
               hidden: int) -> nf.MultiscaleFlow:
    """normflows' Glow of `image_shape` (H, W, C): `levels` scales of `steps` GlowBlocks.

    normflows lists flows in the latent -> data direction and its scale 0 is
    the deepest: scale i's blocks see the data squeezed L - i times and split
    L - 1 - i times, so C * 2**(L + 1 - i) channels; scale 0 keeps
    C * 2**(L + 1) channels at (H, W) / 2**L, scale i > 0 factors out
    C * 2**(L - i) channels at (H, W) / 2**(L - i).
    """
    h, w, c = image_shape
    factor = 2 ** levels
    if h % factor or w % factor:
        raise ValueError(f"torch_glow: {levels} scale(s) squeeze H and W by {factor}; "
                         f"expected both divisible by {factor}, got {image_shape}.")
    bases, scales, merges = [], [], []
    for i in range(levels):
        channels = c * 2 ** (levels + 1 - i)
        scales.append([nf.flows.GlowBlock(channels, hidden, split_mode="channel", scale=True)
                       for _ in range(steps)] + [nf.flows.Squeeze()])
        if i == 0:
            latent = (c * 2 ** (levels + 1), h // factor, w // factor)
        else:
            merges.append(nf.flows.Merge())
            latent = (c * 2 ** (levels - i), h // 2 ** (levels - i), w // 2 ** (levels - i))
        bases.append(nf.distributions.GlowBase(latent))
    return nf.MultiscaleFlow(bases, scales, merges, class_cond=False)


def count_params(model: torch.nn.Module) -> int:
    """Trainable parameters, every element of every tensor (as speed.py counts tfflow's)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def load_images(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, x_init) of `path`, NHWC float32 in [0, 1), checked."""
    with np.load(path) as stored:
        missing = [key for key in ("x", "x_init") if key not in stored.files]
        if missing:
            raise ValueError(f"torch_glow: expected arrays x and x_init in {path!r}, got "
                             f"{stored.files} (missing {missing}).")
        x, x_init = (np.asarray(stored[key], np.float32) for key in ("x", "x_init"))
    if x.ndim != 4 or x_init.shape[1:] != x.shape[1:]:
        raise ValueError(f"torch_glow: expected x and x_init as [N, H, W, C] of one image "
                         f"shape in {path!r}, got {x.shape} and {x_init.shape}.")
    for name, value in (("x", x), ("x_init", x_init)):
        if not np.all(np.isfinite(value)) or value.min() < 0 or value.max() >= 1:
            raise ValueError(f"torch_glow: expected {name} in [0, 1) in {path!r}, got values "
                             f"in [{value.min()}, {value.max()}].")
    return x, x_init


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    warm_up_adam(LEARNING_RATE)
    x_np, x_init_np = load_images(args.data)
    batch, image_shape = len(x_np), x_np.shape[1:]
    dims = math.prod(image_shape)

    def centred_nchw(images: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray((images - 0.5).transpose(0, 3, 1, 2)))

    x, x_init = centred_nchw(x_np), centred_nchw(x_init_np)
    out: dict = {"rss_imported": common.rss_bytes()}

    start = time.perf_counter()
    model = build_glow(image_shape, levels=args.levels, steps=args.steps, hidden=args.hidden)
    out["params"] = count_params(model)
    out["build_s"] = time.perf_counter() - start
    start = time.perf_counter()
    with torch.no_grad():
        model.log_prob(x_init, None)  # normflows' ActNorms initialise on their first call
    out["init_s"] = time.perf_counter() - start
    state: dict = {}

    def train() -> float:
        if not state:  # the first step builds Adam, as Keras builds its optimizer then
            optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
            state["optimizer"] = optimizer
            state["schedule"] = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: min(1.0, (step + 1) / WARMUP_STEPS))
        loss = -model.log_prob(x, None).mean() / dims
        if adam_step(state["optimizer"], loss):
            state["schedule"].step()
        return float(loss.detach())

    def log_prob() -> None:
        with torch.no_grad():
            model.log_prob(x, None)

    def draw(index: int, temperature: float) -> np.ndarray:
        del index  # torch draws from its global generator, seeded once above
        with torch.no_grad():
            samples, _ = model.sample(batch, temperature=temperature)
        return (samples + 0.5).numpy()

    out.update(common.measure_speed(train, log_prob, draw, batch=batch, warmup=args.warmup,
                                    repeats=args.repeats, cap_s=args.phase_seconds,
                                    phases=args.phases, traced=False))
    out.update(library=f"normflows {nf.__version__}", threads=torch.get_num_threads(),
               omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
               versions={"python": platform.python_version(), "torch": torch.__version__,
                         "numpy": np.__version__})
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--data", required=True,
                        help="npz with x (the training batch) and x_init, NHWC in [0, 1)")
    for name, value, text in (("levels", 2, "scales, L"), ("steps", 8, "steps per scale, K"),
                              ("hidden", 64, "coupling networks' width"),
                              ("threads", 2, "torch intra-op threads")):
        parser.add_argument(f"--{name}", type=int, default=value,
                            help=f"{text} (default {value})")
    parser.add_argument("--phases", choices=("all", "train"), default="all",
                        help="all (default) or train: the first step and training only")
    parser.add_argument("--params_only", action="store_true",
                        help="print the model's trainable parameter count (PARAMS n) and stop")
    common.add_speed_protocol_flags(parser)
    args = parser.parse_args(argv)
    for flag in ("levels", "steps", "hidden", "threads", "warmup", "repeats"):
        if getattr(args, flag) < 1:
            parser.error(f"expected --{flag} >= 1, got {getattr(args, flag)}")
    if args.params_only:
        model = build_glow(load_images(args.data)[0].shape[1:], levels=args.levels,
                           steps=args.steps, hidden=args.hidden)
        print(f"PARAMS {count_params(model)}")
        return
    common.print_result(run(args))


if __name__ == "__main__":
    main()
