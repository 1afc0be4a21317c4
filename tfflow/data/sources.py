"""Choosing the source for a name, once: `source`, and the one-call forms `info`, `load`, `load_array`.

A name resolves to exactly one kind of source, in this order: a path ending
in `.npy`/`.csv` is a `TableSource`; "digits" the `DigitsSource`; a name in
`TOY_DATASETS` a `ToySource`; anything else a `TfdsSource` (TFDS names carry
configs such as "celeb_a/align", so a slash does not make a path). Which
arguments apply to which kind is checked here, in one place.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tfflow.data.core import (TABLE_EXTENSIONS, DatasetInfo, Source, check_positive_int,
                              is_int, make_batching)
from tfflow.data.digits import DigitsSource
from tfflow.data.names import EMBEDDED_DATASETS, is_table_file
from tfflow.data.table import TableSource
from tfflow.data.tfds_images import TFDS_IMAGE_DATASETS, TfdsSource, UnknownDatasetName
from tfflow.data.toy import TOY_DATASETS, ToySource

__all__ = ["EMBEDDED_DATASETS", "info", "load", "load_array", "source"]


def source(
    name: str,
    *,
    data_dir: str | None = None,
    image_size: int | None = None,
    num_bits: int | None = None,
    validation_fraction: float = 0.1,
    num_examples: int | None = None,
    context_columns: Sequence[str | int] | str | None = None,
) -> Source:
    """Resolves a data set name (or file path) into its `Source`, once.

    The source then describes the data (`info()`), delivers the standard splits
    "train", "validation" and "test" as batches (`dataset(split, ...)`) and,
    for in-memory sources, as arrays (`array(split)`), without being told the
    name again. A table file is read here, once.

    Args:
      name: An embedded name (`EMBEDDED_DATASETS`), a TFDS image data set name,
        or a path to a `.npy`/`.csv` file of numbers [N, D].
      data_dir: Where prepared TFDS data lives (TFDS sets only).
      image_size: Centre-crop to a square and resize to this side (TFDS sets;
        `celeb_a` defaults to 64).
      num_bits: Bits kept per 8-bit pixel, 1..8 (TFDS sets only).
      validation_fraction: Share of the training rows held out as
        "validation", in [0, 1).
      num_examples: Size of the training split of a toy density (toy
        densities only; default 20,000).
      context_columns: Tables only: the columns that are the context c of a
        conditional density p(x | c), by CSV header name or 0-based index;
        batches are then `(x, c)` pairs and `info().context_shape` is (C,).

    Returns:
      A `DigitsSource`, `ToySource`, `TableSource` or `TfdsSource`.

    Raises:
      ValueError: for an unknown name, an unreadable file, or an argument that
        is out of range or does not apply to this kind of source.

    Example:

    >>> moons = source("two_moons", num_examples=512)
    >>> moons.info().event_shape, moons.array("train").shape
    ((2,), (512, 2))
    """
    return _resolve("source", name, data_dir=data_dir, image_size=image_size,
                    num_bits=num_bits, validation_fraction=validation_fraction,
                    num_examples=num_examples, context_columns=context_columns)


def info(
    name: str,
    data_dir: str | None = None,
    *,
    image_size: int | None = None,
    num_bits: int | None = None,
    validation_fraction: float = 0.1,
) -> DatasetInfo:
    """Describes a data set as `load` with the same arguments delivers it.

    TFDS sets are described from their code, so this works before the data is
    prepared. A tabular file is read to compute its training statistics.

    Args:
      name: A name known to `load`, or a path to a `.npy`/`.csv` file.
      data_dir: TFDS data directory (TFDS sets only).
      image_size: Side of the square images after centre crop and resize (TFDS
        sets only; `celeb_a` defaults to 64).
      num_bits: Bits kept per 8-bit pixel (1..8); sets `num_levels = 2**num_bits`.
      validation_fraction: Share of the training rows held out for validation
        (tabular files: it changes the training statistics).

    Returns:
      The `DatasetInfo`.
    """
    return _resolve("info", name, data_dir=data_dir, image_size=image_size, num_bits=num_bits,
                    validation_fraction=validation_fraction).info()


def load(
    name: str,
    split: str = "train",
    *,
    batch_size: int = 64,
    shuffle: bool | None = None,
    seed: int = 0,
    num_bits: int | None = None,
    data_dir: str | None = None,
    image_size: int | None = None,
    with_labels: bool = False,
    repeat: bool = False,
    drop_remainder: bool = False,
    validation_fraction: float = 0.1,
    num_examples: int | None = None,
    context_columns: Sequence[str | int] | str | None = None,
) -> tf.data.Dataset:
    """Loads a data set as batched, prefetched float32 tensors.

    Images are NHWC in [0, 1): `x = (k + u) / B`, with `k` the integer level
    (after keeping the top `num_bits` bits of 8-bit data: `k = k8 // 2**(8 -
    num_bits)`, `B = 2**num_bits`), `u ~ Uniform[0, 1)` fresh per example and
    epoch. Toy points are [batch, 2]; tabular rows are the file's numbers as
    they are (tfflow's vector models standardise inside the model).

    Splits: "train", "validation", "test". `digits` carves validation from its
    fixed training rows; toy densities draw each split from its own seed; a
    tabular file is split 90/10 into (train + validation)/test by a fixed seed,
    then validation is carved from the first part. For TFDS sets `split` is any
    TFDS split string ("train", "test", "train[:90%]", ...), taken as it is
    (`source(name).dataset("validation")` carves one where the set has none).

    Args:
      name: An embedded name (`EMBEDDED_DATASETS`), a TFDS image data set name,
        or a path to a `.npy`/`.csv` file of numbers [N, D].
      split: Which split.
      batch_size: Examples per batch.
      shuffle: Shuffle examples (reshuffled every epoch); default: only "train".
      seed: Seeds shuffling and dequantisation noise; the data itself and the
        splits never depend on it.
      num_bits: Bits kept per 8-bit pixel, 1..8 (8-bit images only).
      data_dir: Where prepared TFDS data lives (TFDS default when None).
      image_size: Centre-crop to a square and resize to this side (TFDS sets;
        `celeb_a` defaults to 64).
      with_labels: Yield `(x, label)` with int32 labels instead of `x`.
      repeat: Repeat forever (fresh shuffle and noise each epoch).
      drop_remainder: Drop the last incomplete batch.
      validation_fraction: Share of training rows held out as "validation"
        (digits and tabular files), in [0, 1).
      num_examples: Size of the requested split (toy densities only; defaults
        20,000 / 2,000 / 5,000 for train / validation / test).
      context_columns: Tables only: context columns, as in `source`; the
        dataset then yields `(x, c)` pairs.

    Returns:
      A `tf.data.Dataset` of `x`, `(x, label)` or `(x, c)`.

    Raises:
      ValueError: for an unknown name or split, arguments out of range, a
        TFDS set that is not prepared under `data_dir`, or an unreadable file.
    """
    batching = make_batching("load", split, batch_size=batch_size, shuffle=shuffle, seed=seed,
                             with_labels=with_labels, repeat=repeat,
                             drop_remainder=drop_remainder)
    resolved = _resolve("load", name, data_dir=data_dir, image_size=image_size,
                        num_bits=num_bits, validation_fraction=validation_fraction,
                        num_examples=num_examples, num_examples_split=split,
                        context_columns=context_columns)
    return resolved.read(split, batching)


def load_array(
    name: str,
    split: str = "train",
    *,
    validation_fraction: float = 0.1,
    num_examples: int | None = None,
) -> np.ndarray:
    """Returns an embedded or tabular split as one NumPy array, untransformed.

    Digits come as their integer levels (uint8 [N, 8, 8, 1]), toy points as
    float64 [N, 2], tabular rows in the file's own units (not standardised):
    the arrays to hand to `fit_gaussian_nll` or to plot. The rows are the same
    as `load`'s for the same arguments.

    Args:
      name: An embedded name or a `.npy`/`.csv` path (not a TFDS set).
      split: "train", "validation" or "test".
      validation_fraction: As in `load`.
      num_examples: As in `load` (toy densities only).

    Returns:
      The split's examples.
    """
    return _resolve("load_array", name, validation_fraction=validation_fraction,
                    num_examples=num_examples, num_examples_split=split).array(split)


def _resolve(where: str, name: Any, *, data_dir: str | None = None,
             image_size: int | None = None, num_bits: int | None = None,
             validation_fraction: float = 0.1, num_examples: int | None = None,
             num_examples_split: str = "train",
             context_columns: Sequence[str | int] | str | None = None) -> Source:
    """The one place a name becomes a source; `where` starts every error message."""
    _check_common_args(where, num_bits=num_bits, image_size=image_size,
                       validation_fraction=validation_fraction)
    check_positive_int(where, "num_examples", num_examples, allow_none=True)
    kind = _source_kind(where, name)
    if kind != "toy" and num_examples is not None:
        raise ValueError(
            f"{where}: num_examples applies to the toy densities {TOY_DATASETS}, got "
            f"num_examples={num_examples} for {name!r}."
        )
    if kind == "tfds":
        if context_columns is not None:
            raise ValueError(f"{where}: context_columns applies to .npy/.csv tables only, got "
                             f"context_columns={context_columns!r} for {name!r}.")
        try:
            return TfdsSource(name, where=where, data_dir=data_dir, image_size=image_size,
                              num_bits=num_bits, validation_fraction=validation_fraction)
        except UnknownDatasetName:
            raise ValueError(_unknown_name_message(where, name)) from None
    _reject_image_args(where, name, num_bits=num_bits, image_size=image_size)
    if kind == "table":
        return TableSource(name, where=where, validation_fraction=validation_fraction,
                           context_columns=context_columns)
    if context_columns is not None:
        raise ValueError(f"{where}: context_columns applies to .npy/.csv tables only, got "
                         f"context_columns={context_columns!r} for {name!r}.")
    if kind == "digits":
        return DigitsSource(where=where, validation_fraction=validation_fraction)
    return ToySource(name, where=where, split_sizes={num_examples_split: num_examples})


def _source_kind(where: str, name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: expected a data set name or file path, got {name!r}.")
    if is_table_file(name):
        return "table"
    if name == "digits":
        return "digits"
    if name in TOY_DATASETS:
        return "toy"
    # Not "contains a slash": TFDS names carry configs, e.g. "celeb_a/align".
    if os.path.exists(name):
        raise ValueError(f"{where}: {name!r} looks like a file path; expected a file ending in "
                         f"{' or '.join(TABLE_EXTENSIONS)}.")
    return "tfds"


def _check_common_args(where: str, *, num_bits: int | None, image_size: int | None,
                       validation_fraction: float) -> None:
    if num_bits is not None and (not is_int(num_bits) or not 1 <= num_bits <= 8):
        raise ValueError(f"{where}: expected num_bits an int in 1..8 or None, got {num_bits!r}.")
    check_positive_int(where, "image_size", image_size, allow_none=True)
    if not isinstance(validation_fraction, (int, float)) or not 0.0 <= validation_fraction < 1.0:
        raise ValueError(
            f"{where}: expected validation_fraction in [0, 1), got {validation_fraction!r}."
        )


def _reject_image_args(where: str, name: str, *, num_bits: int | None,
                       image_size: int | None) -> None:
    # Silently ignoring these would leave a user believing they took effect.
    if num_bits is not None:
        detail = "it has 17 levels (0..16)" if name == "digits" else "it is continuous"
        raise ValueError(f"{where}: num_bits applies to 8-bit images only, got num_bits="
                         f"{num_bits} for {name!r}: {detail}.")
    if image_size is not None:
        raise ValueError(f"{where}: image_size applies to TFDS image sets only, got "
                         f"image_size={image_size} for {name!r}.")


def _unknown_name_message(where: str, name: str) -> str:
    return (f"{where}: unknown data set {name!r}. Known: embedded {EMBEDDED_DATASETS}; "
            f"through tensorflow-datasets from data_dir {TFDS_IMAGE_DATASETS} or any other TFDS "
            f"image data set (tfds.list_builders()); or a path to a .npy/.csv file.")
