"""NICE: additive couplings with MLP conditioners and a final diagonal scaling."""

from __future__ import annotations

import numpy as np

from tfflow import bijectors as fb
from tfflow import layers as fl
from tfflow.models.flow_model import FlowModel

__all__ = ["NICE"]


def NICE(event_shape, *, num_couplings: int = 4, hidden_units=(256, 256, 256),
         num_levels: int | None = None, dtype="float32", name: str = "nice") -> FlowModel:
    """NICE (Dinh, Krueger & Bengio, 2015) as a `FlowModel`.

    The event is flattened to [D]; `num_couplings` additive couplings with
    alternating odd/even partitions and MLP conditioners (the paper: 4
    couplings, 5 x 1000 ReLU units) are followed by NICE's learned diagonal
    scaling layer, the only part with a non-unit Jacobian.

    Args:
      event_shape: any shape; images are flattened.
      num_couplings: number of additive couplings (>= 2 so every entry is transformed).
      hidden_units: MLP widths of each conditioner.
      num_levels: quantisation levels for image data (bits/dim); None if continuous.
      dtype: "float32" or "float64".
    """
    event_shape = tuple(int(d) for d in event_shape)
    dims = int(np.prod(event_shape))
    if dims < 2 or num_couplings < 2:
        raise ValueError(f"NICE: needs at least 2 dimensions and 2 couplings, got event_shape "
                         f"{event_shape} and num_couplings={num_couplings}.")
    parts = [] if len(event_shape) == 1 else [fl.FlattenLayer(event_shape, dtype=dtype)]
    for k in range(num_couplings):
        parts.append(fl.AdditiveCouplingLayer(
            fl.MLPConditioner(tuple(hidden_units), dims, dtype=dtype), fb.AlternatingMask(k % 2),
            event_ndims=1, dtype=dtype))
    parts.append(fl.DiagonalScalingLayer(dtype=dtype))
    return FlowModel(fl.ChainLayer(parts, dtype=dtype, name="nice"), event_shape,
                     num_levels=num_levels, name=name, dtype=dtype)
