"""tfflow's vector flows vs a Gaussian fit, TFP's MAF and the PyTorch flows on real tables.

    python benchmarks/tables.py                               # builds /tmp/tfflow_tables
    python benchmarks/quality_tabular.py                      # 90 s per model and table
    python benchmarks/quality_tabular.py --seconds 10 --tables macrodata --models maf,nsf

Tables: benchmarks/tables.py (real tables that ship inside installed packages:
tfflow's 8x8 digits as 64-column vectors and statsmodels' data sets, split
train/validation/test, repeated values dequantised), in the file's units.

Models:

* maf, nsf, iaf: `tfflow.models.MAF/NSF/IAF((D,))` with their DEFAULT settings.
  The data side is the table's standardisation and the Gaussian fit, so the
  untrained model is the full-covariance Gaussian; it counts as epoch 0 of the
  early stopping, so no result can be worse on validation than the Gaussian.
* realnvp, nice: `tfflow.models.RealNVP((D,))`, `NICE((D,))`, defaults.
* tfp_maf: 5 x `tfp.bijectors.MaskedAutoregressiveFlow` on
  `tfb.AutoregressiveNetwork(params=2, hidden_units=[128, 128])` with the order
  reversed between them (tfflow MAF's size), on rows standardised with the
  training split's mean and std (the log-det of the standardisation added back).
* zuko_nsf, zuko_maf, normflows_nsf: benchmarks/torch_peers.py in the PyTorch
  virtualenv `--peer_python` (benchmarks/peers_requirements.md); skipped when
  it is absent.

Protocol (all models): Adam lr 1e-3 (tfflow/TFP: 200-step warm-up), batch 256
(512 on tables over 10,000 training rows), the same `--seconds` budget on the
same `--clock`, validation NLL after every epoch, the best validation weights
restored, test NLL per row in nats in the file's units. "margin" is the
Gaussian's test NLL minus the model's: positive means better than the Gaussian.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  pylint: disable=wrong-import-position
import tables  # noqa: E402  pylint: disable=wrong-import-position

TFFLOW_MODELS = ("maf", "nsf", "iaf", "realnvp", "nice")
TORCH_MODELS = ("zuko_nsf", "zuko_maf", "normflows_nsf")
MODELS = TFFLOW_MODELS + ("tfp_maf",) + TORCH_MODELS
LABELS = {"maf": "tfflow MAF", "nsf": "tfflow NSF", "iaf": "tfflow IAF",
          "realnvp": "tfflow RealNVP", "nice": "tfflow NICE", "tfp_maf": "tfb.MAF x5",
          "zuko_nsf": "zuko NSF", "zuko_maf": "zuko MAF", "normflows_nsf": "normflows NSF"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_flags(parser, seconds=90.0)
    parser.add_argument("--tables", default=",".join(tables.TABLES),
                        help=f"comma-separated subset of: {', '.join(tables.TABLES)}")
    parser.add_argument("--directory", default="/tmp/tfflow_tables",
                        help="where benchmarks/tables.py wrote the tables")
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma-separated subset of: {', '.join(MODELS)}")
    parser.add_argument("--peer_python", default="/work/bench-venv/bin/python",
                        help="python of the PyTorch virtualenv (benchmarks/peers_requirements.md)")
    return parser.parse_args(argv)


def batch_size_for(rows: int) -> int:
    return min(rows, 512 if rows > 10_000 else 256)


def main(argv=None):
    args = parse_args(argv)
    device, models, workdir = common.start_run(args, MODELS, TORCH_MODELS, prefix="tabular_")

    import keras  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tensorflow_probability as tfp  # pylint: disable=import-outside-toplevel
    import tf_keras  # pylint: disable=import-outside-toplevel

    import tfflow  # pylint: disable=import-outside-toplevel

    tfb, tfd = tfp.bijectors, tfp.distributions
    names = [t.strip() for t in args.tables.split(",") if t.strip()]
    print(f"{args.seconds:g} s ({args.clock} clock) per model and table, {args.repeats} "
          f"repeat(s); test NLL in nats per row, in the file's units")

    def tfp_maf(arrays, seed, clock, batch_size):
        dims = arrays["train"].shape[1]
        mean, std = arrays["train"].mean(0), arrays["train"].std(0)
        log_det = float(np.log(std).sum())
        standardise = lambda x: ((x - mean) / std).astype(np.float32)  # noqa: E731
        tf.random.set_seed(seed)
        tf_keras.utils.set_random_seed(seed)
        layers, nets = [], []
        for k in range(5):
            net = tfb.AutoregressiveNetwork(params=2, event_shape=[dims],
                                            hidden_units=[128, 128], activation="relu")
            net(tf.zeros([1, dims]))
            nets.append(net)
            layers.append(tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=net))
            if k < 4:
                layers.append(tfb.Permute(list(range(dims))[::-1]))
        dist = tfd.TransformedDistribution(tfd.Sample(tfd.Normal(0., 1.), [dims]),
                                           tfb.Chain(layers[::-1]))
        trainable = [v for net in nets for v in net.trainable_variables]
        train = tf.data.Dataset.from_tensor_slices(standardise(arrays["train"])).shuffle(
            len(arrays["train"]), seed=seed).batch(batch_size)
        stats = common.fit_tfp_flow(dist, trainable, dims, train,
                                    [tf.constant(standardise(arrays["validation"]))],
                                    [tf.constant(standardise(arrays["test"]))], clock,
                                    args.seconds)
        stats["test_nll"] += log_det  # back to the file's units
        return stats

    def run(name, seed, arrays):
        clock = common.Clock(args.clock)
        batch_size = batch_size_for(len(arrays["train"]))
        if name in TORCH_MODELS:
            return common.torch_peer(args.peer_python, name, arrays, args.seconds, seed=seed,
                                     clock=args.clock, workdir=workdir)
        if name == "tfp_maf":
            return tfp_maf(arrays, seed, clock, batch_size)
        keras.utils.set_random_seed(seed)
        model = tfflow.models.build(name, (arrays["train"].shape[1],))
        return common.fit_vector_model(model, arrays, clock, args.seconds,
                                       batch_size=batch_size, seed=seed)

    rows = []
    for table in names:
        arrays = tables.load_table(table, args.directory)
        gaussian = tables.gaussian_nll(arrays["train"], arrays["test"])
        print(f"\n== {table}: {arrays['train'].shape[1]} columns, train/validation/test = "
              f"{len(arrays['train'])}/{len(arrays['validation'])}/{len(arrays['test'])}; "
              f"Gaussian test NLL {gaussian:.3f}", flush=True)
        results = {m: [] for m in models}
        for seed, name in common.interleaved_runs(models, args.repeats, args.seed):
            try:
                stats = run(name, seed, arrays)
            except Exception as error:  # pylint: disable=broad-except  # report, go on
                print(f"[{table}, seed {seed}] {LABELS[name]}: FAILED {error!r}", flush=True)
                continue
            results[name].append(stats)
            print(f"[{table}, seed {seed}] {LABELS[name]}: test NLL {stats['test_nll']:.3f} "
                  f"(Gaussian {gaussian:.3f}); {stats['steps']} steps, {stats['epochs']} "
                  f"epochs (best {stats['best_epoch']})", flush=True)
        medians = {m: common.median([r["test_nll"] for r in results[m]]) for m in models}
        peers = [m for m in models if m not in TFFLOW_MODELS]
        best_peer = min((medians[m] for m in peers), default=math.nan)
        for name in models:
            rows.append([table, LABELS[name], medians[name], gaussian - medians[name],
                         best_peer - medians[name] if name in TFFLOW_MODELS else math.nan,
                         int(common.median([r["steps"] for r in results[name]]) or 0)
                         if results[name] else "-"])
        rows.append([table, "full-covariance Gaussian", gaussian, 0.0, math.nan, "-"])

    print()
    print(f"tables, {args.seconds:g} s ({args.clock} clock) per model, {device}; "
          f"{'median of ' + str(args.repeats) + ' seeds' if args.repeats > 1 else 'one seed'}; "
          "best-validation weights; test NLL in nats per row (lower is better)")
    common.print_table(["table", "model", "test NLL", "margin over Gaussian",
                        "margin over best peer", "steps"], rows)
    print("targets (issue 11): on every table, better than the Gaussian and than every peer.")


if __name__ == "__main__":
    main()
