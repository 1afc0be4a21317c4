"""Image data sets of tensorflow-datasets, read from a prepared `data_dir`, never downloaded.

`mnist`, `fashion_mnist`, `cifar10`, `celeb_a` (centre-cropped and resized to
64 by default) and any other TFDS set with an 8-bit image feature. Prepare the
data with `tfds build NAME --data_dir=DIR` on a machine with internet and copy
`DIR` over.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from tfflow.data.core import Batching, DatasetInfo, Source, check_split
from tfflow.data.names import TFDS_IMAGE_DATASETS
from tfflow.data.pipelines import image_batches

__all__ = ["TFDS_IMAGE_DATASETS", "TfdsSource", "UnknownDatasetName"]

_SHUFFLE_BUFFER = 10_000
_CELEB_A_DEFAULT_SIZE = 64


class UnknownDatasetName(ValueError):
    """TFDS knows no data set of this name; the resolver says what names there are."""


class TfdsSource(Source):
    """A TFDS image set: images [H, W, C] with 2**num_bits levels, labels where it has them.

    The builder is made (and the name checked) when the source is made; the
    description is read from the set's code, so `info()` works before the data
    is prepared. `read` takes any TFDS split string ("train", "test",
    "train[:90%]", ...); `split_name` maps the standard splits onto the set's
    own, carving validation from the end of "train" when the set has none.

    Args:
      name: A TFDS name, with a config where it has them ("celeb_a/align").
      where: The public function resolving it (starts error messages).
      data_dir: Where prepared TFDS data lives (TFDS's default when None).
      image_size: Centre-crop to a square and resize to this side
        (`celeb_a`: 64 by default; otherwise the native shape).
      num_bits: Bits kept per 8-bit pixel, 1..8 (default 8).
      validation_fraction: Share of "train" carved out as validation when the
        set has no validation split of its own.
    """

    in_memory = False

    def __init__(self, name: str, *, where: str, data_dir: str | None = None,
                 image_size: int | None = None, num_bits: int | None = None,
                 validation_fraction: float = 0.1) -> None:
        super().__init__(name, where=where)
        self.data_dir, self.num_bits = data_dir, num_bits
        self.validation_fraction = validation_fraction
        self._builder = _tfds_builder(where, name, data_dir)
        self.image_size = _tfds_image_size(self._builder, image_size)
        self._info: DatasetInfo | None = None
        self._own_splits: set[str] | None = None

    def info(self) -> DatasetInfo:
        if self._info is None:
            self._info = self._describe()
        return self._info

    def split_name(self, split: str) -> str:
        """The TFDS split for a standard split: the set's own, or carved from "train".

        "test" is the set's test split (its validation split when it has no
        test); "train" and "validation" are the set's own when it has both
        validation and test, else `train[:90%]` and `train[90%:]` for
        `validation_fraction=0.1`.
        """
        check_split(self._where, self.name, split)
        splits = self._splits()
        if split == "test":
            return "test" if "test" in splits else "validation"
        if "validation" in splits and "test" in splits:
            return split
        held_out = int(round(100 * self.validation_fraction))
        if split == "train":
            return f"train[:{100 - held_out}%]"
        return f"train[{100 - held_out}%:]"

    def read(self, split: str, batching: Batching) -> tf.data.Dataset:
        """Dequantised images of any TFDS split string, e.g. "train[:50%]"."""
        builder = self._builder
        self.info()  # validates shape and dtype
        image_key, label_key = _tfds_image_key(self._where, builder), _tfds_label_key(builder)
        if batching.with_labels and label_key is None:
            raise ValueError(f"{self._where}: {self.name!r} has no 'label' class feature; got "
                             "with_labels=True.")
        examples = self._examples(split, batching)
        size = self.image_size
        native_height_width = tuple(builder.info.features[image_key].shape[:2])

        def to_levels(example: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
            image = example[image_key]
            if size is not None and native_height_width != (size, size):
                image = _centre_crop_resize(image, size)
            label = tf.cast(example[label_key], tf.int32) if label_key else tf.constant(-1, tf.int32)
            return image, label

        examples = examples.map(to_levels, num_parallel_calls=tf.data.AUTOTUNE)
        num_bits = self.num_bits or 8
        return image_batches(examples, _SHUFFLE_BUFFER, 2**num_bits, 2 ** (8 - num_bits),
                             batching)

    def _describe(self) -> DatasetInfo:
        where, builder, name = self._where, self._builder, self.name
        image = builder.info.features[_tfds_image_key(where, builder)]
        if np.dtype(image.np_dtype) != np.uint8:
            raise ValueError(f"{where}: expected 8-bit images, got dtype {image.np_dtype} in "
                             f"{name!r}.")
        height, width, channels = image.shape
        if self.image_size is not None:
            height = width = self.image_size
        if height is None or width is None or channels is None:
            raise ValueError(f"{where}: {name!r} has images of varying shape {image.shape}; "
                             "expected image_size=... to crop and resize them to a square.")
        label_key = _tfds_label_key(builder)
        num_classes = builder.info.features[label_key].num_classes if label_key else None
        return DatasetInfo(name=name, kind="image", event_shape=(height, width, channels),
                           num_levels=2 ** (self.num_bits or 8), num_classes=num_classes)

    def _splits(self) -> set[str]:
        if self._own_splits is None:
            try:
                splits = set(self._builder.info.splits.keys())
            except Exception:  # pylint: disable=broad-except  # read() reports what is wrong
                splits = set()
            # Not prepared (read() will say so) or not known: the usual train/test pair.
            self._own_splits = splits or {"train", "test"}
        return self._own_splits

    def _examples(self, split: str, batching: Batching) -> tf.data.Dataset:
        tfds = _tfds_module(self._where)
        builder, name, data_dir = self._builder, self.name, self.data_dir
        # Never download_and_prepare: a missing data set is an error, not a fetch.
        try:
            return builder.as_dataset(
                split=split, shuffle_files=batching.shuffle,
                read_config=tfds.ReadConfig(shuffle_seed=batching.seed))
        except (AssertionError, FileNotFoundError, tf.errors.NotFoundError):
            looked_in = data_dir if data_dir is not None else builder.data_dir_root
            raise ValueError(
                f"{self._where}: TFDS data set {name!r} is not prepared under data_dir={looked_in!r} "
                f"(looked for {builder.data_dir!r}); tfflow never downloads. On a machine with "
                f"internet run `tfds build {name} --data_dir={looked_in}`, copy that folder here "
                f"and pass data_dir={looked_in!r} (--data_dir to the bin/ scripts)."
            ) from None
        except ValueError as error:  # TFDS rejects unknown split names this way
            raise ValueError(f"{self._where}: cannot read split {split!r} of {name!r}: {error} Use a TFDS "
                             "split string, e.g. 'train', 'test', 'train[:90%]', 'train[90%:]'."
                             ) from None


def _tfds_module(where: str) -> Any:
    try:
        import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ValueError(f"{where}: loading TFDS data sets needs tensorflow-datasets; "
                         "`pip install tensorflow-datasets`.") from None
    return tfds


def _tfds_builder(where: str, name: str, data_dir: str | None) -> Any:
    tfds = _tfds_module(where)
    try:
        parsed, _ = tfds.core.naming.parse_builder_name_kwargs(name)
    except (ValueError, TypeError):
        raise UnknownDatasetName(name) from None
    if parsed.namespace:
        # Community and Hugging Face namespaces are fetched over the network.
        raise ValueError(f"{where}: expected a local TFDS data set, got the namespaced name "
                         f"{name!r}, which TFDS would fetch from the internet.")
    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise UnknownDatasetName(name) from None


def _tfds_image_key(where: str, builder: Any) -> str:
    tfds = _tfds_module(where)
    features = builder.info.features
    image_keys = [key for key, feature in features.items()
                  if isinstance(feature, tfds.features.Image)]
    if not image_keys:
        raise ValueError(f"{where}: expected a TFDS data set with an image feature, got "
                         f"{builder.name!r} with features {list(features.keys())}.")
    return "image" if "image" in image_keys else image_keys[0]


def _tfds_image_size(builder: Any, image_size: int | None) -> int | None:
    """The side to crop and resize to, or None to keep the native shape."""
    if image_size is None and builder.name == "celeb_a":
        return _CELEB_A_DEFAULT_SIZE
    return image_size


def _tfds_label_key(builder: Any) -> str | None:
    features = builder.info.features
    label = features["label"] if "label" in features.keys() else None
    return "label" if label is not None and hasattr(label, "num_classes") else None


def _centre_crop_resize(image: tf.Tensor, size: int) -> tf.Tensor:
    shape = tf.shape(image)
    side = tf.minimum(shape[0], shape[1])
    image = tf.image.crop_to_bounding_box(image, (shape[0] - side) // 2,
                                          (shape[1] - side) // 2, side, side)
    resized = tf.image.resize(image, [size, size], method="bilinear", antialias=True)
    # Back to integer levels so dequantisation sees the same 256 levels.
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)
