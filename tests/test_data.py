"""Tests for tfflow.data: embedded digits, toy densities, tabular files, TFDS, errors.

Nothing here touches the network: TFDS sets are either mocked with
`tfds.testing.mock_data` or prepared from a tiny builder that generates its
examples in code.
"""

import math
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tfflow import data


def _concat(ds):
    """All batches of a finite dataset, concatenated (x, or (x, labels))."""
    batches = list(ds.as_numpy_iterator())
    if isinstance(batches[0], tuple):
        return tuple(np.concatenate(parts) for parts in zip(*batches))
    return np.concatenate(batches)


def _stored_digits():
    with np.load(data.digits.DIGITS_PATH) as stored:
        return {key: stored[key] for key in stored.files}


# --------------------------------------------------------------------- digits


def test_digits_batches_are_float32_images_in_unit_interval():
    x = next(iter(data.load("digits", batch_size=64)))
    assert x.shape == (64, 8, 8, 1)
    assert x.dtype == tf.float32
    assert float(tf.reduce_min(x)) >= 0.0 and float(tf.reduce_max(x)) < 1.0


def test_digits_dequantised_values_floor_back_to_stored_levels():
    x, labels = _concat(data.load("digits", "train", batch_size=2000, shuffle=False,
                                  with_labels=True, seed=7))
    stored = _stored_digits()
    levels = np.floor(x * 17).astype(np.int64)
    assert levels.min() >= 0 and levels.max() <= 16
    np.testing.assert_array_equal(levels[0], stored["train_images"][0])
    np.testing.assert_array_equal(levels, stored["train_images"][: len(levels)])
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, stored["train_labels"][: len(labels)])
    # The noise is real: values are not just the level centres or edges.
    fractional = x * 17 - levels
    assert 0.4 < fractional.mean() < 0.6 and fractional.std() > 0.25


def test_digits_info():
    info = data.info("digits")
    assert (info.kind, info.event_shape, info.num_levels, info.num_classes) == (
        "image", (8, 8, 1), 17, 10)
    assert info.num_dims == 64 and info.true_entropy is None


def test_digits_split_sizes_are_fixed_and_disjoint():
    stored = _stored_digits()
    sizes = {split: len(data.load_array("digits", split)) for split in data.SPLITS}
    assert sizes == {"train": 1293, "validation": 144, "test": 360}
    # Validation is carved from the stored training rows, never from test.
    carved = np.concatenate([data.load_array("digits", "train"),
                             data.load_array("digits", "validation")])
    np.testing.assert_array_equal(carved, stored["train_images"])
    train_index, test_index = stored["train_index"], stored["test_index"]
    assert not set(train_index) & set(test_index)
    assert sorted(np.concatenate([train_index, test_index])) == list(range(1797))
    assert len(data.load_array("digits", "validation", validation_fraction=0.2)) == 287


def test_noise_is_reproducible_per_seed_and_fresh_each_epoch():
    def first_batch(seed):
        return next(iter(data.load("digits", batch_size=32, seed=seed)))

    np.testing.assert_array_equal(first_batch(3), first_batch(3))
    assert not np.array_equal(first_batch(3), first_batch(4))

    ds = data.load("digits", "test", batch_size=360)
    epoch_1, epoch_2 = _concat(ds), _concat(ds)
    np.testing.assert_array_equal(np.floor(epoch_1 * 17), np.floor(epoch_2 * 17))
    assert not np.array_equal(epoch_1, epoch_2)

    repeated = data.load("digits", "test", batch_size=360, repeat=True).take(2)
    pass_1, pass_2 = list(repeated.as_numpy_iterator())
    np.testing.assert_array_equal(np.floor(pass_1 * 17), np.floor(pass_2 * 17))
    assert not np.array_equal(pass_1, pass_2)


def test_only_train_is_shuffled_by_default():
    stored = _stored_digits()
    train = _concat(data.load("digits", "train", batch_size=2000))
    assert not np.array_equal(np.floor(train * 17), stored["train_images"][:1293])
    test = _concat(data.load("digits", "test", batch_size=2000))
    np.testing.assert_array_equal(np.floor(test * 17), stored["test_images"])


def test_drop_remainder():
    assert len(list(data.load("digits", "test", batch_size=100))) == 4
    assert len(list(data.load("digits", "test", batch_size=100, drop_remainder=True))) == 3


# --------------------------------------------------------------- toy densities


@pytest.mark.parametrize("name", data.TOY_DATASETS)
def test_toy_density_loads_finite_points(name):
    info = data.info(name)
    assert (info.kind, info.event_shape, info.num_levels) == ("toy2d", (2,), None)
    x, labels = _concat(data.load(name, batch_size=512, num_examples=1000, with_labels=True))
    assert x.shape == (1000, 2) and x.dtype == np.float32
    assert np.all(np.isfinite(x)) and np.abs(x).max() < 6.0
    assert labels.min() >= 0 and labels.max() < info.num_classes
    assert len(np.unique(labels)) == info.num_classes
    np.testing.assert_array_equal(data.load_array(name, "test"), data.load_array(name, "test"))
    assert len(data.load_array(name, "validation")) == 2_000
    assert not np.allclose(data.load_array(name, "train", num_examples=50),
                           data.load_array(name, "test", num_examples=50))


def test_toy_train_batch_has_default_size():
    assert data.load("two_moons").cardinality().numpy() == math.ceil(20_000 / 64)


def _eight_gaussians_log_prob(points):
    # Written from the documented parameters, independently of the sampler.
    radius, std = 2.0 * math.sqrt(2.0), math.sqrt(2.0) / 4.0
    angles = np.arange(8) * math.pi / 4.0
    means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    sq = ((points[:, None, :] - means) ** 2).sum(-1)
    log_components = -sq / (2 * std**2) - math.log(2 * math.pi * std**2) - math.log(8)
    return np.logaddexp.reduce(log_components, axis=1)


def test_eight_gaussians_entropy_matches_monte_carlo():
    entropy = data.info("eight_gaussians").true_entropy
    std = math.sqrt(2.0) / 4.0
    no_overlap = math.log(8) + 1.0 + math.log(2 * math.pi * std**2)
    assert no_overlap - 0.02 < entropy < no_overlap  # overlap can only lower it

    log_p = _eight_gaussians_log_prob(data.load_array("eight_gaussians", num_examples=200_000))
    standard_error = log_p.std() / math.sqrt(len(log_p))
    assert abs(-log_p.mean() - entropy) < 4 * standard_error


def test_checkerboard_entropy_is_log_of_support_area():
    def on_board(points):
        cells = np.floor((points + 4.0) / 2.0).astype(int)
        inside = np.all((cells >= 0) & (cells <= 3), axis=1)
        return inside & (cells.sum(axis=1) % 2 == 0)

    samples = data.load_array("checkerboard", num_examples=50_000)
    assert on_board(samples).all()
    # Every dark square gets its share of the mass.
    cells = np.floor((samples + 4.0) / 2.0).astype(int)
    counts = np.unique(cells[:, 0] * 4 + cells[:, 1], return_counts=True)[1]
    assert len(counts) == 8 and np.all(np.abs(counts / len(samples) - 1 / 8) < 0.01)
    uniform = np.random.default_rng(0).uniform(-4.0, 4.0, size=(200_000, 2))
    area = 64.0 * on_board(uniform).mean()
    assert abs(area - 32.0) < 0.5
    assert data.info("checkerboard").true_entropy == pytest.approx(math.log(32.0))


# --------------------------------------------------------------------- tabular


_TRUE_MEAN = np.array([10.0, -5.0, 0.3])
_TRUE_STD = np.array([2.0, 0.5, 10.0])


@pytest.fixture
def gaussian_table():
    rng = np.random.default_rng(1)
    return _TRUE_MEAN + _TRUE_STD * rng.standard_normal((2000, 3))


@pytest.fixture
def npy_path(tmp_path, gaussian_table):
    path = tmp_path / "table.npy"
    np.save(path, gaussian_table)
    return str(path)


def test_tabular_is_split_and_kept_in_the_file_units(npy_path, gaussian_table):
    splits = {split: data.load_array(npy_path, split) for split in data.SPLITS}
    assert {k: len(v) for k, v in splits.items()} == {"train": 1620, "validation": 180,
                                                        "test": 200}
    all_rows = np.concatenate(list(splits.values()))
    assert len(np.unique(all_rows, axis=0)) == len(gaussian_table)
    np.testing.assert_array_equal(np.sort(all_rows, axis=0), np.sort(gaussian_table, axis=0))

    info = data.info(npy_path)
    assert (info.kind, info.event_shape, info.num_levels) == ("tabular", (3,), None)
    # The batches are the file's rows: the models standardise inside (StandardizeLayer).
    train = _concat(data.load(npy_path, batch_size=512))
    assert train.shape == (1620, 3) and train.dtype == np.float32
    np.testing.assert_allclose(np.sort(train, axis=0), np.sort(splits["train"], axis=0),
                               rtol=1e-6)
    test = _concat(data.load(npy_path, "test", batch_size=512))
    np.testing.assert_allclose(test, splits["test"], rtol=1e-6)


def test_csv_with_header_matches_npy(tmp_path, npy_path, gaussian_table):
    csv_path = tmp_path / "table.csv"
    np.savetxt(csv_path, gaussian_table, delimiter=",", fmt="%.17g", header="a,b,c",
               comments="")
    plain_path = tmp_path / "plain.csv"
    np.savetxt(plain_path, gaussian_table, delimiter=",", fmt="%.17g")
    padded_path = tmp_path / "padded.csv"
    padded_path.write_text("\n\n" + csv_path.read_text())
    for path in (str(csv_path), str(plain_path), str(padded_path)):
        np.testing.assert_array_equal(data.load_array(path, "test"),
                                      data.load_array(npy_path, "test"))


def test_constant_column_is_read_as_it_is(tmp_path, gaussian_table):
    table = np.concatenate([gaussian_table, np.full((len(gaussian_table), 1), 0.1)], axis=1)
    path = str(tmp_path / "constant.npy")
    np.save(path, table)
    rows = _concat(data.load(path, batch_size=4096))
    np.testing.assert_allclose(rows[:, 3], 0.1, rtol=1e-6)


def test_table_batches_are_the_rows_shuffled_as_before_without_a_copy_of_the_table():
    # A shuffle is blind to what it permutes: shuffling row indices and gathering gives the
    # batches that shuffling the rows themselves gave, for every seed, epoch and remainder.
    from tfflow.data import core, pipelines

    table = np.random.default_rng(3).standard_normal((103, 4))
    rows = np.sort(np.random.default_rng(4).permutation(103)[:77])
    for shuffle, repeat, drop_remainder in ((True, True, False), (True, False, True),
                                            (False, False, False)):
        batching = core.Batching(batch_size=10, shuffle=shuffle, seed=7, repeat=repeat,
                                 drop_remainder=drop_remainder, with_labels=False)
        gathered = pipelines.gathered_batches(table, rows, batching)
        copied = pipelines.continuous_batches(table[rows].astype(np.float32), None, batching)
        assert gathered.element_spec == copied.element_spec
        # A second pass is a fresh shuffle in both. (Not compared when repeating: how many
        # epochs a stopped iterator had begun depends on how far its prefetch ran ahead.)
        for _ in range(1 if repeat else 2):
            pairs = zip(gathered.take(20).as_numpy_iterator(), copied.take(20).as_numpy_iterator())
            for x, y in pairs:
                np.testing.assert_array_equal(x, y)


def test_table_is_held_once_in_float32_when_that_is_exact(tmp_path, monkeypatch):
    # Small chunks, so that reading, checking and narrowing cross chunk boundaries.
    monkeypatch.setattr(data.table, "_CHUNK_VALUES", 7)
    rng = np.random.default_rng(5)
    tables = {
        "float32_in_float64.npy": rng.standard_normal((50, 3)).astype(np.float32).astype(
            np.float64),
        "float32.npy": rng.standard_normal((50, 3)).astype(np.float32),
        "fortran.npy": np.asfortranarray(rng.standard_normal((50, 3))),
        "small_ints.npy": rng.integers(-2**24, 2**24, (50, 3)),
        "big_ints.npy": rng.integers(-2**40, 2**40, (50, 3)),
        "float64.npy": rng.standard_normal((50, 3)),
    }
    stored = {}
    for name, table in tables.items():
        np.save(tmp_path / name, table)
        source = data.source(str(tmp_path / name))
        stored[name] = source._table.dtype  # how it is held in memory: internal by design
        # The splits are the file's rows exactly, in float64, however the table is held.
        np.testing.assert_array_equal(
            np.sort(np.concatenate([source.array(split) for split in data.SPLITS]), axis=0),
            np.sort(table.astype(np.float64), axis=0))
        batches = _concat(source.dataset("test", batch_size=4))
        np.testing.assert_array_equal(batches, source.array("test").astype(np.float32))
    assert stored == {"float32_in_float64.npy": np.float32, "float32.npy": np.float32,
                      "fortran.npy": np.float64, "small_ints.npy": np.float32,
                      "big_ints.npy": np.float64, "float64.npy": np.float64}

    csv_path = tmp_path / "halves.csv"
    np.savetxt(csv_path, np.arange(60.0).reshape(20, 3) / 2, delimiter=",")
    assert data.source(str(csv_path))._table.dtype == np.float32

    late_nan = rng.standard_normal((40, 2))
    late_nan[[33, 38], [1, 0]] = np.nan  # found in a later chunk, counted over all chunks
    np.save(tmp_path / "late_nan.npy", late_nan)
    with pytest.raises(ValueError, match=r"got 2 NaN/Inf values \(first at data row 33, "
                                         r"column 1"):
        data.source(str(tmp_path / "late_nan.npy"))


def test_fit_gaussian_nll_matches_analytic_entropy():
    rng = np.random.default_rng(2)
    covariance = np.array([[2.0, 0.8, 0.0], [0.8, 1.0, -0.3], [0.0, -0.3, 0.5]])
    samples = rng.multivariate_normal([1.0, 2.0, 3.0], covariance, size=40_000)
    nll = data.fit_gaussian_nll(samples[:20_000], samples[20_000:])
    entropy = 0.5 * 3 * (1 + math.log(2 * math.pi)) + 0.5 * np.linalg.slogdet(covariance)[1]
    assert nll == pytest.approx(entropy, abs=0.03)


# ---------------------------------------------------------------- bits per dim


def test_bits_per_dim():
    # A uniform density on [0, 1)^D has NLL 0: log2(B) bits per dimension.
    assert data.bits_per_dim(0.0, 784, 256) == pytest.approx(8.0)
    assert data.bits_per_dim(-64 * math.log(17), 64, 17) == pytest.approx(0.0, abs=1e-12)
    assert data.bits_per_dim(10 * math.log(2.0), 10, None) == pytest.approx(1.0)
    tensor = data.bits_per_dim(tf.constant([0.0, 3072 * math.log(2.0)]), 3072, 256)
    np.testing.assert_allclose(tensor.numpy(), [8.0, 9.0], rtol=1e-6)
    array = data.bits_per_dim(np.array([0.0]), 3072, 256)
    np.testing.assert_allclose(array, [8.0])


# ------------------------------------------------------------------------ TFDS


def test_tfds_mnist_from_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=10):
        ds = data.load("mnist", batch_size=4, shuffle=False, with_labels=True,
                       data_dir=str(tmp_path))
        x, labels = _concat(ds)
        reduced = _concat(data.load("mnist", batch_size=4, shuffle=False, num_bits=5))
        # Not batch_size=-1: mocked splits have no sizes, so TFDS batches by
        # sys.maxsize and TF 2.21 aborts the process (std::length_error).
        raw = next(iter(tfds.load("mnist", split="train", batch_size=10)))
    assert x.shape == (10, 28, 28, 1) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() < 1.0
    np.testing.assert_array_equal(np.floor(x * 256), raw["image"].numpy())
    np.testing.assert_array_equal(np.floor(reduced * 32), raw["image"].numpy() // 8)
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, raw["label"].numpy())
    info = data.info("mnist", num_bits=5)
    assert (info.event_shape, info.num_levels, info.num_classes) == ((28, 28, 1), 32, 10)


def test_tfds_cifar10_from_mock_data():
    with tfds.testing.mock_data(num_examples=6):
        x = next(iter(data.load("cifar10", "test", batch_size=6)))
    assert x.shape == (6, 32, 32, 3)
    info = data.info("cifar10")
    assert (info.event_shape, info.num_levels, info.num_classes) == ((32, 32, 3), 256, 10)


def test_tfds_celeb_a_is_centre_cropped_and_resized():
    with tfds.testing.mock_data(num_examples=3):
        x = next(iter(data.load("celeb_a", batch_size=3, image_size=16)))
        with pytest.raises(ValueError, match="no 'label'"):
            data.load("celeb_a", with_labels=True)
    assert x.shape == (3, 16, 16, 3) and float(tf.reduce_max(x)) < 1.0
    assert data.info("celeb_a").event_shape == (64, 64, 3)


class TfflowTestTinyImages(tfds.core.GeneratorBasedBuilder):
    """A 2-split image set generated in code, to test reading a real data_dir."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(6, 4, 3)),
            "label": tfds.features.ClassLabel(num_classes=3),
        }))

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples(12, seed=0),
                "test": self._generate_examples(5, seed=1)}

    def _generate_examples(self, num_examples, seed):
        rng = np.random.default_rng(seed)
        for i in range(num_examples):
            yield i, {"image": rng.integers(0, 256, (6, 4, 3), dtype=np.uint8), "label": i % 3}


def test_tfds_reads_a_prepared_data_dir_without_network(tmp_path):
    TfflowTestTinyImages(data_dir=str(tmp_path)).download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    name = "tfflow_test_tiny_images"
    x, labels = _concat(data.load(name, "test", data_dir=str(tmp_path), batch_size=2,
                                  with_labels=True))
    assert x.shape == (5, 6, 4, 3) and sorted(labels) == [0, 0, 1, 1, 2]
    cropped = _concat(data.load(name, "train[:50%]", data_dir=str(tmp_path), image_size=3))
    assert cropped.shape == (6, 3, 3, 3)
    missing_split = r"(?s)load: cannot read split 'validation'.*train\[:90%\]"
    with pytest.raises(ValueError, match=missing_split):
        data.load(name, "validation", data_dir=str(tmp_path))


def test_tfds_names_with_configs_are_not_taken_for_paths():
    info = data.info("imagenet_resized/32x32")
    assert (info.event_shape, info.num_classes) == ((32, 32, 3), 1000)
    with pytest.raises(ValueError, match="info: .*varying shape.*image_size"):
        data.info("downsampled_imagenet/32x32")
    assert data.info("downsampled_imagenet/32x32", image_size=32).event_shape == (32, 32, 3)


def test_tfds_missing_data_fails_fast_with_instructions(tmp_path):
    start = time.monotonic()
    with pytest.raises(ValueError) as error:
        data.load("mnist", data_dir=str(tmp_path))
    assert time.monotonic() - start < 10.0
    message = str(error.value)
    for expected in ("load:", "'mnist'", str(tmp_path), f"tfds build mnist --data_dir={tmp_path}",
                     "never downloads"):
        assert expected in message


# ---------------------------------------------------------------------- errors


def _write(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(path, content, allow_pickle=True)
    else:
        path.write_text(content)
    return str(path)


_GOOD = np.random.default_rng(0).standard_normal((20, 2))


_ERROR_CASES = {
    "unknown name": (lambda p: data.load("imagenette_typo"),
                     r"load: unknown data set 'imagenette_typo'.*digits.*two_moons.*mnist.*\.npy"),
    "unknown name in info": (lambda p: data.info("nope"), r"info: unknown data set 'nope'"),
    "namespaced name": (lambda p: data.load("huggingface:mnist"), r"load: .*internet"),
    "unknown split": (lambda p: data.load("digits", "valid"),
                      r"load: unknown split 'valid' for 'digits'; expected one of"),
    "unknown toy split": (lambda p: data.load_array("two_moons", "dev"),
                          r"load_array: unknown split 'dev'"),
    "num_bits 0": (lambda p: data.load("digits", num_bits=0), r"load: .*num_bits.*1\.\.8.*got 0"),
    "num_bits 9": (lambda p: data.load("mnist", num_bits=9), r"load: .*num_bits.*1\.\.8.*got 9"),
    "num_bits in info": (lambda p: data.info("cifar10", num_bits=12), r"info: .*got 12"),
    "num_bits on digits": (lambda p: data.load("digits", num_bits=4), r"17 levels"),
    "num_bits on toy": (lambda p: data.load("circles", num_bits=4), r"continuous"),
    "image_size on digits": (lambda p: data.load("digits", image_size=32), r"image_size"),
    "batch_size": (lambda p: data.load("digits", batch_size=0),
                   r"load: expected batch_size a positive int, got 0"),
    "seed": (lambda p: data.load("digits", seed=1.5), r"load: expected seed an int, got 1.5"),
    "validation_fraction": (lambda p: data.load("digits", validation_fraction=1.0),
                            r"validation_fraction in \[0, 1\), got 1.0"),
    "empty validation": (lambda p: data.load_array("digits", "validation", validation_fraction=0.0),
                         r"load_array: the validation split of 'digits' is empty"),
    "num_examples on digits": (lambda p: data.load("digits", num_examples=5), r"num_examples"),
    "missing file": (lambda p: data.load(str(p / "absent.npy")), r"load: .*absent\.npy.*not exist"),
    "non-numeric csv": (lambda p: data.load(_write(p, "bad.csv", "a,b\n1,2\n3,oops\n")),
                        r"load: expected numeric columns in .*bad\.csv.*oops"),
    "ragged csv": (lambda p: data.info(_write(p, "ragged.csv", "1,2\n3\n")),
                   r"info: expected numeric columns in .*ragged\.csv"),
    "object npy": (lambda p: data.load(_write(p, "obj.npy", np.array([{"a": 1}] * 20))),
                   r"load: expected a numeric array in .*obj\.npy"),
    "string npy": (lambda p: data.load(_write(p, "str.npy", np.array([["x"] * 2] * 20))),
                   r"load: expected a numeric array in .*str\.npy.*got dtype"),
    "nan": (lambda p: data.load(_write(p, "nan.npy", np.where(np.eye(20, 2) > 0, np.nan, _GOOD))),
            r"load: expected finite numbers in .*nan\.npy', got 2 NaN/Inf"),
    "inf csv": (lambda p: data.load(_write(p, "inf.csv", "x,y\n" + "1,2\n" * 11 + "inf,3\n")),
                r"load: expected finite numbers in .*inf\.csv.*data row 11, column 0"),
    "too few rows": (lambda p: data.load(_write(p, "few.npy", _GOOD[:5])),
                     r"load: expected at least 10 rows .*few\.npy.*\(5, 2\)"),
    "rank 1": (lambda p: data.load(_write(p, "flat.npy", _GOOD[:, 0])),
               r"load: expected a 2-D array \[N, D\] in .*flat\.npy.*reshape"),
    "rank 3": (lambda p: data.load(_write(p, "cube.npy", _GOOD.reshape(20, 1, 2))),
               r"got shape \(20, 1, 2\)"),
    "unknown extension": (lambda p: data.load(_write(p, "table.txt", "1,2\n")),
                          r"load: .*table\.txt.*looks like a file path.*\.npy or \.csv"),
    "labels on table": (lambda p: data.load(_write(p, "ok.npy", _GOOD), with_labels=True),
                        r"has no labels"),
    "gaussian columns": (lambda p: data.fit_gaussian_nll(_GOOD, _GOOD[:, :1]),
                         r"fit_gaussian_nll: .*same number of columns, got 2 and 1"),
    "gaussian singular": (lambda p: data.fit_gaussian_nll(np.ones((20, 2)), _GOOD),
                          r"fit_gaussian_nll: .*singular"),
    "gaussian rows": (lambda p: data.fit_gaussian_nll(_GOOD[:2], _GOOD),
                      r"more training rows than columns"),
    "bits_per_dim dims": (lambda p: data.bits_per_dim(1.0, 0, 256),
                          r"bits_per_dim: expected num_dims a positive int, got 0"),
    "load_array tfds": (lambda p: data.load_array("mnist"), r"load_array: .*TFDS"),
}


@pytest.mark.parametrize("case", sorted(_ERROR_CASES))
def test_bad_input_raises_a_helpful_value_error(case, tmp_path):
    call, pattern = _ERROR_CASES[case]
    with pytest.raises(ValueError, match=pattern):
        call(tmp_path)
