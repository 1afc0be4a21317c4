"""The names `tfflow.data` knows, without TensorFlow: splits, table extensions, data sets.

Importing this module (and `tfflow.data` itself) does not import TensorFlow,
so the command-line apps can list these names in `--help` at once. The
sources check themselves against these lists (`toy.py` raises at import if its
densities and `TOY_DATASETS` disagree).
"""

__all__ = ["EMBEDDED_DATASETS", "SPLITS", "TABLE_EXTENSIONS", "TFDS_IMAGE_DATASETS",
           "TOY_DATASETS", "is_table_file"]

SPLITS: tuple[str, ...] = ("train", "validation", "test")

# What a path to the user's own table ends in.
TABLE_EXTENSIONS: tuple[str, ...] = (".npy", ".csv")

# The 2-D densities of `tfflow.data.toy`, generated in code.
TOY_DATASETS: tuple[str, ...] = (
    "two_moons",
    "circles",
    "eight_gaussians",
    "checkerboard",
    "pinwheel",
    "spirals",
)

EMBEDDED_DATASETS: tuple[str, ...] = ("digits",) + TOY_DATASETS

# Named in error messages and help; any other TFDS image data set loads as well.
TFDS_IMAGE_DATASETS: tuple[str, ...] = ("mnist", "fashion_mnist", "cifar10", "celeb_a")


def is_table_file(name: str) -> bool:
    """Whether the data set `name` is a table file (its extension is in `TABLE_EXTENSIONS`)."""
    return name.lower().endswith(TABLE_EXTENSIONS)
