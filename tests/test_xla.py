"""`fit` with `jit_compile=True` (what TPUs and Keras 3's GPU default need) works for every model."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfflow

MODELS = {
    "glow": lambda: tfflow.models.Glow((8, 8, 1), scales=2, steps_per_scale=1,
                                       hidden_channels=8, num_levels=17),
    "glow_full_conv_spline": lambda: tfflow.models.Glow(
        (8, 8, 1), scales=1, steps_per_scale=1, hidden_channels=8, permutation="conv",
        coupling="spline", num_levels=17),
    "realnvp_image": lambda: tfflow.models.RealNVP((8, 8, 1), hidden_channels=8, blocks=1,
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


def test_glow_steps_loop_in_graph_mode_and_unroll_under_xla():
    # A level's K steps are one tf.while_loop in graph mode (the trace does not grow
    # with K); under XLA they are unrolled (an XLA loop ran 11-19x slower on CPU).
    model = tfflow.models.Glow((8, 8, 1), scales=1, steps_per_scale=3, hidden_channels=4,
                               num_levels=17)
    x = tf.random.stateless_uniform((4, 8, 8, 1), seed=(1, 2))

    def op_types(jit_compile):
        # The training-mode bijector's inverse: where fit's log p(x) runs the K steps.
        fn = tf.function(lambda x: model.bijector_for(training=True).inverse(x),
                         jit_compile=jit_compile, autograph=False)
        graph = fn.get_concrete_function(x).graph
        return [op.type for op in graph.get_operations()]

    assert "While" in op_types(False) or "StatelessWhile" in op_types(False)
    assert not {"While", "StatelessWhile"} & set(op_types(True))
