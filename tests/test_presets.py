"""The paper presets (tfflow.models.presets): parameter counts, names, overrides.

Build only, no training (benchmarks/presets.py takes the training steps).
"""

from __future__ import annotations

import math

import pytest

import tfflow
from tfflow.models import presets


def glow_trainable(scales: int, steps: int, width: int, channels: int = 3) -> int:
    """tfflow Glow's trainable parameter count in closed form (see GLOW_CIFAR10.notes)."""
    total = 0
    c = 4 * channels
    for index in range(scales):
        half = c // 2
        step = (2 * c  # ActNorm
                + 2 * c * c + c  # LU 1x1 conv: lower, upper, log|s|
                + 9 * half * width + width  # conv3x3 in
                + width * width + width  # conv1x1
                + 9 * width * c + c + c)  # zero-init conv3x3 out, log-gain
        total += steps * step
        if index < scales - 1:
            total += 9 * half * c + 2 * c  # split prior
            c = 2 * c  # keep half, squeeze: x4
    return total + 2 * c  # learned top prior: mean and log-scale per channel


def trainable(model) -> int:
    return sum(math.prod(int(d) for d in w.shape) for w in model.trainable_weights)


def test_glow_cifar10_builds_with_the_documented_count():
    chosen = presets.PRESETS["glow_cifar10"]
    model = tfflow.models.preset("glow_cifar10")
    assert tuple(model.event_shape) == (32, 32, 3)
    assert model.count_params() == chosen.params == 44_059_347
    assert trainable(model) == chosen.trainable_params == glow_trainable(3, 32, 512)
    # The target: within 1% of the paper's 44.0M.
    assert abs(chosen.trainable_params / chosen.paper_params - 1) < 0.01
    assert abs(chosen.params / chosen.paper_params - 1) < 0.01


def test_realnvp_cifar10_builds_with_the_documented_count():
    chosen = presets.PRESETS["realnvp_cifar10"]
    model = tfflow.models.preset("realnvp_cifar10")
    assert tuple(model.event_shape) == (32, 32, 3)
    assert model.count_params() == chosen.params
    assert trainable(model) == chosen.trainable_params
    assert chosen.paper_params is None  # the paper gives none; the notes say so
    assert "no parameter count" in chosen.notes


def test_overrides_replace_the_paper_arguments():
    model = tfflow.models.preset("glow_cifar10", steps_per_scale=2, hidden_channels=16,
                                 memory_saving=True)
    # The closed form that gives the full preset's count also counts the small one.
    assert trainable(model) == glow_trainable(3, 2, 16)
    assert presets.PRESETS["glow_cifar10"].config(steps_per_scale=2)["steps_per_scale"] == 2
    # The preset itself is unchanged (read-only arguments).
    assert presets.PRESETS["glow_cifar10"].arguments["steps_per_scale"] == 32
    with pytest.raises(TypeError):
        presets.PRESETS["glow_cifar10"].arguments["scales"] = 2  # type: ignore[index]


def test_unknown_name_lists_the_presets():
    with pytest.raises(ValueError, match="unknown preset 'glow_mnist'; expected one of "
                                         "glow_cifar10, realnvp_cifar10"):
        tfflow.models.preset("glow_mnist")


def test_unknown_argument_names_the_preset():
    with pytest.raises(ValueError, match=r"preset\('realnvp_cifar10'\).*levels"):
        tfflow.models.preset("realnvp_cifar10", levels=3)


def test_every_preset_documents_its_source():
    assert set(presets.preset_names()) == set(presets.PRESETS) == {"glow_cifar10",
                                                                   "realnvp_cifar10"}
    for chosen in presets.PRESETS.values():
        assert chosen.model in tfflow.models.MODELS
        assert chosen.source and chosen.notes
