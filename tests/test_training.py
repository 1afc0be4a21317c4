"""Tests for tfflow.training and tfflow.images, in process (the CLI has its own tests)."""

import dataclasses
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfflow import data as tfdata
from tfflow import images, training
from tfflow.training import runs

TINY_VECTOR_FLOW = dict(model="realnvp", num_couplings=2, hidden_units=(8,), epochs=1,
                        batch_size=64, verbose=0)


# ------------------------------------------------------------------- images


def test_image_grid_tiles_pads_and_scales():
    batch = np.zeros([5, 4, 4, 1], np.float32)
    batch[1] = 1.0
    grid = images.image_grid(batch, num_columns=3, padding=1, scale=2)
    # 2 rows x 3 columns of (4 + 1) pixels, + 1 border, times 2.
    assert grid.shape == (2 * (2 * 5 + 1), 2 * (3 * 5 + 1), 1)
    assert grid.dtype == tf.uint8
    grid = grid.numpy()[::2, ::2, 0]
    assert np.all(grid[1:5, 1:5] == 0)              # image 0
    assert np.all(grid[1:5, 6:10] == 255)           # image 1
    assert np.all(grid[0] == 128)                   # border
    assert np.all(grid[6:10, 11:15] == 128)         # blank cell after the 5 images


def test_image_grid_clips_and_enlarges_small_images_by_default():
    grid = images.image_grid(np.full([1, 8, 8, 3], 2.0, np.float32), padding=0)
    assert grid.shape == (32, 32, 3)
    assert int(tf.reduce_min(grid)) == 255


@pytest.mark.parametrize("bad", [np.zeros([4, 4, 1]), np.zeros([2, 4, 4, 2]),
                                 np.zeros([0, 4, 4, 1])])
def test_image_grid_rejects_what_is_not_a_batch_of_images(bad):
    with pytest.raises(ValueError, match="image_grid"):
        images.image_grid(bad)


def test_write_image_grid_writes_a_png_that_decodes_to_the_grid(tmp_path):
    batch = np.random.default_rng(0).uniform(size=[3, 8, 8, 1]).astype(np.float32)
    path = images.write_image_grid(str(tmp_path / "sub" / "grid.png"), batch)
    decoded = tf.io.decode_png(tf.io.read_file(path))
    np.testing.assert_array_equal(decoded, images.image_grid(batch))


def test_histogram_image_puts_points_where_a_plot_would():
    points = np.array([[0.9, 0.9]] * 10 + [[0.1, 0.1]])  # top right, bottom left
    picture = images.histogram_image(points, (0.0, 1.0, 0.0, 1.0), resolution=2).numpy()
    assert picture.shape == (2, 2, 3)
    brightness = picture.sum(axis=-1)
    assert brightness[0, 1] == brightness.max()        # top right: the 10 points
    assert brightness[1, 0] > brightness[0, 0]         # bottom left: 1 point vs none


def test_density_image_shows_where_the_density_is_high():
    def log_prob(x):  # a narrow bump at (1, 1)
        return -tf.reduce_sum(tf.square(x - 1.0), axis=-1) / 0.02

    points = np.array([[-1.0, -1.0], [1.0, 1.0]])
    picture = images.density_image(log_prob, points, (-2.0, 2.0, -2.0, 2.0), resolution=8)
    assert picture.shape == (8 + 2, 2 * 8 + 3, 3) and picture.dtype == tf.uint8
    heat = picture.numpy()[1:9, 1:9].sum(axis=-1)
    row, column = np.unravel_index(np.argmax(heat), heat.shape)
    assert (row, column) in {(1, 5), (1, 6), (2, 5), (2, 6)}  # x = 1 right, y = 1 up


def test_density_image_survives_minus_infinity_log_probs():
    picture = images.density_image(lambda x: tf.fill([tf.shape(x)[0]], -np.inf),
                                   np.zeros([3, 2]), (-1.0, 1.0, -1.0, 1.0), resolution=4)
    assert picture.shape == (6, 11, 3)


# ------------------------------------------------------------------- config


def test_config_defaults_resolve_to_glow_on_digits_under_tfflow_runs():
    config = training.TrainConfig().resolved()
    assert (config.model, config.dataset) == ("glow", "digits")
    assert config.workdir == os.path.join(".", "tfflow_runs", "glow-digits")
    assert training.default_workdir("realnvp", "/data/My Table.csv") == \
        os.path.join(".", "tfflow_runs", "realnvp-My-Table")


@pytest.mark.parametrize("dataset, batch_size, learning_rate", [
    ("digits", 64, 8e-3), ("cifar10", 64, 8e-3), ("two_moons", 32, 2e-3),
    ("/data/table.csv", 32, 2e-3), ("/data/table.NPY", 32, 2e-3)])
def test_unset_batch_size_and_rate_follow_the_kind_of_data(dataset, batch_size, learning_rate):
    config = training.TrainConfig(dataset=dataset).resolved()
    assert (config.batch_size, config.learning_rate) == (batch_size, learning_rate)
    given = training.TrainConfig(dataset=dataset, batch_size=8, learning_rate=1e-4).resolved()
    assert (given.batch_size, given.learning_rate) == (8, 1e-4)


def test_config_json_round_trip():
    config = training.TrainConfig(model="nice", hidden_units=(16, 8), learning_rate=3e-4)
    back = training.TrainConfig.from_json(config.to_json()).resolved()
    assert dataclasses.replace(back, workdir=None) == dataclasses.replace(config.resolved(),
                                                                         workdir=None)
    assert back.hidden_units == (16, 8)


@pytest.mark.parametrize("changes, words", [
    (dict(model="flowy"), "unknown model 'flowy'"),
    (dict(epochs=0), "epochs"),
    (dict(batch_size=2.5), "batch_size"),
    (dict(learning_rate=-1.0), "learning_rate"),
    (dict(strategy="spread"), "unknown strategy 'spread'"),
    (dict(hidden_units=(8, 0)), "hidden_units"),
    (dict(max_train_seconds=-1.0), "max_train_seconds"),
    (dict(lr_schedule="step"), "unknown lr_schedule 'step'"),
])
def test_config_rejects_bad_values_as_user_errors(changes, words):
    with pytest.raises(training.UserError, match=words):
        training.TrainConfig(**changes).resolved()


def test_architecture_options_a_model_does_not_take_are_user_errors(tmp_path):
    config = training.TrainConfig(steps_per_scale=2, num_couplings=3, workdir=str(tmp_path))
    with pytest.raises(training.UserError, match="glow takes no num_couplings"):
        training.train(config)


def test_glow_on_vectors_is_a_user_error_that_suggests_realnvp(tmp_path):
    with pytest.raises(training.UserError, match="realnvp"):
        training.train(training.TrainConfig(dataset="two_moons", workdir=str(tmp_path)))


def test_make_strategy_default_is_the_default_strategy():
    assert training.make_strategy("default") is tf.distribute.get_strategy()


def test_load_run_of_an_empty_folder_is_a_user_error(tmp_path):
    with pytest.raises(training.UserError, match="no model.keras"):
        training.load_run(str(tmp_path))


# ---------------------------------------------------------------- callbacks


def _tiny_keras_model():
    model = keras.Sequential([keras.Input([1]), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_time_budget_stops_after_the_batch_that_exceeds_it():
    budget = training.TimeBudget(0.0)
    x = np.zeros([64, 1], np.float32)
    history = _tiny_keras_model().fit(x, x, batch_size=8, epochs=5, verbose=0,
                                      callbacks=[budget])
    assert budget.stopped
    assert len(history.history["loss"]) == 1


def test_anneal_learning_rate_warms_up_then_decays_by_steps_or_time_whichever_is_first():
    anneal = training.AnnealLearningRate(1e-3, total_steps=1000, warmup_steps=100,
                                         max_seconds=60.0, final_fraction=0.1)
    assert anneal.learning_rate(0, 0.0) == pytest.approx(1e-5)
    # Warm-up and decay overlap: at step 99 the decay is 9.9% done.
    assert anneal.learning_rate(99, 0.0) == pytest.approx(
        1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.099))))
    halfway = 1e-3 * (0.1 + 0.9 * 0.5)
    assert anneal.learning_rate(500, 0.0) == pytest.approx(halfway)
    assert anneal.learning_rate(100, 30.0) == pytest.approx(halfway)   # time says halfway
    assert anneal.learning_rate(1000, 0.0) == pytest.approx(1e-4)
    assert anneal.learning_rate(10, 600.0) == pytest.approx(1e-4 * 11 / 100)  # still warming


def test_anneal_learning_rate_sets_the_optimizer_rate_and_logs_it():
    anneal = training.AnnealLearningRate(0.1, total_steps=8, warmup_steps=0, final_fraction=0.0)
    x = np.zeros([32, 1], np.float32)
    history = _tiny_keras_model().fit(x, x, batch_size=8, epochs=2, verbose=0,
                                      callbacks=[anneal])
    assert anneal.step == 8
    rates = history.history["learning_rate"]
    assert rates[0] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 3 / 8)), rel=1e-5)
    assert rates[1] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 7 / 8)), rel=1e-5)


def test_tensorboard_logger_writes_scalars_and_pngs_tensorboard_can_read(tmp_path):
    picture = images.image_grid(np.ones([2, 4, 4, 1], np.float32))
    logger = training.TensorBoardLogger(str(tmp_path), lambda model: {"samples/T=1": picture})
    x = np.zeros([16, 1], np.float32)
    _tiny_keras_model().fit(x, x, validation_data=(x, x), epochs=2, verbose=0,
                            callbacks=[logger])
    found = {}
    for run in ("train", "validation", "samples"):
        for path in (tmp_path / run).glob("events.out.tfevents.*"):
            for event in tf.compat.v1.train.summary_iterator(str(path)):
                for value in event.summary.value:
                    found[(run, value.tag, event.step)] = value
    assert {("train", "loss", 1), ("validation", "loss", 1), ("samples", "samples/T=1", 1)} \
        <= set(found)
    assert found[("train", "loss", 0)].metadata.plugin_data.plugin_name == "scalars"
    image = found[("samples", "samples/T=1", 0)]
    assert image.metadata.plugin_data.plugin_name == "images"
    width, height, png = tf.make_ndarray(image.tensor)
    assert (int(width), int(height)) == (picture.shape[1], picture.shape[0])
    np.testing.assert_array_equal(tf.io.decode_png(png), picture)


# ------------------------------------------------------------------ training


def _write_table(path, scale):
    rng = np.random.default_rng(0)
    rows = rng.standard_normal([300, 3]) @ np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.3],
                                                    [0.0, 0.0, 1.0]])
    np.save(path, scale * (rows + np.array([5.0, -2.0, 1.0])))
    return str(path)


def test_tabular_nll_is_in_the_files_units_and_a_gaussian_is_scored_beside_it(tmp_path):
    results = []
    for scale in (1.0, 10.0):
        table = _write_table(tmp_path / f"table_{scale:g}.npy", scale)
        config = training.TrainConfig(dataset=table, workdir=str(tmp_path / f"run_{scale:g}"),
                                      **TINY_VECTOR_FLOW)
        results.append(training.train(config))
    unit, tenfold = (result.test for result in results)
    # The model standardises inside (StandardizeLayer), so its flow sees the same rows
    # both times: only the units differ, by log(10) per dimension, as for the Gaussian.
    assert tenfold.nll - unit.nll == pytest.approx(3 * math.log(10.0), abs=1e-3)
    assert tenfold.gaussian_nll - unit.gaussian_nll == pytest.approx(3 * math.log(10.0),
                                                                    abs=1e-6)
    assert unit.gaussian_nll == pytest.approx(4.26, abs=0.3)  # ~ entropy of the Gaussian
    summary = results[0].summary()
    assert "nats per row" in summary and "Gaussian fit" in summary and "bits/dim" not in summary


def test_train_on_a_toy_stops_on_the_time_budget_and_restores_the_best_epoch(tmp_path):
    config = training.TrainConfig(dataset="eight_gaussians", num_examples=512,
                                  max_train_seconds=1e-6, workdir=str(tmp_path),
                                  **{**TINY_VECTOR_FLOW, "epochs": 3})
    result = training.train(config)
    assert result.stopped_by == "time budget"
    # Epoch 0 is the initialised model (the Gaussian fit): kept unless epoch 1 beats it.
    assert result.epochs_run == 1 and result.best_epoch in (0, 1)
    assert result.test.true_entropy is not None and "true entropy" in result.summary()
    assert (tmp_path / "density.png").is_file()
    samples = training.write_samples(result.model, result.config, str(tmp_path / "s.png"),
                                     num_samples=50)
    assert tf.io.decode_png(tf.io.read_file(samples)).shape[-1] == 3
    model, config = training.load_run(str(tmp_path))
    again = training.evaluate(model, config, round_trip=True)
    assert again.nll == pytest.approx(result.test.nll, abs=1e-4)
    assert again.max_round_trip_error < 1e-4


def test_train_on_a_tfds_set_carves_validation_from_train(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    config = training.TrainConfig(dataset="mnist", data_dir=str(tmp_path / "tfds"),
                                  workdir=str(tmp_path / "run"), scales=1, steps_per_scale=1,
                                  hidden_channels=4, epochs=1, batch_size=8, num_samples=4,
                                  verbose=0)
    with tfds.testing.mock_data(num_examples=20):
        # mnist has no validation split: it comes from the end of "train".
        source = tfdata.source(config.dataset, data_dir=config.data_dir)
        splits = [source.split_name(split) for split in ("train", "validation", "test")]
        result = training.train(config)
    assert splits == ["train[:90%]", "train[90%:]", "test"]
    assert result.test.num_examples == 20
    assert (tmp_path / "run" / "samples_T0.7.png").is_file()
    assert math.isfinite(result.test.bits_per_dim)


@pytest.mark.parametrize("options", [{"memory_saving": True}, {"precision": "mixed_bfloat16"},
                                     {"precision": "mixed_float16"}])
def test_train_with_memory_saving_or_mixed_precision(tmp_path, options):
    config = training.TrainConfig(model="glow", scales=1, steps_per_scale=2, hidden_channels=8,
                                  epochs=1, max_train_seconds=0, num_samples=4, verbose=0,
                                  workdir=str(tmp_path), **options)
    result = training.train(config)
    assert np.isfinite(result.test.bits_per_dim)
    model, _ = training.load_run(str(tmp_path))
    x = next(iter(tfdata.load("digits", "test", batch_size=8)))
    np.testing.assert_allclose(model.log_prob(x), result.model.log_prob(x), rtol=1e-5)


def test_the_warm_up_is_cut_to_a_tenth_of_the_planned_steps():
    ds = tf.data.Dataset.range(80).batch(8)  # 10 steps per epoch
    config = training.TrainConfig(epochs=3, warmup_steps=200, max_train_seconds=60)
    # train()'s plan alone (its printed line is the user's only view of it).
    plan = runs._Plan.of(config, ds)
    assert (plan.steps_per_epoch, plan.warmup_steps) == (10, 3)
    assert str(plan) == ("3 epochs x 10 steps = 30 steps, warm-up 3 steps (cut from 200 to a "
                         "tenth of the planned steps), time budget 60 s")
    long = runs._Plan.of(training.TrainConfig(epochs=100, warmup_steps=20,
                                              max_train_seconds=0), ds)
    assert long.warmup_steps == 20 and str(long).endswith("warm-up 20 steps, no time budget")


def test_unknown_precision_is_a_user_error():
    with pytest.raises(training.UserError, match="unknown precision 'float16'; expected one of "
                                                 "float32, mixed_bfloat16, mixed_float16"):
        training.TrainConfig(precision="float16").resolved()


# ------------------------------------------------------------------- threads per op


@pytest.mark.parametrize("dataset, threads", [
    ("digits", 1), ("two_moons", 1), ("/data/rows.csv", 1), ("/data/rows.npy", 1),
    ("mnist", 0), ("cifar10", 0)])
def test_small_examples_get_one_thread_per_op_on_a_cpu(dataset, threads):
    assert not tf.config.list_physical_devices("GPU")  # the suite runs on CPUs
    config = training.TrainConfig(dataset=dataset)
    assert training.planned_intra_op_threads(config) == threads
    assert training.planned_intra_op_threads(dataclasses.replace(config, strategy="tpu")) == 0
    assert training.planned_intra_op_threads(
        dataclasses.replace(config, intra_op_threads=3)) == 3


def test_intra_op_threads_are_checked():
    with pytest.raises(training.UserError, match=r"intra_op_threads an int >= 0, got -1"):
        training.TrainConfig(intra_op_threads=-1).resolved()
    assert training.TrainConfig(intra_op_threads=0).resolved().intra_op_threads == 0


def test_threads_that_can_no_longer_change_are_refused_only_when_asked_for():
    from tfflow.training.threads import use_intra_op_threads  # pylint: disable=import-outside-toplevel
    _ = tf.constant(1.0) + 1.0  # TensorFlow's runtime runs: the setting is fixed
    current = tf.config.threading.get_intra_op_parallelism_threads()
    other = 7 if current != 7 else 5
    with pytest.raises(training.UserError) as error:
        use_intra_op_threads(training.TrainConfig(intra_op_threads=other).resolved())
    for words in ("intra_op_threads", "already runs in this process", f"{other} was asked",
                  "new process"):
        assert words in str(error.value), str(error.value)
    use_intra_op_threads(training.TrainConfig(intra_op_threads=current).resolved())
    use_intra_op_threads(training.TrainConfig(dataset="cifar10").resolved())  # auto: keeps
    assert tf.config.threading.get_intra_op_parallelism_threads() == current


def test_a_new_process_gets_the_planned_threads_before_its_first_op():
    code = ("import tensorflow as tf\n"
            "from tfflow import training\n"
            "from tfflow.training.threads import use_intra_op_threads\n"
            "use_intra_op_threads(training.TrainConfig().resolved())\n"
            "print(float(tf.constant(1.0) + 1.0), "
            "tf.config.threading.get_intra_op_parallelism_threads())\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2.0", "1"], result.stdout
