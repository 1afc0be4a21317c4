"""tfflow: normalizing flows for TensorFlow and Keras, built on TensorFlow Probability."""

from tfflow import bijectors
from tfflow import data
from tfflow import export
from tfflow import layers
from tfflow import models
from tfflow import testing
from tfflow.models import FlowModel

__version__ = "0.1.0"

__all__ = ["FlowModel", "bijectors", "data", "export", "layers", "models", "testing", "__version__"]
