"""Data sets for tfflow, every one readable without the internet.

Four kinds of source, each an object with `info()`, `dataset(split, ...)` and
`array(split)`, chosen once from a name by `source(name, ...)`:

* `DigitsSource` (`digits`): the 1,797 8x8 handwritten digits of the UCI set
  as shipped in scikit-learn, stored in `tfflow/_data/digits.npz` with a fixed
  split.
* `ToySource`: 2-D toy densities generated in code from fixed seeds:
  `two_moons`, `circles`, `eight_gaussians`, `checkerboard`, `pinwheel`,
  `spirals`.
* `TableSource`: the user's own table, a path to a `.npy` or `.csv` file of
  numbers [N, D], read once.
* `TfdsSource`: tensorflow-datasets sets, `mnist`, `fashion_mnist`, `cifar10`,
  `celeb_a` and any other TFDS image set, read from a prepared `data_dir`.
  Nothing is ever downloaded: prepare the data with
  `tfds build NAME --data_dir=DIR` on a machine with internet and copy `DIR`
  over.

`load`, `load_array` and `info` are the same in one call: they resolve the
name and ask the source.

Images come out dequantised: for integer levels `k` in `0..B-1`,
`x = (k + u) / B` with `u ~ Uniform[0, 1)` drawn afresh per example and epoch,
so `x` lies in [0, 1) and a model's NLL converts to bits/dim with
`bits_per_dim(nll_nats, D, B)`. The noise comes from stateless random ops seeded
by `seed`: the same `seed` gives the same stream of batches.

The modules: `names` (every list of names, importable without TensorFlow),
`core` (the `Source` contract, `DatasetInfo`, `bits_per_dim`,
`fit_gaussian_nll`), `pipelines` (batching and dequantisation), one module per
kind of source (`digits`, `toy`, `table`, `tfds_images`) and `sources` (the
resolver and the one-call functions). Importing `tfflow.data` is cheap: the
sources (and TensorFlow) load on first use. A new kind of source is a new module
with a `Source` subclass and one line in `sources._resolve`.

Example:

>>> import tfflow.data
>>> ds = tfflow.data.load("digits", "test", batch_size=8)
>>> x = next(iter(ds))
>>> tuple(x.shape), x.dtype.name
((8, 8, 8, 1), 'float32')
>>> tfflow.data.info("digits").num_levels
17
"""

from tfflow._lazy import lazy_attributes
from tfflow.data.names import (EMBEDDED_DATASETS, SPLITS, TABLE_EXTENSIONS, TFDS_IMAGE_DATASETS,
                               TOY_DATASETS)

# The names above load without TensorFlow (the command-line apps list them in
# --help); everything else, and TensorFlow with it, loads on first use.
_LAZY = {
    "DatasetInfo": "core", "Source": "core", "bits_per_dim": "core",
    "fit_gaussian_nll": "core", "DigitsSource": "digits", "TableSource": "table",
    "TfdsSource": "tfds_images", "ToySource": "toy", "info": "sources", "load": "sources",
    "load_array": "sources", "source": "sources",
}
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, (
    "core", "digits", "names", "pipelines", "sources", "table", "tfds_images", "toy"))

__all__ = [
    "DatasetInfo",
    "DigitsSource",
    "EMBEDDED_DATASETS",
    "SPLITS",
    "Source",
    "TABLE_EXTENSIONS",
    "TFDS_IMAGE_DATASETS",
    "TOY_DATASETS",
    "TableSource",
    "TfdsSource",
    "ToySource",
    "bits_per_dim",
    "fit_gaussian_nll",
    "info",
    "load",
    "load_array",
    "source",
]
