"""Anomaly scores for a table, served from a SavedModel: train, export, score, flag.

What it shows:

1. A table in its own units (here generated in code: machine readings whose
   columns depend on each other, some nonlinearly) modelled by a neural spline
   flow, `tfflow.models.NSF((D,))`. The model standardises the columns itself
   and starts from the full-covariance Gaussian fit, so rows go in raw.
2. `tfflow.export.export_saved_model(model, base)` writes TF Serving's layout,
   `base/1/`. Scoring needs only TensorFlow: `score_rows` loads the SavedModel
   with plain `tf.saved_model.load` and calls its `log_prob` signature, as a
   server would (run `--saved_model=base/1` to score without training; tfflow
   is then never imported).
3. The anomaly score is log p(row) in nats: a row is flagged when it is less
   likely than all but 1% of held-out normal rows. The planted anomalies have
   every value inside its column's normal range; only the relation between
   the columns is broken, which per-column limits would miss.
4. Per-row answers: the signature returns `valid` beside `log_prob`. A row
   holding NaN gets `valid = False` and a NaN score, and every other row of
   the same request is scored as if it were not there.

Run it (from the repository root, with tfflow installed):

    python examples/table_anomaly_scores.py              # ~35 CPU-seconds
    python examples/table_anomaly_scores.py --quick      # 2 short epochs: a smoke test
    TFFLOW_EXAMPLES_QUICK=1 python examples/table_anomaly_scores.py
    python examples/table_anomaly_scores.py --saved_model=anomaly_out/model/1   # score only

The last lines printed list the flagged rows and say how many of the planted
anomalies were among them.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil

import numpy as np

COLUMNS = ("load_kw", "temperature_c", "vibration_mm_s", "pressure_kpa")
PLANTED = 5  # anomalies appended to the incoming rows


def make_table(rng: np.random.Generator, n: int) -> np.ndarray:
    """`n` normal rows [n, 4] of a machine's readings, float32, in their own units.

    Temperature follows the load linearly, vibration grows exponentially with
    it, pressure oscillates with it: a density with curved ridges.
    """
    load = rng.gamma(4.0, 8.0, n)
    temperature = 20. + 0.6 * load + rng.normal(0., 1.5, n)
    vibration = 0.5 * np.exp(load / 40.) * rng.lognormal(0., 0.08, n)
    pressure = 300. + 8. * np.sin(load / 6.) + rng.normal(0., 0.8, n)
    return np.stack([load, temperature, vibration, pressure], 1).astype(np.float32)


def incoming_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """`n` fresh normal rows, then `PLANTED` anomalies, then a row with a NaN reading."""
    normal = make_table(rng, n)
    anomalies = make_table(rng, PLANTED)
    # Each value stays inside its column's normal range; the relations break:
    anomalies[0, 1] = 20. + 0.6 * anomalies[0, 0] - 12.       # too cool for its load
    anomalies[1, 2] = 0.5 * np.exp(anomalies[1, 0] / 40.) * 1.6  # shaking
    anomalies[2, 3] = 300. + 8. * np.sin(anomalies[2, 0] / 6.) + 7.  # pressure off its curve
    anomalies[3, 1] = 20. + 0.6 * anomalies[3, 0] + 10.       # too hot
    anomalies[4, 2] = 0.5 * np.exp(anomalies[4, 0] / 40.) / 2.2  # suspiciously still
    broken = np.full([1, len(COLUMNS)], 40., np.float32)
    broken[0, 2] = np.nan                                     # a sensor that dropped out
    return np.concatenate([normal, anomalies, broken]).astype(np.float32)


def train_and_export(rows: np.ndarray, base: pathlib.Path, *, quick: bool) -> pathlib.Path:
    """Fits an NSF to `rows` [N, D] and exports it under `base`; returns `base/1`."""
    import keras

    import tfflow

    keras.utils.set_random_seed(0)
    split = int(0.9 * len(rows))
    model = tfflow.models.NSF((rows.shape[1],), hidden_units=(32, 32) if quick else (64, 64))
    epochs = 2 if quick else 40
    steps = epochs * -(-split // 256)
    model.compile(learning_rate=2e-3, warmup_steps=max(1, steps // 10))
    model.fit(rows[:split], validation_data=rows[split:], epochs=epochs, batch_size=256,
              verbose=0)
    nll = -model.log_prob(rows[split:]).numpy().mean()
    print(f"validation NLL: {nll:.3f} nats per row, in the table's own units")
    if base.exists():
        shutil.rmtree(base)
    return tfflow.export.export_saved_model(model, base)


def score_rows(saved_model: str | os.PathLike, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log p(row) [N] in nats, valid [N]) from the SavedModel: TensorFlow only, no tfflow."""
    import tensorflow as tf

    log_prob = tf.saved_model.load(str(saved_model)).signatures["log_prob"]
    answer = log_prob(x=tf.constant(rows, tf.float32))
    return answer["log_prob"].numpy(), answer["valid"].numpy()


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true",
                        default=os.environ.get("TFFLOW_EXAMPLES_QUICK") == "1",
                        help="a small model, 2 epochs (also TFFLOW_EXAMPLES_QUICK=1)")
    parser.add_argument("--output_dir", default="anomaly_out",
                        help="the SavedModel goes to <output_dir>/model/1 (replaced each run)")
    parser.add_argument("--saved_model", default=None,
                        help="score with this SavedModel instead of training one")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    rng = np.random.default_rng(0)
    history = make_table(rng, 4000)                        # what the machine did so far
    normal, fresh = history[:3000], history[3000:]         # fit on these; set the limit on those
    if args.saved_model:
        saved_model = pathlib.Path(args.saved_model)
    else:
        saved_model = train_and_export(normal, pathlib.Path(args.output_dir) / "model",
                                       quick=args.quick)
    print(f"scoring with the SavedModel at {saved_model}")

    # The limit: log p below all but 1% of held-out normal rows.
    held_out, _ = score_rows(saved_model, fresh)
    limit = float(np.quantile(held_out, 0.01))
    print(f"flag rows with log p(row) < {limit:.3f} nats (the 1% quantile of normal rows)")

    rows = incoming_rows(rng, 200)
    log_p, valid = score_rows(saved_model, rows)
    flagged = np.flatnonzero(valid & (log_p < limit))
    planted = set(range(200, 200 + PLANTED))
    print(f"{len(rows)} incoming rows, {int(valid.sum())} valid; flagged rows, least likely first:")
    print("  row  log p (nats)  " + "  ".join(f"{c:>14}" for c in COLUMNS))
    for row in flagged[np.argsort(log_p[flagged])]:
        mark = "  planted" if row in planted else ""
        print(f"  {row:3d}  {log_p[row]:12.3f}  "
              + "  ".join(f"{v:14.3f}" for v in rows[row]) + mark)
    for row in np.flatnonzero(~valid):
        print(f"  {row:3d}  invalid: valid=False, log_p={log_p[row]} (input {rows[row].tolist()})")
    print(f"planted anomalies flagged: {len(planted & set(flagged.tolist()))} of {PLANTED}; "
          f"normal rows flagged: {len(set(flagged.tolist()) - planted)} of 200")


if __name__ == "__main__":
    main()
