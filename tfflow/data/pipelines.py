"""From arrays or TFDS examples to batches: shuffling, repeating, dequantising.

Every source ends in one of two pipelines: `image_batches` for integer levels
(dequantised per batch, `x = (k + u) / B`) and `continuous_batches` for real
points and rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from tfflow.data.core import Batching

__all__ = ["continuous_batches", "image_batches"]

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
