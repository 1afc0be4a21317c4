"""tfflow's vector flows vs TFP and PyTorch flows on 2-D toy densities, equal budget per model.

    python benchmarks/quality_toy2d.py                   # 60 s per model and data set, CPU
    python benchmarks/quality_toy2d.py --seconds 10      # smoke test
    python benchmarks/quality_toy2d.py --datasets checkerboard --models nsf,tfp_maf --repeats 3

Models:

* realnvp: `tfflow.models.RealNVP((2,))`: `--num_couplings` affine couplings with
  alternating masks, MLP conditioners (`--hidden` x 2, zero-initialised output).
* maf, nsf, iaf: `tfflow.models.MAF((2,))`, `NSF((2,))`, `IAF((2,))` with their
  DEFAULT settings (the issue's protocol): the data's standardisation and the
  Gaussian fit as the data side (an untrained model is that fit, and it counts
  as epoch 0 of early stopping), then MADE layers (128, 128) with affine or
  8-bin spline transforms, the order reversed between layers.
* tfp_realnvp: `--num_couplings` x `tfp.bijectors.RealNVP(num_masked=1)`, `tfb.Permute`
  between them, tf_keras MLP conditioners as `tfb.real_nvp_default_template` builds them.
* tfp_maf: `--num_couplings` x `tfp.bijectors.MaskedAutoregressiveFlow` on
  `tfb.AutoregressiveNetwork(params=2, hidden_units=[--hidden] * 2)`, `tfb.Permute`
  between them.
* zuko_nsf, zuko_maf, normflows_nsf: the PyTorch libraries' defaults, run by
  benchmarks/torch_peers.py in the benchmark-only virtualenv given by
  `--peer_python` (benchmarks/peers_requirements.md); skipped when it is absent.

All tfflow/TFP models: standard-normal base, batch 256, Adam lr 1e-3 with a
200-step linear warm-up, the data set's "train" split (20,000 points), the best
"validation" weights (2,000 points, evaluated every epoch) restored, scored on
the "test" split (5,000 points) in nats per example. The clock starts before
the first trace. The PyTorch peers follow the same protocol in torch_peers.py.

"gap to true density" is test NLL minus the true density's NLL on the same
test points: an estimate of KL(true || model), the issue's "KL gap". It is
known for two_moons (the arcs' Gaussian-noise density by quadrature),
eight_gaussians (closed form) and checkerboard (log 32 on the support). "gap
to entropy" subtracts the true differential entropy instead (KL plus the
test sample's own offset). A full-covariance Gaussian fitted to the training
points is printed for scale.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  pylint: disable=wrong-import-position

TFFLOW_MODELS = ("realnvp", "maf", "nsf", "iaf")
TFP_MODELS = ("tfp_realnvp", "tfp_maf")
TORCH_MODELS = ("zuko_nsf", "zuko_maf", "normflows_nsf")
MODELS = TFFLOW_MODELS + TFP_MODELS + TORCH_MODELS
DEFAULT_MODELS = ("realnvp", "maf", "nsf", "tfp_maf", "zuko_nsf", "zuko_maf")
LABELS = {"realnvp": "tfflow RealNVP", "maf": "tfflow MAF", "nsf": "tfflow NSF",
          "iaf": "tfflow IAF", "tfp_realnvp": "tfb.RealNVP stack",
          "tfp_maf": "tfb.MaskedAutoregressiveFlow stack", "zuko_nsf": "zuko NSF",
          "zuko_maf": "zuko MAF", "normflows_nsf": "normflows NSF"}
TARGETS = {"two_moons": 0.03, "eight_gaussians": 0.10, "checkerboard": 0.05}


def eight_gaussians_nll(points):
    """-log p(x) under the true eight_gaussians density (nats per point).

    The mixture as `tfflow.data` documents it: 8 equal isotropic Gaussians of
    std sqrt(2)/4 centred on the circle of radius 2 sqrt(2) at angles k pi/4.
    """
    import numpy as np  # pylint: disable=import-outside-toplevel
    radius, std = 2.0 * math.sqrt(2.0), math.sqrt(2.0) / 4.0
    angles = np.arange(8) * math.pi / 4.0
    centres = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return -_log_mean_gaussians(points, centres, std)


def two_moons_nll(points, nodes: int = 4096):
    """-log p(x) under the true two_moons density, by midpoint quadrature over the arcs.

    As `tfflow.data` documents it: a moon is picked with probability 1/2, an
    angle uniformly on its half circle of radius 2 (upper: centre (-1, -0.5),
    angles [0, pi]; lower: centre (1, 0.5), angles [pi, 2 pi]), and isotropic
    noise of std 0.2 is added. 4,096 nodes per arc are ~0.0015 apart, far below
    the noise scale.
    """
    import numpy as np  # pylint: disable=import-outside-toplevel
    angles = (np.arange(nodes) + 0.5) * math.pi / nodes
    upper = np.array([-1.0, -0.5]) + 2.0 * np.stack([np.cos(angles), np.sin(angles)], 1)
    lower = np.array([1.0, 0.5]) + 2.0 * np.stack([np.cos(angles + math.pi),
                                                    np.sin(angles + math.pi)], 1)
    return -_log_mean_gaussians(points, np.concatenate([upper, lower]), 0.2)


def _log_mean_gaussians(points, centres, std):
    """log of the equal-weight mixture of N(centre, std^2 I) at `points` [N, 2]."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    out = []
    for chunk in np.array_split(points, max(1, len(points) // 500)):
        sq = ((chunk[:, None, :] - centres[None]) ** 2).sum(-1)
        log_c = -sq / (2.0 * std**2) - math.log(2.0 * math.pi * std**2 * len(centres))
        peak = log_c.max(axis=1)
        out.append(peak + np.log(np.exp(log_c - peak[:, None]).sum(axis=1)))
    return np.concatenate(out)


def true_nll(dataset, points):
    """The true density's NLL on `points`, per point, or None where it is not known."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    if dataset == "eight_gaussians":
        return eight_gaussians_nll(points)
    if dataset == "two_moons":
        return two_moons_nll(points)
    if dataset == "checkerboard":  # uniform on the 8 dark squares (area 32)
        return np.full(len(points), math.log(32.0))
    return None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_flags(parser, seconds=60.0)
    parser.add_argument("--datasets", default="two_moons,eight_gaussians,checkerboard",
                        help="comma-separated toy densities (tfflow.data.TOY_DATASETS)")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help=f"comma-separated subset of: {', '.join(MODELS)}")
    parser.add_argument("--num_couplings", type=int, default=8,
                        help="flow layers of realnvp and the TFP stacks")
    parser.add_argument("--hidden", type=int, default=128,
                        help="units of each of the 2 hidden layers (realnvp, TFP stacks)")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--warmup_steps", type=int, default=200)
    parser.add_argument("--peer_python", default="/work/bench-venv/bin/python",
                        help="python of the PyTorch virtualenv (benchmarks/peers_requirements.md)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    device, models, workdir = common.start_run(args, MODELS, TORCH_MODELS, prefix="toy2d_")

    import keras  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tensorflow_probability as tfp  # pylint: disable=import-outside-toplevel
    import tf_keras  # pylint: disable=import-outside-toplevel

    import tfflow  # pylint: disable=import-outside-toplevel
    from tfflow import data as tfdata  # pylint: disable=import-outside-toplevel

    tfb, tfd = tfp.bijectors, tfp.distributions
    datasets = common.subset("datasets", args.datasets, tfdata.TOY_DATASETS)
    hidden = (args.hidden, args.hidden)

    print(f"batch {args.batch_size}, Adam lr {args.learning_rate:g}, warm-up "
          f"{args.warmup_steps} steps; {args.seconds:g} s ({args.clock} clock) per model and "
          f"data set, {args.repeats} repeat(s)")

    # --------------------------------------------------------------------------- models
    def build_tfflow(name, seed):
        keras.utils.set_random_seed(seed)
        if name == "realnvp":
            return tfflow.models.RealNVP((2,), num_couplings=args.num_couplings,
                                         hidden_units=hidden)
        return tfflow.models.build(name, (2,))

    def tfp_chain(make_layer):
        layers, nets = [], []
        for k in range(args.num_couplings):
            bijector, net = make_layer()
            layers.append(bijector)
            nets.append(net)
            if k < args.num_couplings - 1:
                layers.append(tfb.Permute([1, 0]))
        flow = tfb.Chain(layers[::-1])
        dist = tfd.TransformedDistribution(tfd.Sample(tfd.Normal(0., 1.), [2]), flow)
        variables = [v for net in nets for v in net.trainable_variables]
        return dist, variables

    def maf_layer():
        net = tfb.AutoregressiveNetwork(params=2, event_shape=[2], hidden_units=list(hidden),
                                        activation="relu")
        net(tf.zeros([1, 2]))  # creates the weights now, outside tf.function
        return tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=net), net

    def build_tfp(kind, seed):
        if kind == "tfp_realnvp":
            make_distribution, variables = common.tfp_realnvp_stack(
                2, num_couplings=args.num_couplings, hidden_units=hidden, seed=seed)
            return make_distribution(), variables
        tf.random.set_seed(seed)
        tf_keras.utils.set_random_seed(seed)
        return tfp_chain(maf_layer)

    # ------------------------------------------------------------------------- training
    def run(name, seed, arrays, train_dataset, val_batches, test_batches):
        clock = common.Clock(args.clock)
        if name in TORCH_MODELS:
            return common.torch_peer(args.peer_python, name, arrays, args.seconds, seed=seed,
                                     clock=args.clock, workdir=workdir)
        if name in TFFLOW_MODELS:
            return common.fit_vector_model(
                build_tfflow(name, seed), arrays, clock, args.seconds,
                batch_size=args.batch_size, learning_rate=args.learning_rate,
                warmup_steps=args.warmup_steps, seed=seed)
        dist, trainable = build_tfp(name, seed)
        return common.fit_tfp_flow(dist, trainable, 2, train_dataset, val_batches, test_batches,
                                   clock, args.seconds, learning_rate=args.learning_rate,
                                   warmup_steps=args.warmup_steps)

    summary_rows = []
    for dataset in datasets:
        info = tfdata.info(dataset)
        entropy = info.true_entropy
        arrays = {split: tfdata.load_array(dataset, split) for split in tfdata.SPLITS}
        gaussian = tfdata.fit_gaussian_nll(arrays["train"], arrays["test"])
        truth = true_nll(dataset, arrays["test"])
        oracle = None if truth is None else float(truth.mean())
        print(f"\n== {dataset}: train/validation/test = "
              + "/".join(str(len(arrays[s])) for s in tfdata.SPLITS)
              + f"; fitted Gaussian test NLL {gaussian:.3f} nats"
              + (f"; true entropy {entropy:.3f}" if entropy is not None else "")
              + (f"; true density's test NLL {oracle:.3f}" if oracle is not None else ""))
        val_batches = [tf.constant(arrays["validation"], tf.float32)]
        test_batches = [tf.constant(arrays["test"], tf.float32)]
        results = {m: [] for m in models}
        for seed, name in common.interleaved_runs(models, args.repeats, args.seed):
            train_dataset = tfdata.load(dataset, "train", batch_size=args.batch_size,
                                        shuffle=True, seed=seed, drop_remainder=True)
            stats = run(name, seed, arrays, train_dataset, val_batches, test_batches)
            results[name].append(stats)
            print(f"[{dataset}, seed {seed}] {LABELS[name]}: test NLL "
                  f"{stats['test_nll']:.4f} nats; {stats['steps']} steps, {stats['epochs']} "
                  f"epochs (best {stats['best_epoch']}), {stats['train_s']:.0f} s wall"
                  + (", DIVERGED" if stats["diverged"] else ""), flush=True)
        medians = {m: common.median([r["test_nll"] for r in results[m]]) for m in models}
        peers = [m for m in models if m not in TFFLOW_MODELS]
        best_peer = min((medians[m] for m in peers), default=float("nan"))
        for name in models:
            runs = results[name]
            summary_rows.append([
                dataset, LABELS[name], medians[name],
                medians[name] - best_peer if name in TFFLOW_MODELS and peers else float("nan"),
                medians[name] - oracle if oracle is not None else float("nan"),
                medians[name] - entropy if entropy is not None else float("nan"),
                int(common.median([r["steps"] for r in runs])),
                f"{common.median([r['epochs'] for r in runs]):.0f} "
                f"({common.median([r['best_epoch'] for r in runs]):.0f})"])
        summary_rows.append([dataset, "fitted Gaussian", gaussian, float("nan"),
                             gaussian - oracle if oracle is not None else float("nan"),
                             gaussian - entropy if entropy is not None else float("nan"),
                             "-", "-"])

    print()
    print(f"toy 2-D, {args.seconds:g} s ({args.clock} clock) per model, {device}; "
          f"{'median of ' + str(args.repeats) + ' seeds' if args.repeats > 1 else 'one seed'}; "
          "best-validation weights; test NLL in nats per example (lower is better)")
    common.print_table(["data", "model", "test NLL", "tfflow - best peer",
                        "gap to true density", "gap to entropy", "steps", "epochs (best)"],
                       summary_rows)
    print("targets (issue 11), gap to true density at default settings: "
          + ", ".join(f"{d} <= {t:g}" for d, t in TARGETS.items()) + " nats.")


if __name__ == "__main__":
    main()
