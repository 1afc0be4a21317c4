"""Numerical health of a trained flow: the layer that overflowed, the 1x1 convs' conditioning."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

__all__ = ["conv1x1_condition_numbers", "find_non_finite_layer"]


def _flow_children(layer: Any) -> list[Any]:
    from tfflow.layers import structure  # pylint: disable=import-outside-toplevel
    if isinstance(layer, structure.ChainLayer):
        return list(layer.flow_layers)
    if isinstance(layer, structure.FactorOutLayer):
        return [layer.inner]
    return []


class _Found(Exception):
    pass


def find_non_finite_layer(model: Any, x: Any, labels: Any = None) -> str | None:
    """Names the first part of the flow that is not finite on `x`, or None.

    Walks the model's flow layers (`model.flow`, ChainLayers and factored-out
    levels descended into) in the data -> latent direction, as `log_prob` and
    training run it (batch statistics for batch norm). First every layer's
    weights are checked, then each leaf layer's output and log-det on `x`.

    Returns:
      A phrase such as "layer 'level_0/affine_coupling_layer_1' gave a
      non-finite log-det", or None when everything is finite.
    """
    from tfflow.layers.base import FlowContext  # pylint: disable=import-outside-toplevel

    def walk(layer: Any, path: str, visit: Callable[[Any, str], None]) -> None:
        children = _flow_children(layer)
        if not children:
            visit(layer, path)
        for child in children:
            walk(child, f"{path}/{child.name}" if path else child.name, visit)

    def check_weights(layer: Any, path: str) -> None:
        bad = [weight.name for weight in layer.weights
               if tf.as_dtype(weight.dtype).is_floating
               and not np.all(np.isfinite(weight.numpy()))]
        if bad:
            raise _Found(f"layer {path!r} has non-finite weights ({', '.join(bad)})")

    context = FlowContext(training=True, labels=None if labels is None else
                          tf.convert_to_tensor(labels, tf.int32))
    largest_growth: list[Any] = ["", 0.0]  # [path, max|out| / max|in|] of the worst layer

    def run(layer: Any, path: str, value: tf.Tensor) -> tf.Tensor:
        from tfflow.layers import structure  # pylint: disable=import-outside-toplevel
        if isinstance(layer, structure.ChainLayer):
            for child in layer.flow_layers:
                value = run(child, f"{path}/{child.name}", value)
            return value
        if isinstance(layer, structure.FactorOutLayer):
            kept = run(layer.inner, f"{path}/{layer.inner.name}", value[..., :layer.channels])
            return tf.concat([kept, value[..., layer.channels:]], axis=-1)
        bijector = layer.bijector(context)
        output = bijector.inverse(value)
        growth = float(tf.reduce_max(tf.abs(output))) / max(float(tf.reduce_max(tf.abs(value))),
                                                             1e-30)
        if growth > largest_growth[1]:
            largest_growth[:] = [path, growth]
        log_det = bijector.inverse_log_det_jacobian(value,
                                                    event_ndims=bijector.inverse_min_event_ndims)
        if not np.all(np.isfinite(log_det.numpy())):
            raise _Found(f"layer {path!r} gave a non-finite log-det (its scale overflowed)")
        if not np.all(np.isfinite(output.numpy())):
            raise _Found(f"layer {path!r} gave a non-finite output")
        return output

    try:
        walk(model.flow, model.flow.name, check_weights)
        x = tf.cast(tf.convert_to_tensor(x), model.dtype_name)
        if not np.all(np.isfinite(x.numpy())):
            return "the training batch itself is not finite"
        z = run(model.flow, model.flow.name, x)
        squares = tf.reduce_sum(tf.square(tf.reshape(z, [tf.shape(z)[0], -1])), axis=-1)
        if not np.all(np.isfinite(squares.numpy())):
            return (f"the latent z is finite but so large (max |z| = "
                    f"{float(tf.reduce_max(tf.abs(z))):.3g}) that its Gaussian log-density "
                    f"overflows; layer {largest_growth[0]!r} amplified its input most "
                    f"(x{largest_growth[1]:.3g})")
    except _Found as found:
        return str(found)
    return None


def conv1x1_condition_numbers(model: Any) -> dict[str, float]:
    """{layer name: condition number of W} for every 1x1 convolution of `model`.

    W is read off the layer's own bijector (its forward image of the identity
    basis), so the LU and the full parametrisation are measured alike. A large
    number means the layer is close to singular: its inverse (sampling, for a
    Glow trained by `log_prob`) amplifies round-off by up to that factor.
    """
    from tfflow.layers import mixing  # pylint: disable=import-outside-toplevel
    numbers: dict[str, float] = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):  # pylint: disable=protected-access
        if not isinstance(layer, (mixing.LUConv1x1Layer, mixing.Conv1x1Layer)):
            continue
        bijector = layer.bijector()
        channels = int(layer.weights[-1].shape[-1])
        basis = np.eye(channels, dtype=layer.compute_dtype)
        if layer.event_ndims == 3:
            basis = basis.reshape(channels, 1, 1, channels)
        matrix = np.asarray(bijector.forward(basis), np.float64).reshape(channels, channels)
        name = layer.name
        while name in numbers:
            name += "'"
        numbers[name] = float(np.linalg.cond(matrix))
    return numbers
