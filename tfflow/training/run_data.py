"""The data of a run: its `tfflow.data.Source`, resolved once from the `TrainConfig`.

Everything in training that reads data goes through a `RunData`: it holds the
resolved source and its description, and knows how this run batches (batch
size, seed, labels for a class-conditional model, the TPU's static shapes).
No training code looks at a data set's name.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow as tf

from tfflow import data as tfdata
from tfflow.training.config import TrainConfig
from tfflow.training.errors import UserError

__all__ = ["RunData"]


@dataclasses.dataclass(frozen=True)
class RunData:
    """A run's data source and how the run reads it.

    Attributes:
      source: The resolved `tfflow.data.Source`.
      info: `source.info()`, computed once.
      num_classes: The number of classes a class-conditional model is
        conditioned on; None for an unconditional run.
      context_shape: The shape of one example's context for a run of a
        conditional density p(x | c) (a table with `context_columns`): the
        batches are `(x, c)` pairs; None otherwise.
      batch_size: Examples per training batch (the global batch).
      seed: Seeds shuffling and dequantisation noise.
      drop_remainder: Drop short last batches outside the test split (TPUs
        compile for one static batch shape).
    """

    source: tfdata.Source
    info: tfdata.DatasetInfo
    num_classes: int | None
    batch_size: int
    seed: int
    drop_remainder: bool
    context_shape: tuple[int, ...] | None = None

    @classmethod
    def from_config(cls, config: TrainConfig) -> RunData:
        """Resolves `config`'s data set, once (a table file is read here).

        Raises:
          UserError: for an unknown data set, an unreadable file, arguments
            that do not apply to it, `conditional` on data without labels, or a
            table column that a flow cannot model (`TableSource.check_columns`:
            constant, beyond float32, a linear combination of others), so
            that such a table is refused before training.
        """
        try:
            source = tfdata.source(
                config.dataset, data_dir=config.data_dir, image_size=config.image_size,
                num_bits=config.num_bits, validation_fraction=config.validation_fraction,
                num_examples=config.num_examples, context_columns=config.context_columns)
            info = source.info()
            if isinstance(source, tfdata.TableSource):
                source.check_columns()
        except ValueError as error:
            raise UserError(str(error)) from None
        num_classes = None
        if config.conditional:
            if info.num_classes is None:
                raise UserError(f"conditional=True needs labels, but {source.name!r} has none.")
            num_classes = info.num_classes
        return cls(source=source, info=info, num_classes=num_classes,
                   batch_size=config.batch_size, seed=config.seed,
                   drop_remainder=config.strategy == "tpu", context_shape=info.context_shape)

    @property
    def conditional(self) -> bool:
        """Batches are `(x, labels)` pairs."""
        return self.num_classes is not None

    def unpack(self, batch: Any) -> tuple[Any, Any, Any]:
        """`(x, labels, context)` of a batch; labels or context None where the run has none."""
        if self.conditional:
            return batch[0], batch[1], None
        if self.context_shape is not None:
            return batch[0], None, batch[1]
        return batch, None, None

    def batches(self, split: str, *, shuffle: bool = False,
                batch_size: int | None = None) -> tf.data.Dataset:
        """A standard split ("train", "validation", "test") as this run batches it."""
        try:
            return self.source.dataset(
                split, batch_size=batch_size or self.batch_size, shuffle=shuffle, seed=self.seed,
                with_labels=self.conditional,
                drop_remainder=self.drop_remainder and split != "test")
        except ValueError as error:
            raise UserError(str(error)) from None

    def array(self, split: str) -> np.ndarray:
        """A standard split as one array in the data's own units (in-memory sources).

        For a conditional table, the x columns only (`context_array` has the rest).
        """
        try:
            return self.source.array(split)
        except ValueError as error:
            raise UserError(str(error)) from None

    def context_array(self, split: str) -> np.ndarray | None:
        """A split's contexts [N, C] in the data's own units; None for an unconditional run."""
        if self.context_shape is None:
            return None
        try:
            return self.source.context_array(split)
        except ValueError as error:
            raise UserError(str(error)) from None
