"""The papers' CIFAR-10 models as named presets: `preset("glow_cifar10")`, `"realnvp_cifar10"`.

A preset is a factory (a key of `tfflow.models.MODELS`), the event shape it was
published for and the factory arguments that reproduce the paper's
architecture, with the parameter count tfflow builds and, where the paper gives
one, the paper's. Nothing here adds an architecture: a preset only names
arguments of `tfflow.models.Glow` / `tfflow.models.RealNVP`, so what the
factories document (direction, memory saving, mixed precision, distribution)
holds for a preset's model too.

#### Examples

```python
model = tfflow.models.preset("glow_cifar10", memory_saving=True)  # 44.05M parameters
model.compile(learning_rate=1e-3)
model.fit(cifar10_in_unit_interval, epochs=...)
```

#### References

[1] Diederik P. Kingma, Prafulla Dhariwal. Glow: Generative Flow with
    Invertible 1x1 Convolutions. NeurIPS 2018. https://arxiv.org/abs/1807.03039
    (code: https://github.com/openai/glow, model.py and tfops.py).
[2] Laurent Dinh, Jascha Sohl-Dickstein, Samy Bengio. Density estimation using
    Real NVP. ICLR 2017. https://arxiv.org/abs/1605.08803
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any

__all__ = ["PRESETS", "Preset", "preset", "preset_names"]


@dataclasses.dataclass(frozen=True)
class Preset:
    """One paper configuration.

    Attributes:
      name: the preset's name (a key of `PRESETS`).
      model: the factory, a key of `tfflow.models.MODELS` ("glow", "realnvp").
      event_shape: the data shape the paper trained on, (H, W, C).
      arguments: the factory's keyword arguments (read-only).
      params: the total parameter count tfflow builds (`model.count_params()`:
        trainable weights plus the few non-trainable ones, e.g. Glow's fixed
        permutations and ActNorm flags).
      trainable_params: the trainable parameter count tfflow builds.
      paper_params: the paper's parameter count, or None where it gives none.
      source: where the settings come from.
      notes: how tfflow's model and count differ from the paper's, and why.
    """

    name: str
    model: str
    event_shape: tuple[int, ...]
    arguments: Mapping[str, Any]
    params: int
    trainable_params: int
    paper_params: int | None
    source: str
    notes: str

    def config(self, **overrides) -> dict[str, Any]:
        """The factory's keyword arguments with `overrides` applied (a new dict)."""
        return {**self.arguments, **overrides}


def _frozen(**arguments) -> Mapping[str, Any]:
    return types.MappingProxyType(dict(arguments))


GLOW_CIFAR10 = Preset(
    name="glow_cifar10",
    model="glow",
    event_shape=(32, 32, 3),
    arguments=_frozen(scales=3, steps_per_scale=32, hidden_channels=512, coupling="affine",
                      permutation="lu", log_scale="glow", learn_top=True, num_levels=256),
    params=44_059_347,
    trainable_params=44_053_968,
    paper_params=44_000_000,
    source="Kingma & Dhariwal 2018 [1], CIFAR-10: L=3 scales of K=32 steps, 512 hidden "
           "channels, affine coupling with scale sigmoid(h + 2), invertible 1x1 conv, "
           "learned top prior, split priors, 8-bit data; parameter count 44.0M",
    notes="""\
tfflow's glow_cifar10 has 44,053,968 trainable parameters, +0.12% of the
paper's 44.0M (44,059,347 with the 5,379 non-trainable ones: the fixed
permutation and signs of each LU 1x1 conv, and the ActNorm flags).

Per step at a scale with C channels (C = 12, 24, 48) and width W = 512:
ActNorm 2C; LU 1x1 conv 2C^2 + C (lower and upper are stored as full C x C
matrices, of which C(C-1)/2 entries each are used, plus log|s|); coupling
network conv3x3(C/2 -> W) + bias, conv1x1(W -> W) + bias, zero-init
conv3x3(W -> C) + bias + log-gain. Each of the 2 split priors is a zero-init
conv3x3(C/2 -> C) + bias + log-gain; the top prior is a learned mean and
log-scale per channel (2 x 48).

openai/glow's released code builds 44,603,604 trainable parameters for the
same settings (its default full-matrix 1x1 conv). The differences, all of
which tfflow keeps on purpose:
  +467,748  openai/glow's 3x3 convs see one extra input channel (its
            "edge padding" indicator of the zero-padded border);
   +98,304  its hidden convs end in ActNorm (a shift and a log-scale per
            channel, 2 x 512) where tfflow's have a bias (512): 96 steps x 1,024;
   +83,040  its learned top prior is a zero-init conv3x3(96 -> 96) applied to a
            tensor of zeros (only the bias and log-gain act; the 82,944 kernel
            weights never change the model), tfflow's a per-channel mean and
            log-scale (96);
   -99,456  tfflow stores the LU factors (2C^2 + C per step) where openai/glow's
            default stores W (C^2): 32 x (156 + 600 + 2,352).
tfflow's count of used free parameters (each LU triangle's C(C-1)/2, not C^2)
is 43,957,200, -0.10% of 44.0M: either way within 1%.""",
)


REALNVP_CIFAR10 = Preset(
    name="realnvp_cifar10",
    model="realnvp",
    event_shape=(32, 32, 3),
    arguments=_frozen(scales=2, hidden_channels=64, blocks=8, batch_norm=True,
                      coupling="affine", num_levels=256),
    params=5_997_738,
    trainable_params=5_997_590,
    paper_params=None,
    source="Dinh et al. 2017 [2], CIFAR-10 (Section 4.1 and Appendix): multi-scale, one "
           "downscale (2 scales), 3 checkerboard couplings, squeeze, 3 channel-wise couplings, "
           "factor out half; 4 checkerboard couplings at the last scale; residual "
           "conditioners of 8 blocks with 64 feature maps; batch normalisation; logit "
           "preprocessing with alpha = 0.05",
    notes="""\
The paper reports no parameter count. tfflow's realnvp_cifar10 has 5,997,590
trainable parameters (5,997,738 with batch normalisation's 148 moving
statistics and flags): 10 affine couplings, each with a ResNet conditioner
conv3x3(C_in -> 64) + 8 blocks of two conv3x3(64 -> 64) + zero-init
conv3x3(64 -> 2 C_out) + log-gain, and a batch normalisation after every
coupling (a shift and log-scale per channel).

Where tfflow's RealNVP differs from the paper (and so its count from the
paper's model, whose count is unpublished):
  * the conditioners carry no batch or weight normalisation inside
    (`tfflow.layers.ResNetConditioner`: log-densities must not depend on the
    batch); the paper normalises inside them and uses weight normalisation;
  * the hidden width is 64 at both scales; the paper's multi-scale section
    doubles the feature maps after the squeeze (reference implementations do,
    e.g. 64 -> 128), which `tfflow.models.RealNVP` has no option for (one
    `hidden_channels` for all scales). With the doubling the channel-wise
    couplings' 3x3 convs would hold about 4x their weights.""",
)


PRESETS: Mapping[str, Preset] = types.MappingProxyType(
    {p.name: p for p in (GLOW_CIFAR10, REALNVP_CIFAR10)})


def preset_names() -> tuple[str, ...]:
    """The preset names, sorted (the one list the CLI's `--preset` choices come from)."""
    return tuple(sorted(PRESETS))


def get(name: str) -> Preset:
    """The `Preset` called `name`; a ValueError listing the names if there is none."""
    if name not in PRESETS:
        raise ValueError(f"tfflow.models.preset: unknown preset {name!r}; expected one of "
                         f"{', '.join(preset_names())}.")
    return PRESETS[name]


def preset(name: str, **overrides):
    """Builds the paper model `name` (a key of `PRESETS`) as a `FlowModel`.

    `overrides` replace or add factory keyword arguments, e.g.
    `memory_saving=True`, `dtype="mixed_bfloat16"`, or a smaller
    `steps_per_scale` to try the pipeline; the event shape stays the paper's.

    Args:
      name: "glow_cifar10" or "realnvp_cifar10".
      **overrides: keyword arguments of the preset's factory
        (`tfflow.models.Glow` / `tfflow.models.RealNVP`).

    Returns:
      The built `FlowModel` for data of shape `PRESETS[name].event_shape`, in [0, 1).

    Raises:
      ValueError: unknown name (the message lists the presets), or an argument
        the factory refuses.
    """
    chosen = get(name)
    from tfflow.models import MODELS  # pylint: disable=import-outside-toplevel  # cycle
    factory = MODELS[chosen.model]
    try:
        return factory(chosen.event_shape, **chosen.config(**overrides))
    except TypeError as error:
        raise ValueError(f"tfflow.models.preset({name!r}): {error}") from None
