"""tfflow: normalizing flows for TensorFlow and Keras, built on TensorFlow Probability."""

from tfflow import bijectors
from tfflow import testing

__version__ = "0.1.0"

__all__ = ["bijectors", "testing", "__version__"]
