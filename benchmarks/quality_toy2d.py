"""tfflow RealNVP vs TFP flows on 2-D toy densities, equal wall-clock budget per model.

    python benchmarks/quality_toy2d.py                   # 60 s per model and data set, CPU
    python benchmarks/quality_toy2d.py --seconds 10      # smoke test
    python benchmarks/quality_toy2d.py --datasets eight_gaussians --repeats 3

Models (parameter counts printed, within 10% of each other):

* tfflow: `tfflow.models.RealNVP((2,))` with its defaults: 8 affine couplings
  with alternating masks, MLP conditioners 128-128 (zero-initialised output),
  batch normalisation between couplings.
* tfp_realnvp: 8 x `tfp.bijectors.RealNVP(num_masked=1)` with `tfb.Permute([1, 0])`
  between them; `shift_and_log_scale_fn` is a tf_keras MLP 1 -> 128 -> 128 -> 2
  (ReLU, zero-initialised output layer so the flow starts as the identity,
  unbounded log-scale, as `tfb.real_nvp_default_template` builds it).
* tfp_maf: 8 x `tfp.bijectors.MaskedAutoregressiveFlow` on
  `tfb.AutoregressiveNetwork(params=2, hidden_units=[128, 128], activation="relu")`,
  with `tfb.Permute([1, 0])` between them. A second peer: the issue asks for
  "the best of the peers you can run here".

All: standard-normal base, batch 256, Adam lr 1e-3 with a 200-step linear
warm-up (tfflow's default `compile()`), the data set's "train" split (20,000
points), the best "validation" weights (2,000 points, evaluated every epoch)
restored, scored on the "test" split (5,000 points) in nats per example. The
clock starts before the first trace. tfflow trains through `keras.Model.fit`;
the TFP flows through a plain `tf.function` step with tf_keras Adam.

For eight_gaussians the true differential entropy (tfflow.data.info) is the
lowest expected test NLL any model can reach; "gap to entropy" is test NLL -
entropy (the issue's measure: KL divergence plus the fixed test sample's own
offset, which is +0.032 nats for tfflow.data's test points). "gap to true
density" subtracts the true density's NLL on the same test points instead: the
KL estimate alone. A full-covariance Gaussian fitted to the training points is
printed for scale.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  pylint: disable=wrong-import-position

MODELS = ("tfflow", "tfp_realnvp", "tfp_maf")
LABELS = {"tfflow": "tfflow RealNVP", "tfp_realnvp": "tfb.RealNVP x8",
          "tfp_maf": "tfb.MaskedAutoregressiveFlow x8"}


def eight_gaussians_nll(points):
    """-log p(x) under the true eight_gaussians density (nats per point).

    The mixture as `tfflow.data` documents it: 8 equal isotropic Gaussians of
    std sqrt(2)/4 centred on the circle of radius 2 sqrt(2) at angles k pi/4.
    `main` checks it against `info("eight_gaussians").true_entropy`.
    """
    import numpy as np  # pylint: disable=import-outside-toplevel
    radius, std = 2.0 * math.sqrt(2.0), math.sqrt(2.0) / 4.0
    angles = np.arange(8) * math.pi / 4.0
    centres = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    sq_dist = ((points[:, None, :] - centres[None]) ** 2).sum(-1)
    log_components = -sq_dist / (2.0 * std**2) - math.log(2.0 * math.pi * std**2 * 8)
    peak = log_components.max(axis=1)
    return -(peak + np.log(np.exp(log_components - peak[:, None]).sum(axis=1)))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_flags(parser, seconds=60.0)
    parser.add_argument("--datasets", default="two_moons,eight_gaussians",
                        help="comma-separated toy densities (tfflow.data.TOY_DATASETS)")
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma-separated subset of: {', '.join(MODELS)}")
    parser.add_argument("--num_couplings", type=int, default=8, help="flow layers (all models)")
    parser.add_argument("--hidden", type=int, default=128,
                        help="units of each of the 2 hidden layers (all models)")
    parser.add_argument("--tfflow_batch_norm", choices=("true", "false"), default="false",
                        help="RealNVP(batch_norm=...) for tfflow (its default on vectors: "
                             "false); a diagnostic switch, the peers have no batch norm")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--warmup_steps", type=int, default=200)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    device = common.setup_device(args.device)

    import keras  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tensorflow_probability as tfp  # pylint: disable=import-outside-toplevel
    import tf_keras  # pylint: disable=import-outside-toplevel

    import tfflow  # pylint: disable=import-outside-toplevel
    from tfflow import data as tfdata  # pylint: disable=import-outside-toplevel

    tfb, tfd = tfp.bijectors, tfp.distributions
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    if not models or set(models) - set(MODELS):
        raise SystemExit(f"--models: expected a subset of {','.join(MODELS)}; got {args.models!r}")
    if not datasets or set(datasets) - set(tfdata.TOY_DATASETS):
        raise SystemExit(f"--datasets: expected some of {tfdata.TOY_DATASETS}; "
                         f"got {args.datasets!r}")
    hidden = (args.hidden, args.hidden)

    print(f"device: {device}; {common.code_version()}")
    print(f"{args.num_couplings} flow layers, MLPs {hidden}, batch {args.batch_size}, tfflow "
          f"batch_norm={args.tfflow_batch_norm}, Adam lr "
          f"{args.learning_rate:g}, warm-up {args.warmup_steps} steps; {args.seconds:g} s "
          f"({args.clock} clock) per model and data set, {args.repeats} repeat(s)")

    # --------------------------------------------------------------------------- models
    def build_tfflow(seed):
        keras.utils.set_random_seed(seed)
        model = tfflow.models.RealNVP((2,), num_couplings=args.num_couplings,
                                      hidden_units=hidden,
                                      batch_norm=args.tfflow_batch_norm == "true")
        return model, list(model.trainable_variables)

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
    def run(name, seed, train_dataset, val_batches, test_batches):
        clock_kind = args.clock
        if name == "tfflow":
            model, _ = build_tfflow(seed)
            model.compile(learning_rate=args.learning_rate, warmup_steps=args.warmup_steps)
            val_dataset = tf.data.Dataset.from_tensor_slices(tf.concat(val_batches, 0)).batch(
                args.batch_size)
            clock = common.Clock(clock_kind)
            callbacks, stats = common.keras_budget_callbacks(clock, args.seconds)
            model.fit(train_dataset, validation_data=val_dataset, epochs=1_000_000,
                      callbacks=callbacks, verbose=0)
            log_prob = model.log_prob
        else:
            dist, trainable = build_tfp(name, seed)
            optimizer = common.tf_keras_warmup_adam(args.learning_rate, args.warmup_steps)

            @tf.function
            def log_prob(x):
                return dist.log_prob(x)

            @tf.function
            def train_step(x):
                with tf.GradientTape() as tape:
                    loss = -tf.reduce_mean(dist.log_prob(x)) / 2.
                gradients = tape.gradient(loss, trainable)
                optimizer.apply_gradients(zip(gradients, trainable))
                return loss

            def val_loss():
                return common.mean_nll(log_prob, val_batches) / 2.

            clock = common.Clock(clock_kind)
            stats = common.train_custom(train_step, val_loss, trainable, train_dataset, clock,
                                        args.seconds)
        stats["test_nll"] = common.mean_nll(log_prob, test_batches)
        return stats

    summary_rows = []
    for dataset in datasets:
        info = tfdata.info(dataset)
        entropy = info.true_entropy
        gaussian = tfdata.fit_gaussian_nll(tfdata.load_array(dataset, "train"),
                                           tfdata.load_array(dataset, "test"))
        print(f"\n== {dataset}: train/validation/test = "
              + "/".join(str(len(tfdata.load_array(dataset, s))) for s in tfdata.SPLITS)
              + f"; fitted Gaussian test NLL {gaussian:.3f} nats"
              + (f"; true entropy {entropy:.3f} nats" if entropy is not None else ""))
        oracle = None
        if dataset == "eight_gaussians":
            # The true density on these 5,000 test points: what a perfect model scores here.
            oracle = float(eight_gaussians_nll(tfdata.load_array(dataset, "test")).mean())
            check = float(eight_gaussians_nll(tfdata.load_array(dataset, "train")).mean())
            print(f"true density's NLL on the test points {oracle:.3f} nats (this test sample "
                  f"sits {oracle - entropy:+.3f} from the entropy; on the training points "
                  f"{check:.3f})")
            if abs(check - entropy) > 0.05:
                print("WARNING: the hard-coded eight_gaussians density disagrees with "
                      "tfflow.data's entropy; ignore the 'gap to true density' column.")
        val_batches = common.materialise(tfdata.load(dataset, "validation", batch_size=2_000))
        test_batches = common.materialise(tfdata.load(dataset, "test", batch_size=5_000))
        if dataset == datasets[0]:
            counts = {LABELS["tfflow"]: common.count_params(build_tfflow(0)[1])} \
                if "tfflow" in models else {}
            counts.update({LABELS[m]: common.count_params(build_tfp(m, 0)[1])
                           for m in models if m != "tfflow"})
            print("parameters:")
            common.check_params_close(counts)
        results = {m: [] for m in models}
        for seed, name in common.interleaved_runs(models, args.repeats, args.seed):
            train_dataset = tfdata.load(dataset, "train", batch_size=args.batch_size,
                                        shuffle=True, seed=seed, drop_remainder=True)
            stats = run(name, seed, train_dataset, val_batches, test_batches)
            results[name].append(stats)
            print(f"[{dataset}, seed {seed}] {LABELS[name]}: test NLL "
                  f"{stats['test_nll']:.4f} nats; {stats['steps']} steps, {stats['epochs']} "
                  f"epochs (best {stats['best_epoch']}), {stats['train_s']:.0f} s wall / "
                  f"{stats['cpu_s']:.0f} s CPU" + (", DIVERGED" if stats["diverged"] else ""),
                  flush=True)
        medians = {m: common.median([r["test_nll"] for r in results[m]]) for m in models}
        peers = [m for m in models if m != "tfflow"]
        best_peer = min((medians[m] for m in peers), default=float("nan"))
        for name in models:
            runs = results[name]
            row = [dataset, LABELS[name], medians[name],
                   medians[name] - best_peer if name == "tfflow" and peers else float("nan"),
                   medians[name] - entropy if entropy is not None else float("nan"),
                   medians[name] - oracle if oracle is not None else float("nan"),
                   int(common.median([r["steps"] for r in runs])),
                   f"{common.median([r['epochs'] for r in runs]):.0f} "
                   f"({common.median([r['best_epoch'] for r in runs]):.0f})"]
            summary_rows.append(row)
        summary_rows.append([dataset, "fitted Gaussian", gaussian, float("nan"),
                             gaussian - entropy if entropy is not None else float("nan"),
                             gaussian - oracle if oracle is not None else float("nan"),
                             "-", "-"])
        if oracle is not None:
            summary_rows.append([dataset, "true density", oracle, float("nan"),
                                 oracle - entropy, 0.0, "-", "-"])

    print()
    print(f"toy 2-D, {args.seconds:g} s ({args.clock} clock) per model, {device}; "
          f"{'median of ' + str(args.repeats) + ' seeds' if args.repeats > 1 else 'one seed'}; "
          "best-validation weights; test NLL in nats per example (lower is better)")
    common.print_table(["data", "model", "test NLL", "tfflow - best peer", "gap to entropy",
                        "gap to true density", "steps", "epochs (best)"], summary_rows)
    print("targets (issue 3): tfflow - best peer <= 0.05 nats; eight_gaussians gap to entropy "
          "<= 0.1 nats. 'gap to true density' = test NLL minus the true density's NLL on the "
          "same test points: the KL estimate without the test sample's own offset.")


if __name__ == "__main__":
    main()
