"""Glow: multi-scale flow of ActNorm -> invertible 1x1 conv -> coupling steps."""

from __future__ import annotations

from tfflow import bijectors as fb
from tfflow import layers as fl
from tfflow.layers.base import renamed_argument
from tfflow.mixed_precision import flow_and_network_dtypes
from tfflow.models._vector import context_units as _context_units
from tfflow.models.flow_model import FlowModel

__all__ = ["Glow", "glow_flow"]

COUPLINGS = fb.GLOW_COUPLINGS
#: The values of `Glow(permutation=...)`: how each step mixes the channels.
PERMUTATIONS = fb.GLOW_PERMUTATIONS
#: The old name of `PERMUTATIONS` (the argument is `permutation`), kept for one release.
MIXINGS = PERMUTATIONS


def _check_glow_arguments(image_shape, scales, steps_per_scale, hidden_channels, coupling,
                          permutation):
    if len(image_shape) != 3:
        raise ValueError(f"Glow: expected image_shape (H, W, C), got {tuple(image_shape)}.")
    h, w, _ = image_shape
    factor = 2 ** scales
    if scales < 1 or h % factor or w % factor:
        raise ValueError(
            f"Glow: {scales} scale(s) squeeze H and W by {factor}, so both must be divisible "
            f"by {factor}; got image_shape {tuple(image_shape)}. Use fewer scales.")
    if steps_per_scale < 1 or hidden_channels < 1:
        raise ValueError(f"Glow: steps_per_scale and hidden_channels must be >= 1, got "
                         f"{steps_per_scale} and {hidden_channels}.")
    if coupling not in COUPLINGS:
        raise ValueError(f"Glow: coupling must be one of {COUPLINGS}, got {coupling!r}.")
    if permutation not in PERMUTATIONS:
        raise ValueError(f"Glow: permutation must be one of {PERMUTATIONS}, got "
                         f"{permutation!r}.")


def glow_flow(image_shape, *, scales: int, steps_per_scale: int, hidden_channels: int,
              coupling: str = "affine", permutation: str = "lu", log_scale: str = "tanh",
              learn_top: bool = True, num_classes: int | None = None, seed: int = 0,
              num_bins: int = 8, memory_saving: bool = False,
              dtype=None, context_units: int | None = None) -> fl.ChainLayer:
    """The Glow flow (data -> latent) as a `ChainLayer`; see `Glow` for the arguments."""
    _check_glow_arguments(image_shape, scales, steps_per_scale, hidden_channels, coupling,
                          permutation)
    dtype, network_dtype = flow_and_network_dtypes(dtype)

    def level(index: int, shape: tuple) -> fl.ChainLayer:
        h, w, c = shape[0] // 2, shape[1] // 2, shape[2] * 4
        # The K steps are one layer of stacked [K, ...] weights, run as one traced step.
        steps = fl.GlowStepsLayer(
            steps_per_scale, hidden_channels, coupling=coupling, permutation=permutation,
            log_scale=log_scale, num_bins=num_bins, seed=seed * 100_003 + index * 1_009,
            memory_saving=memory_saving, network_dtype=network_dtype, dtype=dtype,
            context_units=context_units, name=f"steps_{index}")
        parts: list = [fl.SqueezeLayer(dtype=dtype), steps]
        if index == scales - 1:
            if learn_top or num_classes or context_units:
                parts.append(fl.LearnedPriorLayer(num_classes, context_units=context_units,
                                                  dtype=dtype, name="top_prior"))
        else:
            # Glow's split prior: the factored half's Gaussian mean and scale are
            # predicted from the kept half (an affine coupling with a zero-init conv).
            split = fb.ChannelSplit(0)
            prior_net = fl.ZeroInitConv(2 * split.transformed_channels(c), 3,
                                        context_units=context_units, dtype=network_dtype)
            parts.append(fl.AffineCouplingLayer(prior_net, split, log_scale=log_scale,
                                                dtype=dtype, name=f"split_prior_{index}"))
            kept = split.conditioning_channels(c)
            parts.append(fl.FactorOutLayer(kept, level(index + 1, (h, w, kept)), dtype=dtype))
        parts.append(fl.UnsqueezeLayer(dtype=dtype))
        # "level_i": the name saved models' weight paths use (the argument is `scales` now).
        return fl.ChainLayer(parts, dtype=dtype, name=f"level_{index}")

    return fl.ChainLayer([fl.ShiftLayer(0.5, dtype=dtype), level(0, tuple(image_shape))],
                         dtype=dtype, name="glow")


def Glow(image_shape, *, scales: int | None = None, steps_per_scale: int | None = None,
         hidden_channels: int = 64, coupling: str = "affine", permutation: str = "lu",
         log_scale: str = "tanh", learn_top: bool = True, num_classes: int | None = None,
         num_levels: int | None = 256, seed: int = 0, num_bins: int = 8,
         memory_saving: bool = False, dtype=None, context_shape=None, name: str = "glow",
         levels: int | None = None, steps_per_level: int | None = None) -> FlowModel:
    """Glow (Kingma & Dhariwal, 2018) as a `FlowModel`.

    Data x in [0, 1) -> centre (x - 0.5) -> L scales of: squeeze, K steps of
    [ActNorm -> invertible 1x1 conv -> coupling], then (all but the last scale)
    a learned Gaussian split prior on half the channels, which leave the flow,
    while the other half goes on to the next scale. The last scale ends in a
    learned (optionally class-conditional) top prior. The latent has the data's
    shape; the base is a standard normal.

    Conditional Glow, p(x | c) (`context_shape`): the standardised context c
    reaches every coupling network (a per-step projection `c @ W_k` added to
    its first hidden layer, the same at every pixel; see
    `tfflow.bijectors.glow_network`), every split prior and the top prior
    (mean and log-scale shifted by linear maps of c). `fit` takes (x, c)
    pairs; `log_prob`, `sample`, `encode`, `decode` take `context=`.

    Args:
      image_shape: (H, W, C); H and W divisible by 2**scales.
      scales: L, the number of scales (default 2).
      steps_per_scale: K, flow steps per scale (default 8).
      hidden_channels: width of each coupling's conv network (Glow: 512).
      coupling: "affine" (Glow), "additive" (NICE-style, constant Jacobian) or
        "spline" (rational-quadratic, Neural Spline Flows; `num_bins` bins).
      permutation: "lu" (LU 1x1 conv, Glow's default, XLA-friendly), "conv"
        (full 1x1 conv), or the baselines "reverse" / "shuffle".
      log_scale: affine scale: "tanh" (identity at init, bounded) or "glow"
        (sigmoid(h + 2)).
      learn_top: learn the top prior's mean/scale (always with a context).
      num_classes: class-conditional top prior; labels required in
        `log_prob`/`sample`/`fit` data.
      num_levels: quantisation levels of the data (256 for 8-bit images).
      seed: seeds the 1x1 conv initialisations.
      memory_saving: train without storing activations. In graph mode the
        backward pass of each level's K steps replays one step at a time
        either way (`tfflow.bijectors.StackedSteps`), from the K steps'
        inputs it kept (and, in graph mode, their coupling networks'
        activations); memory saving keeps none and rebuilds every step's
        input from its output instead, for one more pass through the steps.
        Under XLA the same loops run; eagerly (unrolled steps) the standard
        mode stores every activation. Same weights (a checkpoint loads either
        way) and values; gradients equal to round-off. Works with a context
        too (the gradient reaches the context's projections, and the context
        itself).
      dtype: "float32", "float64", a Keras mixed-precision policy
        ("mixed_bfloat16", "mixed_float16": coupling networks in 16 bits, the
        flow, its log-dets and the loss in float32; see
        `tfflow.mixed_precision`), or None (the default) for Keras' global
        policy, which is "float32" unless set.
      context_shape: the shape of one example's context for a conditional
        model p(x | c) (e.g. `(3,)`); not with `num_classes` (pass labels as
        a one-hot context instead). None: unconditional.
      name: model name.
      levels, steps_per_level: the deprecated names of `scales` and
        `steps_per_scale` (a `DeprecationWarning`; removed in the next
        release): "levels" also meant the data's quantisation (`num_levels`).

    The last conv of every coupling network starts at zero, so with
    `log_scale="tanh"` each coupling starts as the identity.

    Each scale's K steps are one `tfflow.layers.GlowStepsLayer` whose weights
    are stacked `[K, ...]`, run as one traced step in a `tf.while_loop` (graph
    mode and XLA; unrolled eagerly, and under XLA in the sampling direction), so
    tracing, and XLA's compile of a training step, does not grow with K.
    Models saved before this layout (a `ChainLayer` of per-step ActNorm, 1x1
    conv and coupling layers) still load and run as they were saved.
    """
    scales = renamed_argument("Glow", "levels", levels, "scales", scales)
    steps_per_scale = renamed_argument("Glow", "steps_per_level", steps_per_level,
                                       "steps_per_scale", steps_per_scale)
    try:
        units = _context_units(context_shape)
    except ValueError as error:
        raise ValueError(f"Glow: {error}") from None
    flow = glow_flow(image_shape, scales=2 if scales is None else scales,
                     steps_per_scale=8 if steps_per_scale is None else steps_per_scale,
                     hidden_channels=hidden_channels, coupling=coupling,
                     permutation=permutation, log_scale=log_scale, learn_top=learn_top,
                     num_classes=num_classes, seed=seed, num_bins=num_bins,
                     memory_saving=memory_saving, dtype=dtype,
                     context_units=units)
    return FlowModel(flow, image_shape, num_levels=num_levels, num_classes=num_classes,
                     context_shape=context_shape, name=name,
                     dtype=flow_and_network_dtypes(dtype)[0])
