"""From arrays or TFDS examples to batches: shuffling, repeating, dequantising.

Every source ends in one of three pipelines: `image_batches` for integer levels
(dequantised per batch, `x = (k + u) / B`), `continuous_batches` for real
points, and `gathered_batches` for the rows of a large table held once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from tfflow.data.core import Batching

__all__ = ["continuous_batches", "gathered_batches", "image_batches"]

# (k + u) / B rounds to exactly 1.0 in float32 for the top level when u is
# within 2**-24 of 1; clamping keeps the promise x < 1.
_BELOW_ONE = float(np.nextafter(np.float32(1.0), np.float32(0.0)))


def _shuffle_repeat_batch(ds: tf.data.Dataset, buffer_size: int,
                          batching: Batching) -> tf.data.Dataset:
    if batching.shuffle:
        ds = ds.shuffle(buffer_size, seed=batching.seed, reshuffle_each_iteration=True)
    if batching.repeat:
        ds = ds.repeat()
    return ds.batch(batching.batch_size, drop_remainder=batching.drop_remainder)


def image_batches(ds: tf.data.Dataset, buffer_size: int, num_levels: int, level_divisor: int,
                  batching: Batching) -> tf.data.Dataset:
    """Batches (uint8 levels, int32 label) pairs and dequantises each batch.

    Levels are first divided by `level_divisor` (keeping the top bits of 8-bit
    data), then `x = (k + u) / num_levels` with `u ~ Uniform[0, 1)` drawn by
    stateless ops from one seed per batch: a new stream every epoch,
    reproducible given `batching.seed`.
    """
    ds = _shuffle_repeat_batch(ds, buffer_size, batching)
    noise_seeds = tf.data.Dataset.random(seed=batching.seed + 1, rerandomize_each_iteration=True)

    def dequantise_batch(batch: tuple[tf.Tensor, tf.Tensor], noise_seed: tf.Tensor) -> Any:
        levels, labels = batch
        if level_divisor > 1:
            levels = levels // tf.constant(level_divisor, levels.dtype)
        x = _dequantise(levels, noise_seed, num_levels)
        return (x, labels) if batching.with_labels else x

    ds = tf.data.Dataset.zip((ds, noise_seeds)).map(dequantise_batch,
                                                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _dequantise(levels: tf.Tensor, noise_seed: tf.Tensor, num_levels: int) -> tf.Tensor:
    seed = tf.stack([noise_seed, tf.zeros_like(noise_seed)])
    noise = tf.random.stateless_uniform(tf.shape(levels), seed=seed, dtype=tf.float32)
    x = (tf.cast(levels, tf.float32) + noise) / float(num_levels)
    return tf.minimum(x, _BELOW_ONE)


def continuous_batches(points: np.ndarray, labels: np.ndarray | None,
                       batching: Batching) -> tf.data.Dataset:
    """Batches float32 points (with int32 labels when `batching.with_labels`)."""
    if batching.with_labels:
        ds = tf.data.Dataset.from_tensor_slices((points, labels.astype(np.int32)))
    else:
        ds = tf.data.Dataset.from_tensor_slices(points)
    ds = _shuffle_repeat_batch(ds, len(points), batching)
    return ds.prefetch(tf.data.AUTOTUNE)


def gathered_batches(table: np.ndarray, rows: np.ndarray, batching: Batching) -> tf.data.Dataset:
    """Batches float32 `table[rows]` without copying the table into TensorFlow.

    The indices `rows` are shuffled, repeated and batched exactly as
    `continuous_batches` treats points (a shuffle is blind to what it permutes,
    so the batches are the ones `continuous_batches(table[rows])` gives for the
    same seed), and each batch of indices gathers its rows from `table` by
    NumPy fancy indexing. So a table of any size is held once, by the caller:
    `tf.constant` would copy it (twice its size at peak, measured), and the
    shuffle buffer holds indices instead of rows.

    Args:
      table: [N, D] rows, float32 or float64 (cast to float32 per batch).
      rows: int64 indices into `table`, in the order of an unshuffled pass.
      batching: The checked batching arguments; `with_labels` must be False.
    """
    def gather(index: np.ndarray) -> np.ndarray:
        return table[index].astype(np.float32, copy=False)

    def gather_batch(index: tf.Tensor) -> tf.Tensor:
        x = tf.numpy_function(gather, [index], tf.float32, stateful=False)
        x.set_shape(index.shape.concatenate(table.shape[1:]))
        return x

    ds = _shuffle_repeat_batch(tf.data.Dataset.from_tensor_slices(rows), len(rows), batching)
    return ds.map(gather_batch, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
