"""tfflow: normalizing flows for TensorFlow and Keras, built on TensorFlow Probability.

`import tfflow` loads `tfflow.models` (and TensorFlow) at once: that registers
tfflow's classes with Keras, so `import tfflow` is all `keras.models.load_model`
needs to read tfflow's `.keras` files. The other submodules (`bijectors`,
`data`, `export`, `layers`, `testing`, `training`) load on first use. The
command-line apps set `TFFLOW_DEFER_IMPORTS=1` before importing tfflow, so that
their `--help` answers without loading TensorFlow; they load the models when
they run.
"""

import importlib
import os
import sys

from tfflow._lazy import lazy_attributes

__version__ = "0.1.0"

__all__ = ["FlowModel", "bijectors", "data", "export", "layers", "models", "testing", "training",
           "__version__"]

__getattr__, __dir__ = lazy_attributes(__name__, {"FlowModel": "models"}, (
    "bijectors", "data", "export", "layers", "models", "testing", "training"))


if os.environ.get("TFFLOW_DEFER_IMPORTS") != "1" or "tensorflow" in sys.modules:
    importlib.import_module(f"{__name__}.models")
