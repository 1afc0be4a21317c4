"""NICE: additive couplings with MLP conditioners and a final diagonal scaling."""

from __future__ import annotations

import numpy as np

from tfflow import bijectors as fb
from tfflow import layers as fl
from tfflow.mixed_precision import flow_and_network_dtypes
from tfflow.models._vector import GAUSSIAN_START_EXAMPLES, conditional_units, with_gaussian_start
from tfflow.models.flow_model import FlowModel

__all__ = ["NICE"]


def NICE(event_shape, *, num_couplings: int = 4, hidden_units=(256, 256, 256),
         num_levels: int | None = None, memory_saving: bool = False, context_shape=None,
         dtype=None, name: str = "nice") -> FlowModel:
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
      memory_saving: train without storing activations (the couplings and the
        scaling form one `tfflow.layers.ReversibleChainLayer`).
      context_shape: the context of a conditional model p(x | c): every MLP
        also sees the (standardised) context; on vectors the Gaussian start is
        the linear regression of x on c. Not with `memory_saving` yet.
      dtype: "float32", "float64", a Keras mixed-precision policy (MLPs in 16
        bits, the flow and the loss in float32), or None for the global policy.
    """
    dtype, network_dtype = flow_and_network_dtypes(dtype)
    event_shape = tuple(int(d) for d in event_shape)
    dims = int(np.prod(event_shape))
    if dims < 2 or num_couplings < 2:
        raise ValueError(f"NICE: needs at least 2 dimensions and 2 couplings, got event_shape "
                         f"{event_shape} and num_couplings={num_couplings}.")
    # Vectors (tables) start from their Gaussian fit; images are flattened as in the paper.
    vector = len(event_shape) == 1
    units = conditional_units("NICE", context_shape, memory_saving)
    parts = [] if vector else [fl.FlattenLayer(event_shape, dtype=dtype)]
    for k in range(num_couplings):
        parts.append(fl.AdditiveCouplingLayer(
            fl.MLPConditioner(tuple(hidden_units), dims, context_units=units,
                              dtype=network_dtype),
            fb.AlternatingMask(k % 2),
            event_ndims=1, dtype=dtype))
    parts.append(fl.DiagonalScalingLayer(dtype=dtype))
    if memory_saving:
        parts = fl.group_reversible(parts, event_ndims=1, dtype=dtype, name="reversible")
    if vector:
        parts = with_gaussian_start(parts, dtype, units)
    start = {"initialization_examples": GAUSSIAN_START_EXAMPLES} if vector else {}
    return FlowModel(fl.ChainLayer(parts, dtype=dtype, name="nice"), event_shape,
                     num_levels=num_levels, name=name, dtype=dtype,
                     context_shape=context_shape, **start)
