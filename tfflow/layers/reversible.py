"""`ReversibleChainLayer`: a chain of flow layers trained without storing activations."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfflow import bijectors as fb
from tfflow.layers.base import FlowContext
from tfflow.layers.structure import ChainLayer

__all__ = ["ReversibleChainLayer", "group_reversible"]


@keras.saving.register_keras_serializable(package="tfflow")
class ReversibleChainLayer(ChainLayer):
    """A `ChainLayer` whose gradient recomputes activations from the outputs.

    Same weights, same values and same gradients as `ChainLayer(layers)`; the
    bijector it hands out is a `tfflow.bijectors.ReversibleChain`, so training
    (which differentiates the data -> latent direction) keeps only this
    block's output and rebuilds everything else in the backward pass, one part
    at a time. Peak activation memory no longer grows with the number of parts
    (Glow 32x32x3, batch 32: 10 MB of activations at K=4, 11 MB at K=32, against
    38 and 270 MB without), at the price of about one more pass through them
    (a step took 1.23x as long at K=4; measured on 2 CPU cores).

    The parts must keep the event shape and be invertible example by example:
    training-mode batch normalisation (`BatchNormalizationLayer`) depends on the whole
    batch and is rejected; keep it between reversible blocks.
    """

    def __init__(self, layers: list, event_ndims: int = 3, **kwargs):
        super().__init__(layers, **kwargs)
        self.event_ndims = int(event_ndims)
        for layer in self.flow_layers:
            if not layer.per_example:
                raise ValueError(f"ReversibleChainLayer: {layer.name} ({type(layer).__name__}) "
                                 f"normalises with batch statistics, which cannot be "
                                 f"reconstructed from its output; keep it outside the block.")

    def build(self, input_shape):
        super().build(input_shape)
        event = tuple(input_shape[1:])
        if tuple(self.output_event_shape(event)) != event:
            raise ValueError(f"ReversibleChainLayer: the parts must keep the event shape, got "
                             f"{event} -> {tuple(self.output_event_shape(event))}.")

    def bijector(self, context=None):
        context = context or FlowContext()
        if context.init_records is not None:
            # Data-dependent initialisation records what each part sees: no gradient here.
            return super().bijector(context)
        compile = not tf.executing_eagerly()  # eager: nothing to trace, run the parts directly
        parts = []
        for layer in self.flow_layers:
            program = layer.program(context, compile=compile)
            if program is None:
                raise ValueError(f"ReversibleChainLayer: {layer.name} ({type(layer).__name__}) "
                                 f"cannot be written as a function of its weights here.")
            parts.append((program, [tf.convert_to_tensor(w) for w in layer.weights]))
        return fb.ReversibleChain(parts, event_ndims=self.event_ndims, name=self.name)

    def get_config(self):
        return {**super().get_config(), "event_ndims": self.event_ndims}


def group_reversible(layers: list, *, event_ndims: int = 3, dtype=None,
                     name: str = "reversible") -> list:
    """Wraps each maximal run of per-example, shape-keeping layers in a `ReversibleChainLayer`.

    Left as they are, as the layers describe themselves: layers that are not
    `per_example` (batch normalisation), layers that do not `keeps_event_shape`
    (squeeze, flatten) and containers with `flow_children` (`ChainLayer`,
    `FactorOutLayer`, whose inner flow is a block of its own). The factories use
    this for their `memory_saving=True` option.
    """
    grouped, run = [], []

    def close_run():
        if run:
            grouped.append(ReversibleChainLayer(list(run), event_ndims=event_ndims, dtype=dtype,
                                                name=f"{name}_{len(grouped)}"))
            run.clear()

    for layer in layers:
        if layer.flow_children() or not layer.keeps_event_shape or not layer.per_example:
            close_run()
            grouped.append(layer)
        else:
            run.append(layer)
    close_run()
    return grouped
