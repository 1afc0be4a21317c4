"""Flow models as Keras models: `FlowModel` and the NICE / RealNVP / Glow factories."""

from __future__ import annotations

from tfflow._heap import freeze_long_lived
from tfflow.models.autoregressive import IAF, MAF, NSF
from tfflow.models.flow_model import FlowModel, FusedAdam, LinearWarmup
from tfflow.models.glow import Glow, glow_flow
from tfflow.models.nice import NICE
from tfflow.models.presets import PRESETS, preset
from tfflow.models.realnvp import RealNVP

# TensorFlow, TFP and Keras are loaded: later garbage collections skip their heap (_heap).
freeze_long_lived()

__all__ = ["FlowModel", "FusedAdam", "Glow", "IAF", "LinearWarmup", "MAF", "MODELS", "NICE",
           "NSF", "PRESETS", "RealNVP", "build", "preset"]

MODELS = {"glow": Glow, "realnvp": RealNVP, "nice": NICE, "maf": MAF, "iaf": IAF, "nsf": NSF}


def build(name: str, event_shape, **kwargs) -> FlowModel:
    """Builds a model by name (a key of `MODELS`) for `event_shape`."""
    if name not in MODELS:
        raise ValueError(f"tfflow.models.build: unknown model {name!r}; expected one of "
                         f"{sorted(MODELS)}.")
    if kwargs.get("num_classes", None) is None:
        kwargs.pop("num_classes", None)  # only Glow has a class-conditional prior
    elif name != "glow":
        raise ValueError(f"tfflow.models.build: only glow supports num_classes (a "
                         f"class-conditional prior), got model {name!r}.")
    return MODELS[name](tuple(event_shape), **kwargs)
