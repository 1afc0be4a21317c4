"""tfflow: normalizing flows for TensorFlow and Keras, built on TensorFlow Probability.

The submodules (`bijectors`, `data`, `export`, `layers`, `models`, `testing`,
`training`) load on first use, and TensorFlow with them, so that `import
tfflow` and the command-line apps' `--help` are instant. When TensorFlow is
already loaded, `import tfflow` loads `tfflow.models` at once: that registers
tfflow's classes with Keras, so `keras.models.load_model` reads tfflow's
`.keras` files (in a fresh process, any use of `tfflow.models`,
`tfflow.FlowModel` or `tfflow.training.load_run` does the same).
"""

import importlib
import sys

from tfflow._lazy import lazy_attributes

__version__ = "0.1.0"

__all__ = ["FlowModel", "bijectors", "data", "export", "layers", "models", "testing", "training",
           "__version__"]

__getattr__, __dir__ = lazy_attributes(__name__, {"FlowModel": "models"}, (
    "bijectors", "data", "export", "layers", "models", "testing", "training"))


if "tensorflow" in sys.modules:  # nothing to save by waiting
    importlib.import_module(f"{__name__}.models")
