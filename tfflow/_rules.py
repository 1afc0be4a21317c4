"""The scalar rules of tfflow's arguments: counts, seeds, temperatures (no TensorFlow).

One owner for each rule, shared by everything that takes such a value: the
model API and its SavedModel (`tfflow.models._checks`), the data sources
(`tfflow.data.core`), the run config (`tfflow.training.config`) and the
command-line apps (`tfflow.cli`, which check flags before TensorFlow loads).
Each caller words its own error (a `ValueError` naming the object, a CLI's
one-line error naming the flag); the predicates here decide what passes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["MAX_SEED", "is_count", "is_int", "is_seed", "is_temperature"]

#: The largest integer seed (seeds are unsigned 32-bit, as NumPy's and TF's take them).
MAX_SEED = 2**32 - 1


def is_int(value: Any) -> bool:
    """An int or NumPy integer, and not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_count(value: Any, minimum: int = 1) -> bool:
    """An integer (`is_int`) >= `minimum`: a number of samples, epochs, units, ..."""
    return is_int(value) and value >= minimum


def is_seed(value: Any) -> bool:
    """An integer (`is_int`) in [0, MAX_SEED]."""
    return is_int(value) and 0 <= value <= MAX_SEED


def is_temperature(value: Any) -> bool:
    """A finite number >= 0: the latent standard deviation's scale (0 decodes the mode)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(number) and number >= 0
