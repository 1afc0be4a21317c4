"""Keras layers that own a flow's weights and hand out tfflow bijectors.

`layer.bijector(context)` builds the stateless bijector from the layer's
current weights; `FlowModel` chains them. Every layer is registered for
`.keras` serialisation (package "tfflow").
"""

from tfflow.layers.autoregressive import (MADE, InverseAutoregressiveLayer,
                                          MaskedAutoregressiveLayer, StandardizeLayer,
                                          TriangularAffineLayer)
from tfflow.layers.base import FlowContext, FlowLayer
from tfflow.layers.conditioners import (GlowConditioner, MLPConditioner, ResNetConditioner,
                                        ZeroInitConv)
from tfflow.layers.glow_steps import GlowStepsLayer, StackedGlowNetworks
from tfflow.layers.coupling import AdditiveCouplingLayer, AffineCouplingLayer, SplineCouplingLayer
from tfflow.layers.mixing import (Conv1x1Layer, Invertible1x1ConvLayer, LUConv1x1Layer,
                                  LUInvertible1x1ConvLayer, PermutationLayer,
                                  PermuteChannelsLayer)
from tfflow.layers.normalization import ActNormLayer, BatchNormalizationLayer, BatchNormLayer
from tfflow.layers.reversible import ReversibleChainLayer, group_reversible
from tfflow.layers.structure import (ChainLayer, DiagonalScalingLayer, FactorOutLayer,
                                     FlattenLayer, LearnedPriorLayer, LogitLayer,
                                     LogitPreprocessingLayer, ShiftLayer, SqueezeLayer,
                                     UnsqueezeLayer)

__all__ = [
    "ActNormLayer", "AdditiveCouplingLayer", "AffineCouplingLayer", "BatchNormalizationLayer", "BatchNormLayer",
    "ChainLayer", "InverseAutoregressiveLayer", "MADE", "MaskedAutoregressiveLayer",
    "StandardizeLayer", "TriangularAffineLayer", "Conv1x1Layer", "DiagonalScalingLayer", "FactorOutLayer", "FlattenLayer",
    "FlowContext", "FlowLayer", "GlowConditioner", "GlowStepsLayer", "StackedGlowNetworks", "LUConv1x1Layer", "LearnedPriorLayer",
    "LogitLayer", "MLPConditioner", "PermutationLayer", "ResNetConditioner",
    "ReversibleChainLayer", "ShiftLayer", "SplineCouplingLayer",
    # Names that pair with the bijectors (the old names above are deprecated aliases):
    "Invertible1x1ConvLayer", "LUInvertible1x1ConvLayer", "LogitPreprocessingLayer",
    "PermuteChannelsLayer",
    "SqueezeLayer", "UnsqueezeLayer", "ZeroInitConv", "group_reversible",
]
