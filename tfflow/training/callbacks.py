"""Keras callbacks of `train`: time budget, learning-rate annealing, divergence guard, logs."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "AnnealLearningRate",
    "DivergenceGuard",
    "NonFiniteLoss",
    "ResumableEarlyStopping",
    "TensorBoardLogger",
    "TimeBudget",
]


class TimeBudget(keras.callbacks.Callback):
    """Stops `fit` after the first batch that ends past a wall-clock budget.

    The epoch in progress still runs its validation, so early stopping and
    best-weight restoring see it. `stopped` tells whether the budget fired.
    `seconds_before`: training seconds spent before this `fit` (a resumed run
    keeps its budget).
    """

    def __init__(self, max_seconds: float, *, seconds_before: float = 0.0) -> None:
        super().__init__()
        self.max_seconds = float(max_seconds)
        self.seconds_before = float(seconds_before)
        self.stopped = False
        self._start = 0.0

    def elapsed(self) -> float:
        """Training seconds so far, those before this `fit` included."""
        return time.monotonic() - self._start

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._start = time.monotonic() - self.seconds_before
        self.stopped = False

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if time.monotonic() - self._start > self.max_seconds:
            self.stopped = True
            self.model.stop_training = True


class AnnealLearningRate(keras.callbacks.Callback):
    """Linear warm-up to `peak`, then cosine decay to `final_fraction * peak`.

    The decay runs on the fraction of the run done, `max(steps / total_steps,
    seconds / max_seconds)`, so the rate reaches its floor when the epochs or
    the wall-clock budget run out, whichever comes first: a run cut short by
    the budget still ends on a small learning rate. The rate is set on the
    optimizer before every step (its `learning_rate` must be a float, not a
    schedule) and logged per epoch as "learning_rate".
    """

    def __init__(self, peak: float, *, total_steps: int, warmup_steps: int = 200,
                 max_seconds: float | None = None, final_fraction: float = 0.02,
                 step_before: int = 0, seconds_before: float = 0.0) -> None:
        super().__init__()
        self.peak = float(peak)
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps = int(warmup_steps)
        self.max_seconds = max_seconds or math.inf
        self.final_fraction = float(final_fraction)
        # A resumed run continues the schedule where the interrupted one was.
        self.step_before = int(step_before)
        self.seconds_before = float(seconds_before)
        self.step = self.step_before
        self._start = 0.0

    def learning_rate(self, step: int, seconds: float) -> float:
        """The rate for `step` (0-based) after `seconds` of training."""
        warmup = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps > 0 else 1.0
        done = min(1.0, max(step / self.total_steps, seconds / self.max_seconds))
        cosine = 0.5 * (1.0 + math.cos(math.pi * done))
        return self.peak * warmup * (self.final_fraction + (1.0 - self.final_fraction) * cosine)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._start = time.monotonic() - self.seconds_before
        self.step = self.step_before

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.model.optimizer.learning_rate = self.learning_rate(
            self.step, time.monotonic() - self._start)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.step += 1

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None:
            # Under a strategy the rate is a distributed variable, which float() rejects.
            logs["learning_rate"] = float(tf.convert_to_tensor(self.model.optimizer.learning_rate))


class NonFiniteLoss(RuntimeError):
    """Raised out of `fit` by `DivergenceGuard`: ends training at the step, skipping validation."""

    def __init__(self, *, epoch: int, batch: int, step: int, loss: float) -> None:
        super().__init__(f"non-finite loss {loss} at step {step} (epoch {epoch + 1}, "
                         f"batch {batch + 1})")
        self.epoch, self.batch, self.step, self.loss = epoch, batch, step, loss


class DivergenceGuard(keras.callbacks.Callback):
    """Stops `fit` at the first training step whose loss is NaN or infinite.

    Unlike `keras.callbacks.TerminateOnNaN`, which lets the epoch's validation
    and callbacks run on the broken weights, it raises a `RuntimeError`
    subclass out of `fit` at once, carrying `epoch`, `batch` (0-based) and the
    1-based global `step`. With `restore_last_finite` it copies the weights
    before every step (one traced copy per step) and, on a non-finite loss,
    puts back the weights that produced it, the last finite ones, so that the
    caller can find the layer at fault (`find_non_finite_layer`): the failed
    update itself has usually made every weight NaN.
    """

    def __init__(self, *, restore_last_finite: bool = True) -> None:
        super().__init__()
        self.restore_last_finite = restore_last_finite
        self._variables: list[tf.Variable] = []
        self._copy: Callable[[], list[tf.Tensor]] | None = None
        self._last: list[tf.Tensor] | None = None
        self._epoch = 0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        variables = list(self.model.weights)
        self._variables = variables
        self._copy = tf.function(lambda: [tf.identity(v) for v in variables], autograph=False)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.restore_last_finite and self._copy is not None:
            self._last = self._copy()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        # The logged loss is the epoch's running mean: it turns non-finite at the
        # first non-finite step. (Multi-worker logs are rank 1.)
        loss = float(np.asarray(loss).reshape(-1)[0])
        if math.isfinite(loss):
            return
        step = int(self.model.optimizer.iterations.numpy())
        if self._last is not None:
            for variable, value in zip(self._variables, self._last):
                variable.assign(value)
        raise NonFiniteLoss(epoch=self._epoch, batch=batch, step=step, loss=loss)


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Keras's `EarlyStopping` on "val_loss" whose state survives a restart.

    `state()` is what `Backup` stores; `resume_from(state, best_weights)`
    makes the next `fit` continue with it (Keras resets it in `on_train_begin`).
    """

    def __init__(self, patience: int) -> None:
        super().__init__(monitor="val_loss", mode="min", patience=patience,
                         restore_best_weights=True)
        self._resume: tuple[dict[str, Any], list[np.ndarray] | None] | None = None

    def state(self) -> dict[str, Any]:
        return {"wait": int(self.wait),
                "best": None if self.best is None else float(self.best),
                "best_epoch": int(self.best_epoch)}

    def resume_from(self, state: dict[str, Any], best_weights: list[np.ndarray] | None) -> None:
        self._resume = (state, best_weights)

    def start_from(self, loss: float, weights: list[np.ndarray]) -> None:
        """Counts the model before training (validation loss `loss`) as epoch 0.

        `fit` then keeps and restores those weights unless an epoch beats them: a
        vector model starts as the Gaussian fit, so the run can never end worse
        than that fit on validation. `best_epoch` is -1 (0 when reported 1-based).
        """
        if math.isfinite(loss):
            self._resume = ({"wait": 0, "best": float(loss), "best_epoch": -1}, weights)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        if self._resume is not None:
            state, self.best_weights = self._resume
            self.wait, self.best, self.best_epoch = state["wait"], state["best"], \
                state["best_epoch"]


class TensorBoardLogger(keras.callbacks.Callback):
    """Writes the epoch's logs and pictures of the model as TensorBoard summaries.

    Scalars go to `<log_dir>/train` and `<log_dir>/validation` (tags "loss",
    "bits_per_dim", ...; the "val_" prefix is dropped so TensorBoard overlays
    the two runs), pictures to `<log_dir>/samples`. `pictures(model)` returns
    {tag: uint8 [H, W, C] image}; `train` passes one that draws sample grids at
    T=0.7 and T=1.0 (fixed seed, so epochs compare) for images and the learned
    density beside the data for 2-D data.

    Written with core TensorFlow ops (`tf.summary.write` with TensorBoard's
    plugin metadata), so training does not need the `tensorboard` package;
    viewing does: `pip install tensorboard && tensorboard --logdir <log_dir>`.
    """

    def __init__(self, log_dir: str,
                 pictures: Callable[[keras.Model], dict[str, tf.Tensor]] | None = None) -> None:
        super().__init__()
        self.log_dir = log_dir
        self.pictures = pictures
        self._writers: dict[str, Any] = {}

    def _writer(self, run: str) -> Any:
        if run not in self._writers:
            self._writers[run] = tf.summary.create_file_writer(os.path.join(self.log_dir, run))
        return self._writers[run]

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for key, value in (logs or {}).items():
            run, tag = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            with self._writer(run).as_default():
                tf.summary.write(tag, tf.cast(value, tf.float32), step=epoch,
                                 metadata=_plugin_metadata("scalars"))
        if self.pictures is not None:
            with self._writer("samples").as_default():
                for tag, picture in self.pictures(self.model).items():
                    picture = tf.convert_to_tensor(picture)
                    height, width = picture.shape[0], picture.shape[1]
                    tensor = tf.stack([tf.as_string(width), tf.as_string(height),
                                       tf.io.encode_png(picture)])
                    tf.summary.write(tag, tensor, step=epoch, metadata=_plugin_metadata("images"))
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


def _plugin_metadata(plugin_name: str) -> Any:
    """TensorBoard's SummaryMetadata for a scalar ("scalars") or PNG ("images") summary."""
    from tensorflow.core.framework import summary_pb2  # pylint: disable=import-outside-toplevel
    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin_name))
