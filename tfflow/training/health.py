"""Numerical health of a trained flow: the layer that overflowed, the 1x1 convs' conditioning."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from tfflow.bijectors import Invertible1x1Conv, LUInvertible1x1Conv
from tfflow.layers.glow_steps import GlowStepsLayer
from tfflow.layers.mixing import Invertible1x1ConvLayer, LUInvertible1x1ConvLayer

__all__ = ["conv1x1_condition_numbers", "find_non_finite_layer"]


class _Found(Exception):
    pass


def find_non_finite_layer(model: Any, x: Any, labels: Any = None,
                          context: Any = None) -> str | None:
    """Names the first part of the flow that is not finite on `x`, or None.

    Walks the model's flow layers (`model.flow` and every container's
    `flow_children`) in the data -> latent direction, as `log_prob` and
    training run it (batch statistics for batch norm). First every layer's
    weights are checked, then each leaf layer's output and log-det on `x`.

    Args:
      model: a `tfflow.models.FlowModel`.
      x: the batch the loss was not finite on, [N, *event].
      labels: its int labels [N] for a class-conditional model, else None.
      context: its context rows [N, *context_shape] (in the data's units) for a
        conditional model, else None.

    Returns:
      A phrase such as "layer 'level_0/affine_coupling_layer_1' gave a
      non-finite log-det", or None when everything is finite.
    """
    def check_weights(layer: Any, path: str) -> None:
        bad = [weight.name for weight in layer.weights
               if tf.as_dtype(weight.dtype).is_floating
               and not np.all(np.isfinite(weight.numpy()))]
        if bad:
            raise _Found(f"layer {path!r} has non-finite weights ({', '.join(bad)})")

    flow_context = model.flow_context(
        None if labels is None else tf.convert_to_tensor(labels, tf.int32), training=True,
        context=None if context is None else tf.convert_to_tensor(context))
    largest_growth: list[Any] = ["", 0.0]  # [path, max|out| / max|in|] of the worst layer

    def run(layer: Any, path: str, value: tf.Tensor) -> tf.Tensor:
        if layer.flow_children():
            return layer.apply_children(
                value, lambda child, v: run(child, f"{path}/{child.name}", v))
        bijector = layer.bijector(flow_context)
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
        for path, layer in model.flow.walk():
            if not layer.flow_children():
                check_weights(layer, path)
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
    numbers: dict[str, float] = {}

    def measure(name: str, bijector: Any, channels: int, event_ndims: int, dtype: Any) -> None:
        basis = np.eye(channels, dtype=dtype)
        if event_ndims == 3:
            basis = basis.reshape(channels, 1, 1, channels)
        matrix = np.asarray(bijector.forward(basis), np.float64).reshape(channels, channels)
        while name in numbers:
            name += "'"
        numbers[name] = float(np.linalg.cond(matrix))

    for _, layer in model.flow.walk():
        if isinstance(layer, (LUInvertible1x1ConvLayer, Invertible1x1ConvLayer)):
            measure(layer.name, layer.bijector(), int(layer.weights[-1].shape[-1]),
                    layer.event_ndims, layer.compute_dtype)
        elif isinstance(layer, GlowStepsLayer):
            for step, bijector in enumerate(_stacked_1x1_convs(layer)):
                channels = int(layer.step_weights["actnorm_loc"].shape[-1])  # [K, C]
                measure(f"{layer.name}/step_{step}", bijector, channels, 3, layer.compute_dtype)
    return numbers


def _stacked_1x1_convs(layer: GlowStepsLayer) -> list[Any]:
    """The 1x1 convolution of every step of a `GlowStepsLayer` (none for other mixings)."""
    weights = {name: weight.numpy() for name, weight in layer.step_weights.items()}
    if layer.permutation == "lu":
        return [LUInvertible1x1Conv(*(weights[name][step] for name in
                                      ("permutation", "lower", "upper", "sign_s", "log_abs_s")))
                for step in range(layer.num_steps)]
    if layer.permutation == "conv":
        return [Invertible1x1Conv(weights["kernel"][step]) for step in range(layer.num_steps)]
    return []
