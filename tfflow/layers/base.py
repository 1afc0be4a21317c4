"""The contract between tfflow's Keras layers and its stateless bijectors.

A `FlowLayer` owns weights (created in `build` with `add_weight`, so Keras
tracks, trains, saves and distributes them) and hands out a bijector built from
their current values: `layer.bijector(context)`. The bijector is cheap to build
and, inside `tf.function`, is built once per trace.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import tensorflow as tf
from tensorflow_probability import bijectors as tfb

__all__ = ["FlowContext", "FlowLayer", "serialize", "deserialize"]


@dataclasses.dataclass
class FlowContext:
    """What a layer may need to hand out its bijector.

    Attributes:
      training: batch statistics (batch norm) instead of running averages.
      labels: int class labels [N] for class-conditional layers, or None.
      init_records: when a dict, data-initialised layers (ActNorm, batch norm)
        hand out bijectors that normalise with their input's moments and record
        `{layer: values}` here, for `layer.assign_initial(*values)` (Glow's init).
    """

    training: bool = False
    labels: tf.Tensor | None = None
    init_records: dict | None = None


class FlowLayer(keras.layers.Layer):
    """A Keras layer that owns a flow part's weights and builds its bijector.

    Subclasses implement `bijector(context)` and, when they change the event
    shape, `output_event_shape`. `build` receives the event shape with a
    leading `None` batch dimension. Calling the layer runs the normalising
    direction (data -> latent), which is what `model.summary()` shows.
    """

    event_ndims: int = 3

    def bijector(self, context: FlowContext | None = None) -> tfb.Bijector:
        raise NotImplementedError

    def output_event_shape(self, event_shape: tuple) -> tuple:
        """Event shape after this layer in the data -> latent direction."""
        return tuple(event_shape)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + tuple(self.output_event_shape(tuple(input_shape[1:])))

    def call(self, x):
        return self.bijector(FlowContext()).inverse(x)


def serialize(layer: keras.layers.Layer | None) -> dict | None:
    return None if layer is None else keras.saving.serialize_keras_object(layer)


def deserialize(config: Any):
    return None if config is None else keras.saving.deserialize_keras_object(config)
