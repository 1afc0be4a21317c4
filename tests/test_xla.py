"""`fit` with `jit_compile=True` (what TPUs and Keras 3's GPU default need) works for every model."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfflow

MODELS = {
    "glow": lambda: tfflow.models.Glow((8, 8, 1), levels=2, steps_per_level=1,
                                       hidden_channels=8, num_levels=17),
    "glow_full_conv_spline": lambda: tfflow.models.Glow(
        (8, 8, 1), levels=1, steps_per_level=1, hidden_channels=8, permutation="conv",
        coupling="spline", num_levels=17),
    "realnvp_image": lambda: tfflow.models.RealNVP((8, 8, 1), filters=8, blocks=1,
                                                   num_levels=17),
    "realnvp_vector": lambda: tfflow.models.RealNVP((2,), num_couplings=2, hidden_units=(8,)),
    "nice": lambda: tfflow.models.NICE((8, 8, 1), hidden_units=(8,), num_levels=17),
}


def _fit(make, jit_compile):
    keras.utils.set_random_seed(0)
    model = make()
    x = tf.random.stateless_uniform((32,) + model.event_shape, seed=(1, 2))
    model.compile(jit_compile=jit_compile, warmup_steps=0)
    history = model.fit(tf.data.Dataset.from_tensor_slices(x).batch(16), epochs=1,
                        verbose=0).history
    return history["loss"][0], model, x


@pytest.mark.parametrize("name", list(MODELS))
def test_jit_compiled_fit_matches_the_plain_one(name):
    jit_loss, jit_model, x = _fit(MODELS[name], True)
    plain_loss, plain_model, _ = _fit(MODELS[name], False)
    assert np.isfinite(jit_loss)
    assert jit_loss == pytest.approx(plain_loss, rel=1e-3, abs=1e-3)
    # Compared through the density, not weight by weight: Adam's first steps move
    # weights with near-zero gradients by about lr * sign(g), so XLA's different
    # rounding shows up there (measured: 1.6e-4) without changing the model.
    np.testing.assert_allclose(jit_model.log_prob(x), plain_model.log_prob(x),
                               rtol=1e-3, atol=1e-2)


def test_jit_compiled_steps_inline_the_shared_step_programs():
    # XLA recompiled a step that called the shared traced programs at every call
    # (4-6 s per step); an XLA step must trace none of them.
    keras.utils.set_random_seed(0)
    model = tfflow.models.Glow((8, 8, 1), levels=2, steps_per_level=2, hidden_channels=7,
                               num_levels=17)
    x = tf.random.stateless_uniform((32, 8, 8, 1), seed=(1, 2))
    model.compile(jit_compile=True, warmup_steps=0)
    model.initialize(x)
    model.log_prob(x)  # makes the programs (and traces them once, outside XLA)
    # Programs are shared by every layer of one signature, in any model: count new traces.
    traced = [fn for layer in model._flatten_layers()
              for program in layer.__dict__.get("_tfflow_programs", {}).values()
              for fn in (program._traced or {}).values()]
    assert traced, "no shared programs found: the test no longer looks at the right place"
    before = sum(fn.experimental_get_tracing_count() for fn in traced)
    model.fit(tf.data.Dataset.from_tensor_slices(x).batch(16), epochs=1, verbose=0,
              validation_data=tf.data.Dataset.from_tensor_slices(x).batch(16))
    assert sum(fn.experimental_get_tracing_count() for fn in traced) == before
