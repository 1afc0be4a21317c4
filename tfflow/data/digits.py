"""The embedded 8x8 handwritten digits: 1,797 real images, 17 grey levels, no download.

Stored in `tfflow/_data/digits.npz` (see its README) with a fixed train/test
split; validation is carved from the end of the (already shuffled) training
rows.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import tensorflow as tf

from tfflow.data.core import Batching, DatasetInfo, Source, check_split
from tfflow.data.pipelines import image_batches

__all__ = ["DIGITS_PATH", "DigitsSource", "NUM_LEVELS"]

DIGITS_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "_data", "digits.npz")
NUM_LEVELS = 17


class DigitsSource(Source):
    """The embedded digits: images [8, 8, 1] with levels 0..16 and labels 0..9.

    Args:
      where: The public function resolving it (starts error messages).
      validation_fraction: Share of the 1,437 training rows held out as
        "validation", in [0, 1).
    """

    def __init__(self, *, where: str, validation_fraction: float = 0.1) -> None:
        super().__init__("digits", where=where)
        self.validation_fraction = validation_fraction

    def info(self) -> DatasetInfo:
        return DatasetInfo(name="digits", kind="image", event_shape=(8, 8, 1),
                           num_levels=NUM_LEVELS, num_classes=10)

    def read(self, split: str, batching: Batching) -> tf.data.Dataset:
        images, labels = self._split(split)
        return image_batches(tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int32))),
                             len(labels), NUM_LEVELS, 1, batching)

    def array(self, split: str) -> np.ndarray:
        """The split's integer levels, uint8 [N, 8, 8, 1]."""
        return self._split(split)[0]

    def _split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        check_split(self._where, self.name, split)
        arrays = _digits_arrays()
        if split == "test":
            return arrays["test_images"], arrays["test_labels"]
        # The stored training rows are already in a fixed random order, so the
        # last rows are a random, fixed validation subset.
        images, labels = arrays["train_images"], arrays["train_labels"]
        num_train = len(labels) - int(round(self.validation_fraction * len(labels)))
        if split == "train":
            return images[:num_train], labels[:num_train]
        if num_train == len(labels):
            raise ValueError(f"{self._where}: the validation split of 'digits' is empty with "
                             f"validation_fraction={self.validation_fraction}; expected a "
                             "fraction > 0.")
        return images[num_train:], labels[num_train:]


@functools.cache
def _digits_arrays() -> dict[str, np.ndarray]:
    with np.load(DIGITS_PATH) as stored:
        return {key: stored[key] for key in stored.files}
