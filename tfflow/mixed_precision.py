"""Mixed precision for flows: networks in bfloat16/float16, the flow itself in float32.

A flow's density is a sum of many log-determinants; in 16-bit floats that sum
and the latent it is evaluated at lose the digits a likelihood needs. tfflow's
factories therefore split a Keras dtype policy in two:

* the conditioner networks (convolutions and dense layers, nearly all the
  compute) get the policy itself, e.g. `"mixed_bfloat16"`: float32 weights,
  bfloat16 arithmetic;
* every flow layer (ActNorm, 1x1 convolutions, coupling arithmetic, priors)
  and so the latent, every log-det, the base log-prob and the loss stay in the
  policy's variable dtype (float32).

A coupling casts its network's output to float32 before using it as a shift and
log-scale.
"""

from __future__ import annotations

import keras

__all__ = ["flow_and_network_dtypes"]


def flow_and_network_dtypes(dtype=None) -> tuple[str, str]:
    """`(flow_dtype, network_policy)` for a factory's `dtype` argument.

    `dtype` is a dtype name ("float32", "float64"), a policy name
    ("mixed_bfloat16", "mixed_float16"), a `keras.DTypePolicy`, or None for
    Keras' global policy (`keras.mixed_precision.set_global_policy`). A plain
    dtype gives the same for both.
    """
    if dtype is None:
        policy = keras.config.dtype_policy()
    elif isinstance(dtype, keras.DTypePolicy):
        policy = dtype
    else:
        policy = keras.DTypePolicy(getattr(dtype, "name", dtype))
    flow = policy.variable_dtype
    network = policy.name if policy.compute_dtype != policy.variable_dtype else flow
    return flow, network
