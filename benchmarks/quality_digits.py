"""tfflow Glow vs tfp.bijectors.Glow on the embedded 8x8 digits, equal wall-clock budget.

    python benchmarks/quality_digits.py                  # 120 s per model, CPU
    python benchmarks/quality_digits.py --seconds 20     # smoke test
    python benchmarks/quality_digits.py --repeats 3      # medians over seeds 0, 1, 2

Both models: L=2 levels of K=8 steps (ActNorm -> LU 1x1 conv -> affine coupling
with a conv3x3-ReLU-conv1x1-ReLU-conv3x3 network of `hidden` channels), half the
channels factored out after the first level, batch 64, Adam lr 1e-3 with a
200-step linear warm-up (tfflow's default `compile()`), trained on the digits
"train" split (1,293 images, reshuffled every epoch, full batches only; 144 more
are the "validation" split) and scored on
the 360 "test" images. The parameter counts are printed and must agree within
10%.

Protocol (benchmarks/common.py): the clock starts before the ActNorm
initialisation and the first trace; training stops after the first step past
`--seconds`; the validation split is evaluated after every epoch and the best
validation weights are restored before scoring. Test bits/dim are averaged over
`--eval_passes` draws of dequantisation noise, the same draws for both models.

Data: `tfflow.data.load("digits")` gives x = (k + u) / 17 in [0, 1), k in 0..16.
tfflow's Glow centres the data itself (x - 0.5). The TFP Glow is fed x - 0.5 as
well (its docstring fixes no range; a shift has log-det 0, so its NLL is also
the NLL of x). Both NLLs are densities of x on [0, 1)^64, so
bits/dim = (NLL_nats + 64 log 17) / (64 ln 2).

What differs by design (each library's own choices, not tuned here): tfflow's
affine couplings use a tanh-bounded log-scale and it has Glow's learned split
and top priors; tfb.Glow uses sigmoid(h + 2) scales, an exp(h + 2)-scaled
split coupling and a fixed N(0, I) top. tfflow trains through `keras.Model.fit`
(the user's path); tfb.Glow through a plain `tf.function` step with tf_keras Adam.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  pylint: disable=wrong-import-position

DATASET = "digits"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_flags(parser, seconds=120.0)
    parser.add_argument("--levels", type=int, default=2, help="L (both models)")
    parser.add_argument("--steps_per_level", type=int, default=8, help="K (both models)")
    parser.add_argument("--hidden_tfflow", type=int, default=64,
                        help="tfflow Glow hidden_channels")
    parser.add_argument("--hidden_tfp", type=int, default=64,
                        help="tfb.GlowDefaultNetwork num_hidden")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--warmup_steps", type=int, default=200)
    parser.add_argument("--eval_passes", type=int, default=4,
                        help="dequantisation-noise draws of the test set averaged in the score")
    parser.add_argument("--models", default="tfflow,tfp",
                        help="comma-separated subset of: tfflow, tfp")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    device = common.setup_device(args.device)

    import keras  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tfflow  # pylint: disable=import-outside-toplevel
    from tfflow import data as tfdata  # pylint: disable=import-outside-toplevel

    info = tfdata.info(DATASET)
    shape, dims, levels = info.event_shape, info.num_dims, info.num_levels
    models = common.subset("models", args.models, ("tfflow", "tfp"))

    print(f"device: {device}; {common.code_version()}")
    print(f"data: {DATASET} {shape}, {levels} levels; train/validation/test = "
          + "/".join(str(len(tfdata.load_array(DATASET, s))) for s in tfdata.SPLITS))
    print(f"architecture: L={args.levels}, K={args.steps_per_level}, batch {args.batch_size}, "
          f"Adam lr {args.learning_rate:g}, warm-up {args.warmup_steps} steps; "
          f"{args.seconds:g} s ({args.clock} clock) per model, {args.repeats} repeat(s)")

    # Fixed evaluation batches, identical for every model.
    val_batches = common.materialise(
        tfdata.load(DATASET, "validation", batch_size=256, seed=10_000 + args.seed))
    val_dataset = tf.data.Dataset.from_tensor_slices(tf.concat(val_batches, 0)).batch(256)
    test_batches = common.materialise(
        tfdata.load(DATASET, "test", batch_size=256, seed=20_000 + args.seed),
        passes=args.eval_passes)
    train_eval_batches = common.materialise(
        tfdata.load(DATASET, "train", batch_size=256, shuffle=False, seed=30_000 + args.seed))

    def to_bpd(nll_nats):
        return float(tfdata.bits_per_dim(nll_nats, dims, levels))

    def score(log_prob_fn, stats):
        stats["test_nll"] = common.mean_nll(log_prob_fn, test_batches)
        stats["test_bpd"] = to_bpd(stats["test_nll"])
        stats["train_bpd"] = to_bpd(common.mean_nll(log_prob_fn, train_eval_batches))
        stats["val_bpd"] = to_bpd(common.mean_nll(log_prob_fn, val_batches))
        return stats

    def initialization_batch(train_dataset, size=512):
        xs, count = [], 0
        for x in train_dataset:
            xs.append(x)
            count += int(x.shape[0])
            if count >= size:
                break
        return tf.concat(xs, 0)[:size]

    # ------------------------------------------------------------------------ tfflow
    def build_tfflow(seed):
        keras.utils.set_random_seed(seed)
        model = tfflow.models.Glow(shape, scales=args.levels,
                                   steps_per_scale=args.steps_per_level,
                                   hidden_channels=args.hidden_tfflow, num_levels=levels,
                                   seed=seed)
        return model, common.count_params(model.trainable_variables)

    def run_tfflow(seed, train_dataset):
        model, _ = build_tfflow(seed)
        model.compile(learning_rate=args.learning_rate, warmup_steps=args.warmup_steps)
        clock = common.Clock(args.clock)
        callbacks, stats = common.keras_budget_callbacks(clock, args.seconds)
        # fit() runs the ActNorm initialisation (512 training images) before the first step.
        model.fit(train_dataset, validation_data=val_dataset, epochs=1_000_000,
                  callbacks=callbacks, verbose=0)
        return score(model.log_prob, stats)

    # --------------------------------------------------------------------------- TFP
    def build_tfp(seed):
        glow, make_distribution = common.tfp_glow(shape, levels=args.levels,
                                                  steps_per_level=args.steps_per_level,
                                                  hidden=args.hidden_tfp, seed=seed)
        return glow, make_distribution(), common.count_params(glow.trainable_variables)

    def run_tfp(seed, train_dataset):
        glow, dist, _ = build_tfp(seed)
        trainable = list(glow.trainable_variables)
        optimizer = common.tf_keras_warmup_adam(args.learning_rate, args.warmup_steps)
        # No input_signature: tfb.Glow's Reshape fails on an unknown batch size
        # (int32/int64 ConcatV2), so each batch shape gets its own trace.

        @tf.function
        def log_prob(x):
            return dist.log_prob(x - 0.5)

        @tf.function
        def train_step(x):
            with tf.GradientTape() as tape:
                loss = -tf.reduce_mean(dist.log_prob(x - 0.5)) / dims
            gradients = tape.gradient(loss, trainable)
            optimizer.apply_gradients(zip(gradients, trainable))
            return loss

        def val_loss():
            return common.mean_nll(log_prob, val_batches) / dims

        clock = common.Clock(args.clock)
        # tfb.Glow's ActNorms initialise themselves lazily on their first call:
        # make that call on the same 512 training images tfflow's fit() uses.
        dist.log_prob(initialization_batch(train_dataset) - 0.5)
        stats = common.train_custom(train_step, val_loss, glow.variables, train_dataset,
                                    clock, args.seconds)
        return score(log_prob, stats)

    builders = {"tfflow": build_tfflow, "tfp": build_tfp}
    runners = {"tfflow": run_tfflow, "tfp": run_tfp}
    labels = {"tfflow": f"tfflow Glow (hidden {args.hidden_tfflow})",
              "tfp": f"tfb.Glow (hidden {args.hidden_tfp})"}
    params = {m: builders[m](args.seed)[-1] for m in models}
    print("parameters:")
    common.check_params_close({labels[m]: params[m] for m in models})

    results: dict[str, list[dict]] = {m: [] for m in models}
    for seed, name in common.interleaved_runs(models, args.repeats, args.seed):
        # drop_remainder: the 1,293 % 64 = 13 leftover images (different ones every
        # epoch, as the split is reshuffled) would cost each model a second trace.
        train_dataset = tfdata.load(DATASET, "train", batch_size=args.batch_size,
                                    shuffle=True, seed=seed, drop_remainder=True)
        stats = runners[name](seed, train_dataset)
        results[name].append(stats)
        print(f"[seed {seed}] {labels[name]}: test {stats['test_bpd']:.3f} bits/dim, "
              f"train {stats['train_bpd']:.3f}, val {stats['val_bpd']:.3f}; "
              f"{stats['steps']} steps, {stats['epochs']} epochs (best {stats['best_epoch']}), "
              f"{stats['train_s']:.0f} s wall / {stats['cpu_s']:.0f} s CPU, "
              f"first step at {stats['first_step_s']:.1f} s"
              + (", DIVERGED" if stats["diverged"] else ""), flush=True)

    print()
    print(f"digits, {args.seconds:g} s ({args.clock} clock) per model, {device}; "
          f"{'median of ' + str(args.repeats) + ' seeds' if args.repeats > 1 else 'one seed'}; "
          "best-validation weights")
    header = ["model", "params", "test bits/dim", "train bits/dim", "val bits/dim", "steps",
              "epochs (best)", "wall s", "CPU s", "first step s", "ms/step"]
    rows = []
    for name in models:
        runs = results[name]
        med = lambda key: common.median([r[key] for r in runs])  # noqa: E731
        ms_per_step = common.median([
            1000. * (r["train_s"] - r["first_step_s"]) / max(r["steps"] - 1, 1) for r in runs])
        rows.append([labels[name], params[name], med("test_bpd"), med("train_bpd"),
                     med("val_bpd"), int(med("steps")),
                     f"{med('epochs'):.0f} ({med('best_epoch'):.0f})",
                     f"{med('train_s'):.0f}", f"{med('cpu_s'):.0f}",
                     f"{med('first_step_s'):.1f}", f"{ms_per_step:.0f}"])
    common.print_table(header, rows)
    if len(models) == 2:
        ours = common.median([r["test_bpd"] for r in results["tfflow"]])
        peer = common.median([r["test_bpd"] for r in results["tfp"]])
        verdict = "tfflow better" if ours < peer else "tfflow WORSE"
        print(f"test bits/dim ratio tfflow / tfb.Glow = {ours / peer:.3f} "
              f"(difference {ours - peer:+.3f} bits/dim: {verdict})")
    print("(ms/step includes the per-epoch validation passes; first step includes the "
          "ActNorm initialisation and the trace)")


if __name__ == "__main__":
    main()
