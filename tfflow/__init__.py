"""tfflow: normalizing flows for TensorFlow and Keras, built on TensorFlow Probability.

`import tfflow` loads `tfflow.models` (and TensorFlow) at once: that registers
tfflow's classes with Keras, so `import tfflow` is all `keras.models.load_model`
needs to read tfflow's `.keras` files. The other submodules (`bijectors`,
`data`, `export`, `images`, `layers`, `mixed_precision`, `plots`, `testing`,
`training`) load on first use: `import tfflow` then
`tfflow.training.TrainConfig` works without importing `tfflow.training`
yourself. The command-line apps set
`TFFLOW_DEFER_IMPORTS=1` before importing tfflow, so that their `--help`
answers without loading TensorFlow; they load the models when they run.
"""

import importlib
import os
import sys

from tfflow._lazy import lazy_attributes

__version__ = "0.1.0"

_SUBMODULES = ("bijectors", "data", "export", "images", "layers", "mixed_precision", "models",
               "plots", "testing", "training")
__all__ = ["FlowModel", *_SUBMODULES, "__version__"]

__getattr__, __dir__ = lazy_attributes(__name__, {"FlowModel": "models"}, _SUBMODULES)


if os.environ.get("TFFLOW_DEFER_IMPORTS") != "1" or "tensorflow" in sys.modules:
    importlib.import_module(f"{__name__}.models")
