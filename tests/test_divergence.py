"""Divergence, atomic saves and numerical health of trained models (in process)."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfflow import data as tfdata
from tfflow import training
from tfflow.training import checkpoints

TINY_MOONS = dict(model="realnvp", dataset="two_moons", num_examples=512, num_couplings=2,
                  hidden_units=(8,), batch_size=128, num_samples=4, verbose=0,
                  max_train_seconds=0)


def test_an_absurd_learning_rate_stops_at_the_step_and_keeps_a_loadable_model(tmp_path):
    config = training.TrainConfig(workdir=str(tmp_path), epochs=3, learning_rate=1e6,
                                  warmup_steps=0, ema_momentum=0, **TINY_MOONS)
    with pytest.raises(training.TrainingDiverged) as caught:
        training.train(config)
    error = caught.value
    message = str(error)
    steps_per_epoch = 4  # 460 training points (10% held out) in batches of 128
    assert error.step == (error.epoch - 1) * steps_per_epoch + error.batch
    assert f"at step {error.step} (epoch {error.epoch}, batch {error.batch})" in message
    # The diagnostic pass names a layer of the flow (the weights before the bad step).
    assert error.layer and error.layer.startswith("layer 'realnvp/"), message
    assert error.layer in message and "learning_rate" in message
    assert error.checkpoint == os.path.join(str(tmp_path), "model.keras") in message
    model = keras.models.load_model(error.checkpoint)
    x = next(iter(tfdata.load("two_moons", "test", batch_size=64)))
    assert np.all(np.isfinite(model.log_prob(x).numpy()))
    assert not (tmp_path / "backup").exists()  # resuming would replay the same NaN


def test_clipnorm_reaches_the_optimizer_and_trains(tmp_path):
    config = training.TrainConfig(workdir=str(tmp_path), epochs=1, clipnorm=0.5, **TINY_MOONS)
    result = training.train(config)
    assert result.model.optimizer.clipnorm == 0.5
    assert np.isfinite(result.test.nll)


def test_find_non_finite_layer_names_the_layer_with_a_broken_weight():
    from tfflow import models  # pylint: disable=import-outside-toplevel
    model = models.build("realnvp", (2,), num_couplings=2, hidden_units=(4,))
    x = tf.random.normal([8, 2], seed=1)
    assert training.find_non_finite_layer(model, x) is None
    layer = model.flow.flow_layers[1]
    weight = layer.trainable_weights[0]
    weight.assign(tf.fill(weight.shape, np.inf))
    found = training.find_non_finite_layer(model, x)
    assert found.startswith(f"layer 'realnvp/{layer.name}' has non-finite weights"), found


def test_find_non_finite_layer_runs_a_conditional_model_on_its_context():
    from tfflow import models  # pylint: disable=import-outside-toplevel
    model = models.build("realnvp", (2,), num_couplings=2, hidden_units=(4,), context_shape=(1,))
    coupling = model.flow.flow_layers[1]
    # Positive kernels (the output one is zero-initialised), so the context reaches the shift
    # whatever the random initialisation.
    for kernel in (coupling.trainable_weights[0], coupling.trainable_weights[2]):
        kernel.assign(tf.ones_like(kernel))
    x = tf.random.normal([8, 2], seed=1)
    assert training.find_non_finite_layer(model, x, context=tf.ones([8, 1])) is None
    found = training.find_non_finite_layer(model, x, context=tf.fill([8, 1], 3e38))
    # Named either as non-finite or as the layer that blew the latent up (float32 round-off
    # decides which); both name the coupling the context reaches.
    assert f"layer 'realnvp/{coupling.name}'" in found, found


def _model_and_file(tmp_path):
    from tfflow import models  # pylint: disable=import-outside-toplevel
    model = models.build("realnvp", (2,), num_couplings=1, hidden_units=(4,))
    path = str(tmp_path / "model.keras")
    training.save_model(model, path)
    return model, path


def test_a_crash_in_the_middle_of_a_save_leaves_the_previous_file(tmp_path, monkeypatch):
    model, path = _model_and_file(tmp_path)
    before = open(path, "rb").read()

    def crash_half_way(target):
        with open(target, "wb") as handle:
            handle.write(before[: len(before) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(model, "save", crash_half_way)
    with pytest.raises(OSError, match="disk full"):
        training.save_model(model, path)
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["model.keras"]  # the partial file is gone
    keras.models.load_model(path)


def test_a_temporary_file_left_by_a_killed_save_is_never_loaded_and_is_cleaned(tmp_path):
    model, path = _model_and_file(tmp_path)
    stray = tmp_path / f"{training.TMP_PREFIX}12345-model.keras"
    stray.write_bytes(b"PK\x03\x04 half a zip")  # what a SIGKILL during a save leaves
    (tmp_path / "config.json").write_text(training.TrainConfig(
        dataset="two_moons", model="realnvp", workdir=str(tmp_path)).to_json())
    loaded, _ = training.load_run(str(tmp_path))  # takes model.keras, not the stray
    assert len(loaded.get_weights()) == len(model.get_weights())
    checkpoints.remove_temporaries(str(tmp_path))
    assert not stray.exists() and os.path.isfile(path)


@pytest.mark.parametrize("content", [b"", b"garbage, not a zip", "truncate"])
def test_a_corrupt_model_file_is_a_user_error(tmp_path, content):
    _, path = _model_and_file(tmp_path)
    if content == "truncate":
        content = open(path, "rb").read()[:200]
    with open(path, "wb") as handle:
        handle.write(content)
    (tmp_path / "config.json").write_text(training.TrainConfig(
        dataset="two_moons", model="realnvp").to_json())
    with pytest.raises(training.UserError, match="corrupt or not a tfflow model file"):
        training.load_run(str(tmp_path))


def test_a_trained_glow_round_trips_within_1e_4_and_reports_its_1x1_convs(tmp_path):
    config = training.TrainConfig(workdir=str(tmp_path), scales=2, steps_per_scale=1,
                                  hidden_channels=16, epochs=2, batch_size=64, num_samples=4,
                                  verbose=0, max_train_seconds=0)
    result = training.train(config)
    health = training.evaluate(result.model, result.config, split="test")
    assert health.num_examples == 360
    assert health.max_round_trip_error < 1e-4
    numbers = health.conv_condition_numbers
    assert len(numbers) == 2 and all(1.0 <= number < 1e3 for number in numbers.values())
    assert "1x1 convs, worst condition number" in health.summary()


def test_condition_number_is_that_of_the_matrix():
    from tfflow import models  # pylint: disable=import-outside-toplevel
    model = models.build("glow", (4, 4, 1), scales=1, steps_per_scale=1, hidden_channels=4,
                         permutation="conv")
    (name, number), = training.conv1x1_condition_numbers(model).items()
    assert number == pytest.approx(1.0, abs=1e-5)  # initialised to a rotation
    # Glow holds a level's K steps in one layer, its 1x1 kernels stacked [K, C, C].
    layer = next(l for _, l in model.flow.walk() if name.startswith(f"{l.name}/"))
    kernel = np.diag([1.0, 2.0, 4.0, 8.0]).astype(np.float32)
    layer.step_weights["kernel"].assign(kernel[None])
    assert training.conv1x1_condition_numbers(model)[name] == pytest.approx(8.0, rel=1e-5)
