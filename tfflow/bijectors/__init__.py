"""tfflow's bijectors: stateless `tfp.bijectors.Bijector` subclasses for flows.

Convention (TFP's): `forward` maps latent -> data (generation); `inverse` maps
data -> latent, the normalising direction of the papers. Image bijectors act on
NHWC events ([H, W, C], `event_ndims=3`); the per-channel ones also act on [D]
vectors (`event_ndims=1`). None creates variables: pass tensors or variables
(tfflow's Keras layers own the weights and build these on demand).

Each bijector's docstring only points here for the direction. Shared plumbing
lives in the base class `FlowBijector`: one input-validation hook
(`_validate_input`) and one parameter conversion (`_convert_parameters`).
"""

from tfflow.bijectors._base import FlowBijector
from tfflow.bijectors.actnorm import (ActNorm, actnorm_initial_parameters,
                                      actnorm_parameters_from_moments)
from tfflow.bijectors.autoregressive import InverseAutoregressive, MaskedAutoregressive
from tfflow.bijectors.batch_norm import BatchNormalization
from tfflow.bijectors.glow_steps import (GLOW_COUPLINGS, GLOW_PERMUTATIONS, GatherChannels,
                                         GlowSteps, ParameterSpec, glow_network,
                                         glow_steps_parameters)
from tfflow.bijectors.coupling import (AdditiveCoupling, AffineCoupling, Coupling,
                                       RationalQuadraticSplineCoupling, SplineCoupling)
from tfflow.bijectors.elementwise import (AffineTransform, ElementwiseTransform,
                                          SplineTransform, glow_log_scale, tanh_log_scale)
from tfflow.bijectors.invertible_1x1_conv import (Invertible1x1Conv, LUInvertible1x1Conv,
                                                  lu_parameters)
from tfflow.bijectors.logit import LogitPreprocessing
from tfflow.bijectors.partitions import AlternatingMask, ChannelSplit, Checkerboard, Partition
from tfflow.bijectors.permute import PermuteChannels
from tfflow.bijectors.program import (BijectorProgram, ChainProgram, ProgramBijector,
                                      ProgramChain)
from tfflow.bijectors.reversible import ReversibleChain
from tfflow.bijectors.squeeze import Squeeze
from tfflow.bijectors.stacked_steps import StackedSteps
from tfflow.bijectors.structure import ApplyToChannels, ElementwiseAffine, FactorOut
from tfflow.bijectors.triangular_affine import TriangularAffine, triangular_affine_parameters

__all__ = [
    "GLOW_COUPLINGS",
    "GLOW_PERMUTATIONS",
    "ActNorm",
    "AdditiveCoupling",
    "AffineTransform",
    "AffineCoupling",
    "AlternatingMask",
    "ApplyToChannels",
    "BatchNormalization",
    "BijectorProgram",
    "ChannelSplit",
    "ChainProgram",
    "Checkerboard",
    "Coupling",
    "GatherChannels",
    "GlowSteps",
    "ElementwiseAffine",
    "ElementwiseTransform",
    "FactorOut",
    "FlowBijector",
    "InverseAutoregressive",
    "Invertible1x1Conv",
    "LUInvertible1x1Conv",
    "LogitPreprocessing",
    "MaskedAutoregressive",
    "ParameterSpec",
    "Partition",
    "PermuteChannels",
    "ProgramBijector",
    "ProgramChain",
    "RationalQuadraticSplineCoupling",
    "ReversibleChain",
    "SplineCoupling",
    "SplineTransform",
    "Squeeze",
    "StackedSteps",
    "TriangularAffine",
    "actnorm_initial_parameters",
    "actnorm_parameters_from_moments",
    "glow_log_scale",
    "glow_network",
    "glow_steps_parameters",
    "lu_parameters",
    "tanh_log_scale",
    "triangular_affine_parameters",
]
