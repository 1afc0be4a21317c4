"""Glow on the embedded 8x8 digits, end to end: train, bits/dim, samples, SavedModel.

What it shows, in the order a project needs it:

1. Data without the internet: `tfflow.data.load("digits", ...)` gives dequantised
   images in [0, 1) (17 grey levels), batched and prefetched.
2. A Glow as a Keras model: `compile()` needs no loss (the model minimises its own
   negative log-likelihood), `fit` runs ActNorm's data-dependent initialisation
   first and reports `loss` (nats per dimension) and `bits_per_dim`.
3. Evaluation: test bits/dim over the whole test split (`evaluate`), and per
   example (`bits_per_dim(x)`; `log_prob(x)` is log p(x) in nats per example).
4. Samples at temperature 0.7 with a TFP-style sample shape, `sample((4, 8))`,
   written as a PNG grid with `tfflow.images.write_image_grid`.
5. Export: `model.export(path)` writes a SavedModel with tfflow's signatures
   (`log_prob`, `encode`, `decode`, `sample`); it is reloaded with plain
   `tf.saved_model.load` and must score the test batch as the model does.

Run it (from the repository root, with tfflow installed):

    python examples/glow_digits.py                 # ~1 CPU-minute; test ~2.4 bits/dim
    python examples/glow_digits.py --quick         # a tiny model and 5 steps: a smoke test
    TFFLOW_EXAMPLES_QUICK=1 python examples/glow_digits.py   # the same as --quick

Outputs go to `--output_dir` (default `./glow_digits_out`): `samples_T0.7.png` and
`saved_model/` (replaced on each run). The last lines printed are the test bits/dim
and the largest difference between the SavedModel's and the model's log p(x).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true",
                        default=os.environ.get("TFFLOW_EXAMPLES_QUICK") == "1",
                        help="a tiny model trained for a few steps (also TFFLOW_EXAMPLES_QUICK=1)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs (default 30, or 1 short epoch with --quick)")
    parser.add_argument("--output_dir", default="glow_digits_out",
                        help="where the PNG and the SavedModel go")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    import keras
    import numpy as np
    import tensorflow as tf

    import tfflow
    import tfflow.images

    keras.utils.set_random_seed(0)  # the weights' initial values
    out = pathlib.Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    # 1. Data: the 8x8 digits that ship inside tfflow, dequantised into [0, 1).
    info = tfflow.data.info("digits")
    train = tfflow.data.load("digits", "train", batch_size=64, seed=0)
    test = tfflow.data.load("digits", "test", batch_size=256)

    # 2. The model. --quick: one step per level and 8 hidden channels, 5 batches.
    if args.quick:
        size = dict(scales=2, steps_per_scale=1, hidden_channels=8)
        epochs, steps_per_epoch = args.epochs or 1, 5
    else:
        size = dict(scales=2, steps_per_scale=4, hidden_channels=32)
        epochs, steps_per_epoch = args.epochs or 30, None
    model = tfflow.models.Glow(info.event_shape, num_levels=info.num_levels, **size)
    batches = steps_per_epoch or int(tf.data.experimental.cardinality(train))
    # The learning-rate warm-up: at most a tenth of the planned steps.
    model.compile(learning_rate=2e-3, warmup_steps=max(1, epochs * batches // 10))
    model.fit(train.take(batches), epochs=epochs, verbose=2)

    # 3. Evaluation: the whole test split, then one batch per example.
    results = model.evaluate(test, verbose=0, return_dict=True)
    x = next(iter(test))
    per_example = model.bits_per_dim(x).numpy()
    print(f"per-example test bits/dim of one batch: min {per_example.min():.3f}, "
          f"max {per_example.max():.3f}")

    # 4. Samples: a [4, 8] sample shape of 8x8 images, tiled 8 per row.
    samples = model.sample((4, 8), temperature=0.7, seed=1)
    grid = tfflow.images.write_image_grid(str(out / "samples_T0.7.png"),
                                          tf.reshape(samples, [-1, *info.event_shape]),
                                          num_columns=8)
    print(f"samples {tuple(samples.shape)} at temperature 0.7 -> {grid}")

    # 5. Export with Keras' method, reload with plain TensorFlow, compare.
    target = out / "saved_model"
    if target.exists():
        shutil.rmtree(target)
    model.export(target)
    loaded = tf.saved_model.load(str(target))
    served = loaded.signatures["log_prob"](x=tf.constant(x))
    gap = float(np.max(np.abs(served["log_prob"].numpy() - model.log_prob(x).numpy())))
    print(f"SavedModel at {target}: signatures {sorted(loaded.signatures)}; all rows valid: "
          f"{bool(np.all(served['valid'].numpy()))}")
    print(f"test bits/dim: {results['bits_per_dim']:.4f}")
    print(f"SavedModel log_prob vs model.log_prob: max |difference| {gap:.2e} nats")


if __name__ == "__main__":
    main()
