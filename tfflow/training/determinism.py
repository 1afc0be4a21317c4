"""Reproducible training: TensorFlow's op determinism and every seed, in one switch.

What makes two runs with the same config and seed differ: kernels whose
summation order varies (GPU kernels with atomic adds; some multi-threaded CPU
kernels), and anything that follows the clock. The first is TensorFlow's op
determinism; the second is `train`'s business (with `TrainConfig.deterministic`
its learning-rate schedule follows the steps only). Measured on 2 CPU cores,
the default Glow was bit-identical from run to run with op determinism off
and on; the spread between runs came from the clock (README: Reproducible
runs). `tfflow-train --deterministic` turns both on; in your own code, call
`enable_determinism(seed)` before building the model and the data pipeline.

Example:

    from tfflow.training import enable_determinism
    enable_determinism(0)             # seeds Python, NumPy, TF; op determinism on
    model = tfflow.models.Glow(...)   # two runs of this script end bit-identical
"""

from __future__ import annotations

import keras
import tensorflow as tf

__all__ = ["enable_determinism"]


def enable_determinism(seed: int) -> None:
    """Seeds Python's, NumPy's, TensorFlow's and Keras's generators and turns on op determinism.

    `tf.config.experimental.enable_op_determinism()` makes every op choose a
    deterministic kernel (fixed summation orders, `tf.data` keeps element
    order) and raise `UnimplementedError` where none exists; random ops then
    need a seed, which `keras.utils.set_random_seed(seed)` provides. It stays on
    for the rest of the process (TensorFlow has no public switch back).

    Args:
      seed: An integer in [0, 2**32 - 1].
    """
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
