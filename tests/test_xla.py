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


def test_glow_steps_loop_in_graph_mode_and_in_xla_inverse():
    # A level's K steps are one tf.while_loop in graph mode (the trace does not grow
    # with K), and under XLA in the inverse direction, which fit's log p(x) runs and
    # whose gradient is an explicit backward loop. Under XLA the forward direction is
    # unrolled: autodiff of an XLA loop does not compile.
    model = tfflow.models.Glow((8, 8, 1), scales=1, steps_per_scale=3, hidden_channels=4,
                               num_levels=17)
    x = tf.random.stateless_uniform((4, 8, 8, 1), seed=(1, 2))

    def loops(direction, jit_compile):
        bijector = model.bijector_for(training=True)
        fn = tf.function(lambda x: getattr(bijector, direction)(x),
                         jit_compile=jit_compile, autograph=False)
        graph = fn.get_concrete_function(x).graph
        return bool({"While", "StatelessWhile"} & {op.type for op in graph.get_operations()})

    assert loops("inverse", False) and loops("forward", False)
    assert loops("inverse", True)
    assert not loops("forward", True)


@pytest.mark.parametrize("kernel_shape", [(3, 3, 5, 7), (1, 1, 4, 6), (3, 1, 2, 3)])
@pytest.mark.parametrize("jit_compile", [False, True])
def test_conv_with_dot_gradients_equals_tf_conv(kernel_shape, jit_compile):
    # The convolution Glow's looped steps use under XLA: same value and gradients as
    # tf.nn.conv2d's (float64), its kernel gradient written as one dot per tap.
    from tfflow.bijectors._conv import conv2d_same_dot_gradients  # pylint: disable=import-outside-toplevel
    x = tf.random.stateless_normal([2, 5, 4, kernel_shape[2]], seed=(1, 1), dtype=tf.float64)
    kernel = tf.random.stateless_normal(kernel_shape, seed=(1, 2), dtype=tf.float64)
    dy = tf.random.stateless_normal([2, 5, 4, kernel_shape[3]], seed=(1, 3), dtype=tf.float64)

    @tf.function(jit_compile=jit_compile)
    def value_and_gradients(conv, x, kernel):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = conv(x, kernel)
        return [y] + tape.gradient(y, [x, kernel], output_gradients=dy)

    ours = value_and_gradients(conv2d_same_dot_gradients, x, kernel)
    theirs = value_and_gradients(lambda x, k: tf.nn.conv2d(x, k, 1, "SAME"), x, kernel)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_conv_with_dot_gradients_refuses_an_even_kernel():
    from tfflow.bijectors._conv import conv2d_same_dot_gradients  # pylint: disable=import-outside-toplevel
    with pytest.raises(ValueError, match=r"conv2d_same_dot_gradients: expected an odd static "
                                         r"kernel size, got \(2, 3\)"):
        conv2d_same_dot_gradients(tf.zeros([1, 4, 4, 1]), tf.zeros([2, 3, 1, 1]))
