"""`.keras` files saved by an earlier tfflow (commit 29d194f) still load and score the same."""

import pathlib

import keras
import numpy as np
import pytest

import tfflow  # noqa: F401  # registers tfflow's classes with Keras

SAVED = pathlib.Path(__file__).parent / "data" / "saved_29d194f"
NAMES = ["glow", "glow_conditional", "realnvp_image", "realnvp_vector", "nice"]


@pytest.mark.parametrize("name", NAMES)
def test_model_saved_by_an_earlier_version_loads_and_scores_the_same(name):
    expected = np.load(SAVED / "expected.npz")
    model = keras.models.load_model(SAVED / f"{name}.keras")
    labels = np.array([0, 1, 2, 0], np.int32) if "conditional" in name else None
    np.testing.assert_allclose(model.log_prob(expected[f"{name}_x"], labels),
                               expected[f"{name}_log_prob"], rtol=1e-5, atol=1e-4)
