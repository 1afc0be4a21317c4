"""The run's pictures: matplotlib plots when it is installed, pixel pictures when not.

A PNG cannot be read back as text here, so the checks are about size and where
the ink is: a caption above a grid, two coloured panels side by side, a pair
plot's empty upper triangle, the data's blue and the samples' orange.
"""

import math
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfflow import plots, training
from tfflow.training import pictures
from tfflow.training.run_data import RunData

TINY_VECTOR_FLOW = dict(model="realnvp", num_couplings=2, hidden_units=(8,), epochs=1,
                        batch_size=64, verbose=0)
TINY_GLOW = dict(model="glow", scales=1, steps_per_scale=1, hidden_channels=4, epochs=1,
                 num_samples=16, verbose=0)

needs_matplotlib = pytest.mark.skipif(not plots.available(),
                                      reason='needs matplotlib: pip install "tfflow[plots]"')


def _png(path):
    return tf.io.decode_png(tf.io.read_file(str(path)), channels=3).numpy()


def _ink(picture):
    """True where a pixel is not (near) white."""
    return picture.astype(int).sum(axis=-1) < 3 * 245


def _table(path, columns=6, rows=400):
    rng = np.random.default_rng(0)
    np.save(path, rng.standard_normal([rows, columns]) @ rng.standard_normal([columns, columns]))
    return str(path)


def _tensorboard_images(log_dir):
    """{tag: decoded PNG} of the last image summaries under `log_dir/samples`."""
    found = {}
    directory = os.path.join(log_dir, "samples")
    for name in os.listdir(directory):
        for record in tf.data.TFRecordDataset(os.path.join(directory, name)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                png = tf.make_ndarray(value.tensor)[2]
                found[value.tag] = tf.io.decode_png(png).numpy()
    return found


@pytest.fixture(scope="module")
def plotted_runs(tmp_path_factory):
    """Tiny runs on 2-D points, a 6-column table and the digits (pixel pictures without
    matplotlib: the tests that look at plots skip then)."""
    root = tmp_path_factory.mktemp("plotted")
    configs = {
        "moons": dict(dataset="two_moons", num_examples=256, **TINY_VECTOR_FLOW),
        "table": dict(dataset=_table(root / "table.npy"), **TINY_VECTOR_FLOW),
        "digits": TINY_GLOW,
    }
    return {name: training.train(training.TrainConfig(workdir=str(root / name), **config))
            for name, config in configs.items()}


@needs_matplotlib
def test_the_density_plot_has_two_coloured_panels_with_room_for_axes(plotted_runs):
    picture = _png(plotted_runs["moons"].files["density"])
    height, width, _ = picture.shape
    assert width > 800 and 300 < height < width  # was 259 x 130 pixels of bare heat-map
    ink = _ink(picture)
    left, right = ink[:, :width // 2], ink[:, width // 2:]
    assert left.mean() > 0.2 and right.mean() > 0.2   # a panel (and its colour bar) in each
    assert ink[:, :25].mean() < 0.1                    # margins, y-axis label and ticks
    # A title above both panels: a strip of ink, then white, then the panels.
    rows_with_ink = ink.mean(axis=1) > 0.01
    assert rows_with_ink[:40].any() and not rows_with_ink[:40].all()


@needs_matplotlib
def test_sample_grids_sit_under_a_caption(plotted_runs):
    result = plotted_runs["digits"]
    for role in ("samples_T0.7", "samples_T1.0"):
        picture = _png(result.files[role])
        height, width, _ = picture.shape
        assert width >= 480 and height > 400
        ink = _ink(picture).mean(axis=1)
        caption, grid = ink[:height // 10], ink[height // 4:3 * height // 4]
        assert 0 < caption.max() < 0.5   # a line of text, not the grid
        assert grid.min() > 0.5          # the grid: grey frame and samples


@needs_matplotlib
def test_a_table_run_writes_a_pair_plot_and_tensorboard_shows_it(plotted_runs):
    result = plotted_runs["table"]
    picture = _png(result.files["pairs"])
    height, width, _ = picture.shape
    assert width > 800 and height > 800
    ink = _ink(picture)
    # 4 x 4 panels, the upper triangle empty (but for the legend in its corner).
    assert ink[height // 4:height // 2, width // 2:].mean() < 0.02
    assert ink[height // 2:, :width // 2].mean() > 0.04  # frames, ticks, points
    rgb = picture.astype(int)
    orange = (rgb[..., 0] > 200) & (rgb[..., 1] > 90) & (rgb[..., 1] < 170) & (rgb[..., 2] < 80)
    blue = rgb[..., 2] > rgb[..., 0] + 40
    assert orange.sum() > 200 and blue.sum() > 200  # samples and data
    tensorboard = _tensorboard_images(result.files["logs"])
    assert set(tensorboard) == {"pairs"}
    assert tensorboard["pairs"].shape[1] > 800


@needs_matplotlib
def test_a_conditional_table_run_draws_one_sample_per_test_context(tmp_path):
    rng = np.random.default_rng(1)
    context = rng.standard_normal([300, 1])
    rows = np.concatenate([context + 0.3 * rng.standard_normal([300, 1]),
                           np.sin(2 * context), context], axis=1)
    np.save(tmp_path / "cond.npy", rows)
    result = training.train(training.TrainConfig(
        dataset=str(tmp_path / "cond.npy"), context_columns="2", workdir=str(tmp_path / "run"),
        **TINY_VECTOR_FLOW))
    picture = _png(result.files["pairs"])  # 2 x columns: a 2 x 2 pair plot
    assert picture.shape[1] >= 480 and picture.shape[0] >= 480


@needs_matplotlib
def test_tensorboard_plots_keep_to_a_small_share_of_the_run(plotted_runs):
    result = plotted_runs["table"]
    draw = pictures.epoch_pictures(result.config, RunData.from_config(result.config))
    assert set(draw(result.model)) == {"pairs"}
    assert draw(result.model) == {}  # at once again: > 5% of the time, skipped


@needs_matplotlib
def test_write_samples_captions_an_image_grid(plotted_runs, tmp_path):
    result = plotted_runs["digits"]
    path = training.write_samples(result.model, result.config, str(tmp_path / "s.png"),
                                  num_samples=9, temperature=0.5)
    assert _png(path).shape[1] >= 480


def test_the_summary_and_the_history_state_their_units(plotted_runs):
    result = plotted_runs["digits"]
    assert "bits/dim" in result.summary() and "nats per example" in result.summary()
    num_dims = result.model.num_dims
    for prefix in ("", "val_"):
        np.testing.assert_allclose(result.history[prefix + "nll"],
                                   np.array(result.history[prefix + "loss"]) * num_dims,
                                   rtol=1e-5)
    assert math.isfinite(result.test.nll)


def test_without_matplotlib_the_pixel_pictures_are_written_and_the_run_says_how(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` fails
    assert not plots.available()
    table = training.train(training.TrainConfig(
        dataset=_table(tmp_path / "table.npy", columns=3, rows=200),
        workdir=str(tmp_path / "table"), **{**TINY_VECTOR_FLOW, "verbose": 2}))
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "tfflow[plots]" in line]
    assert len(lines) == 1 and "pair plot" in lines[0], out
    assert "pairs" not in table.files
    # No pictures to show: no empty `samples` run in TensorBoard.
    assert not os.path.exists(os.path.join(table.files["logs"], "samples"))

    moons = training.train(training.TrainConfig(
        dataset="two_moons", num_examples=256, workdir=str(tmp_path / "moons"),
        **TINY_VECTOR_FLOW))
    assert _png(moons.files["density"]).shape == (130, 259, 3)  # the pixel picture
    with pytest.raises(ImportError, match="tfflow\\[plots\\]"):
        plots.pair_plot(np.zeros([3, 2]), np.zeros([3, 2]), title="x")


def test_epoch_pictures_draw_nothing_for_a_table_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    config = training.TrainConfig(dataset=_table(tmp_path / "t.npy", columns=3, rows=100),
                                  workdir=str(tmp_path), **TINY_VECTOR_FLOW).resolved()
    assert pictures.epoch_pictures(config, RunData.from_config(config)) is None


@pytest.mark.parametrize("bad", [dict(samples=np.zeros([4, 3]), data=np.zeros([4, 2])),
                                 dict(samples=np.zeros([0, 2]), data=np.zeros([4, 2])),
                                 dict(samples=np.zeros([4, 2]), data=np.zeros([4, 2]),
                                      columns=[2])])
@needs_matplotlib
def test_pair_plot_rejects_what_does_not_match(bad):
    with pytest.raises(ValueError, match="pair_plot"):
        plots.pair_plot(title="x", **bad)
