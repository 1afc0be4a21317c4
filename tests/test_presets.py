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


# The run configuration and tfflow-train --preset ------------------------------------------------

def test_a_preset_sets_the_runs_model_and_architecture():
    from tfflow import training  # pylint: disable=import-outside-toplevel
    config = training.TrainConfig(preset="realnvp_cifar10").resolved()
    assert config.model == "realnvp"
    expected = dict(presets.PRESETS["realnvp_cifar10"].arguments)
    del expected["num_levels"]  # the data's quantisation decides it
    assert config.architecture() == expected
    # Flags given too override the preset, under the factory's current names.
    glow = training.TrainConfig(preset="glow_cifar10", scales=2, hidden_channels=64).resolved()
    arguments = glow.architecture()
    assert (glow.model, arguments["scales"], arguments["hidden_channels"]) == ("glow", 2, 64)
    assert "levels" not in arguments and arguments["steps_per_scale"] == 32
    assert arguments["log_scale"] == "glow"
    realnvp = training.TrainConfig(preset="realnvp_cifar10", hidden_channels=32).resolved()
    assert realnvp.architecture()["hidden_channels"] == 32 and "filters" not in \
        realnvp.architecture()


def test_an_unknown_preset_is_a_user_error_listing_the_presets():
    from tfflow import training  # pylint: disable=import-outside-toplevel
    with pytest.raises(training.UserError, match="unknown preset 'glow'; expected one of "
                                                 "glow_cifar10, realnvp_cifar10"):
        training.TrainConfig(preset="glow").resolved()


def test_train_builds_the_preset_on_cifar10(tmp_path):
    """The preset through `train` (tfflow-train's path), on mock CIFAR-10 at a reduced size."""
    tfds = pytest.importorskip("tensorflow_datasets")
    from tfflow import training  # pylint: disable=import-outside-toplevel
    config = training.TrainConfig(preset="glow_cifar10", steps_per_scale=1, hidden_channels=8,
                                  dataset="cifar10", data_dir=str(tmp_path / "tfds"),
                                  workdir=str(tmp_path / "run"), epochs=1, batch_size=8,
                                  max_train_seconds=0, num_samples=4, verbose=0)
    with tfds.testing.mock_data(num_examples=16):
        result = training.train(config)
    assert result.model.name == "glow" and tuple(result.model.event_shape) == (32, 32, 3)
    # The preset's 3 scales and its other arguments, the flags' depth and width.
    assert trainable(result.model) == glow_trainable(3, 1, 8)
    _, saved = training.load_run(str(tmp_path / "run"))
    assert saved.preset == "glow_cifar10" and saved.model == "glow"


def test_tfflow_train_refuses_an_unknown_preset_in_one_line(tmp_path):
    import os  # pylint: disable=import-outside-toplevel
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel
    app = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bin",
                       "tfflow-train")
    result = subprocess.run([sys.executable, app, "--preset=glow_imagenet",
                             f"--workdir={tmp_path / 'run'}"], capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=120,
                            check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert ("unknown preset 'glow_imagenet'; expected one of glow_cifar10, realnvp_cifar10"
            in result.stderr + result.stdout)


def test_a_preset_refuses_data_of_another_shape(tmp_path):
    from tfflow import training  # pylint: disable=import-outside-toplevel
    config = training.TrainConfig(preset="glow_cifar10", dataset="digits",
                                  workdir=str(tmp_path / "run"), epochs=1, verbose=0)
    with pytest.raises(training.UserError, match=r"preset glow_cifar10 is for \(32, 32, 3\) "
                                                 r"images; digits has \(8, 8, 1\)"):
        training.train(config)
