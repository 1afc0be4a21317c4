"""Vector and table density models: MAF, IAF and NSF, each starting from the Gaussian fit."""

from __future__ import annotations

from typing import Sequence

from tfflow import layers as fl
from tfflow.mixed_precision import flow_and_network_dtypes
from tfflow.models._vector import (GAUSSIAN_START_EXAMPLES, context_units, vector_dims,
                                   with_gaussian_start)
from tfflow.models.flow_model import FlowModel

__all__ = ["IAF", "MAF", "NSF"]

MIXINGS = ("reverse", "lu", "none")


def _mixing(kind: str, index: int, dtype) -> list[fl.FlowLayer]:
    if kind == "reverse":
        return [fl.PermuteChannelsLayer(kind="reverse", event_ndims=1, dtype=dtype,
                                    name=f"reverse_{index}")]
    if kind == "lu":
        return [fl.LUInvertible1x1ConvLayer(event_ndims=1, seed=index, dtype=dtype,
                                            name=f"lu_{index}")]
    return []


def _autoregressive_model(owner: str, layer_class, event_shape, *, transforms: int,
                          hidden_units: Sequence[int], transform: str, num_bins: int,
                          bound: float, mixing: str, num_levels: int | None, context_shape,
                          dtype, name: str) -> FlowModel:
    """The model of the factories `MAF`, `IAF` and `NSF`, which pass their arguments as given.

    `owner` names the factory in errors; `layer_class` is its autoregressive
    layer (masked: fast `log_prob`; inverse: fast `sample`).
    """
    dims = vector_dims(owner, event_shape)
    if int(transforms) < 1:
        raise ValueError(f"{owner}: expected transforms >= 1, got {transforms}.")
    if mixing not in MIXINGS:
        raise ValueError(f"{owner}: mixing must be one of {MIXINGS}, got {mixing!r}.")
    dtype, network_dtype = flow_and_network_dtypes(dtype)
    units = context_units(context_shape)
    parts = []
    for index in range(int(transforms)):
        if index:
            parts += _mixing(mixing, index, dtype)
        parts.append(layer_class(hidden_units=tuple(hidden_units), transform=transform,
                                 num_bins=num_bins, bound=bound, network_dtype=network_dtype,
                                 context_units=units, dtype=dtype, name=f"{name}_{index}"))
    parts = with_gaussian_start(parts, dtype, units)
    return FlowModel(fl.ChainLayer(parts, dtype=dtype, name=name), (dims,), name=name,
                     dtype=dtype, num_levels=num_levels, context_shape=context_shape,
                     initialization_examples=GAUSSIAN_START_EXAMPLES)


def MAF(event_shape, *, transforms: int = 5, hidden_units: Sequence[int] = (128, 128),
        transform: str = "affine", num_bins: int = 8, bound: float = 5.0,
        mixing: str = "reverse", num_levels: int | None = None, context_shape=None, dtype=None,
        name: str = "maf") -> FlowModel:
    """Masked autoregressive flow (Papamakarios et al., 2017) as a `FlowModel` on [D] vectors.

    Data -> latent: the data's standardisation, `transforms` autoregressive
    layers, each a MADE (`hidden_units`) and an affine (or spline) map per
    entry, with the entry order reversed between them (`mixing="reverse"`;
    `"lu"` learns a linear mixing instead), and a full affine map. The first
    and last are set from the data by `initialize` and the layers between
    start as the identity, so an untrained model is the Gaussian fit.

    Speed: `log_prob` and training take one MADE pass per layer; `sample`
    takes D passes per layer (use `IAF` where sampling must be fast).

    Args:
      event_shape: (D,).
      transforms: number of autoregressive layers.
      hidden_units: widths of each MADE's hidden layers (each >= D - 1).
      transform: "affine" (MAF) or "spline" (see `NSF`).
      num_bins, bound: the spline's bins on [-bound, bound] (standardised units).
      mixing: "reverse", "lu" or "none" between the layers.
      num_levels: quantisation levels of dequantised data (for bits/dim);
        None for continuous data (tables).
      context_shape: shape of the context c of a conditional model p(x | c)
        (e.g. (3,)): every MADE sees the (standardised) context, and the
        Gaussian start is the linear-Gaussian regression of x on c. `fit`
        then takes (x, c) pairs; `log_prob`, `sample` and the rest take
        `context=`.
      dtype: "float32", "float64", a mixed-precision policy, or None.
    """
    # The arguments, by name: the three factories differ only in what they pass first.
    return _autoregressive_model("MAF", fl.MaskedAutoregressiveLayer, **locals())


def IAF(event_shape, *, transforms: int = 5, hidden_units: Sequence[int] = (128, 128),
        transform: str = "affine", num_bins: int = 8, bound: float = 5.0,
        mixing: str = "reverse", num_levels: int | None = None, context_shape=None, dtype=None,
        name: str = "iaf") -> FlowModel:
    """Inverse autoregressive flow (Kingma et al., 2016) as a `FlowModel` on [D] vectors.

    The arguments and the Gaussian start are `MAF`'s. The fast direction is
    the other one: `sample` takes one MADE pass per layer, `log_prob` and
    training take D (a fit on data is D times slower than `MAF`'s).
    """
    return _autoregressive_model("IAF", fl.InverseAutoregressiveLayer, **locals())


def NSF(event_shape, *, transforms: int = 3, hidden_units: Sequence[int] = (128, 128),
        num_bins: int = 8, bound: float = 5.0, mixing: str = "reverse",
        num_levels: int | None = None, context_shape=None, dtype=None,
        name: str = "nsf") -> FlowModel:
    """Neural Spline Flow (Durkan et al., 2019), autoregressive form, on [D] vectors.

    `MAF` with monotone rational-quadratic splines (`num_bins` bins on
    [-bound, bound] of the standardised data, linear tails outside) in place
    of the affine maps: far more flexible per layer, so fewer layers are
    needed. For the coupling form use `RealNVP(..., coupling="spline")`.
    """
    return _autoregressive_model("NSF", fl.MaskedAutoregressiveLayer, transform="spline",
                                 **locals())
