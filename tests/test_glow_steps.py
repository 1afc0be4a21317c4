"""GlowSteps / GlowStepsLayer: the K steps of a Glow scale as one looped step.

check_bijector runs through tests/bijector_registry.py; here: the memory-saving
gradient equals plain autodiff (looped and unrolled), the loop equals the
unrolled steps, the layer's step-by-step ActNorm initialisation, and the
saved network activations the training replay reuses.
"""

import numpy as np
import pytest
import tensorflow as tf

import tfflow
from tfflow import layers as fl

from bijector_registry import glow_steps


def _gradients(bijector, x):
    with tf.GradientTape() as tape:
        tape.watch(bijector.params)
        tape.watch(x)
        loss = tf.reduce_sum(tf.sin(bijector.inverse(x))) + \
            tf.reduce_sum(bijector.inverse_log_det_jacobian(x, event_ndims=3))
    return tape.gradient(loss, [x] + bijector.params)


def _assert_same_gradients(got, want, relative_to_max):
    for value, expected in zip(got, want):
        assert (value is None) == (expected is None)
        if expected is not None:
            scale = max(float(np.max(np.abs(expected))), 1e-12)
            np.testing.assert_allclose(value, expected, rtol=0, atol=relative_to_max * scale)


@pytest.mark.parametrize("unroll", [True, False])
@pytest.mark.parametrize("coupling", ["affine", "spline"])
def test_memory_saving_gradients_equal_plain_autodiff(unroll, coupling):
    plain, x = glow_steps(tf.float64, coupling=coupling, unroll=unroll)
    saving, _ = glow_steps(tf.float64, coupling=coupling, unroll=unroll, memory_saving=True)
    run = tf.function(_gradients, autograph=False) if not unroll else _gradients
    _assert_same_gradients(run(saving, x), run(plain, x), relative_to_max=1e-5)


def test_loop_equals_unrolled_steps():
    looped, x = glow_steps(tf.float64, unroll=False)
    unrolled, _ = glow_steps(tf.float64, unroll=True)
    z, ildj = looped.inverse(x), looped.inverse_log_det_jacobian(x, 3)
    z_want, ildj_want = unrolled.inverse(x), unrolled.inverse_log_det_jacobian(x, 3)
    np.testing.assert_allclose(z, z_want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ildj, ildj_want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(looped.forward(z), x, rtol=1e-9, atol=1e-9)


def test_bad_parameters_are_value_errors():
    bijector, _ = glow_steps(tf.float64)
    params = bijector.stacked_params
    with pytest.raises(ValueError, match="GlowSteps: expected parameters"):
        tfflow.bijectors.GlowSteps({k: v for k, v in params.items() if k != "lower"})
    params["upper"] = params["upper"][:, :2]
    with pytest.raises(ValueError, match="GlowSteps: expected `upper` of shape"):
        tfflow.bijectors.GlowSteps(params)
    with pytest.raises(ValueError, match="GlowStepsLayer: log_scale"):
        fl.GlowStepsLayer(2, 4, log_scale="nope")


def test_initialisation_standardises_every_step():
    model = tfflow.models.Glow((8, 8, 1), scales=1, steps_per_scale=3, hidden_channels=4,
                               num_levels=17, dtype="float64")
    x = tf.random.stateless_uniform((32, 8, 8, 1), seed=(1, 2), dtype=tf.float64)
    assert model.initialize(x) and model.is_initialized
    layer = [l for _, l in model.flow.walk() if isinstance(l, fl.GlowStepsLayer)][0]
    assert layer.step_weights["actnorm_loc"].shape == (3, 4)
    outputs = []
    # Taps TFP's per-bijector hook: the steps' ActNorm outputs are not public values.
    original = tfflow.bijectors.ActNorm._inverse_and_log_det

    def recording(self, y):
        z, ildj = original(self, y)
        outputs.append(z.numpy())
        return z, ildj

    tfflow.bijectors.ActNorm._inverse_and_log_det = recording
    try:
        model.bijector.inverse(x)
    finally:
        tfflow.bijectors.ActNorm._inverse_and_log_det = original
    assert len(outputs) == 3
    for z in outputs:
        np.testing.assert_allclose(z.mean(axis=(0, 1, 2)), 0., atol=1e-8)
        np.testing.assert_allclose(z.std(axis=(0, 1, 2)), 1., atol=1e-6)


@pytest.mark.parametrize("conditional", [False, True])
def test_replayed_network_gives_autodiffs_output_and_gradients(conditional):
    # The backward loop's replay reuses the saved activations (glow_network_replayed).
    from tfflow.bijectors.glow_steps import (glow_network, glow_network_replayed,
                                            glow_network_saving)
    specs = tfflow.bijectors.glow_steps_parameters(4, 8, context_units=3 if conditional else None)
    rng = np.random.default_rng(0)
    params = {name: tf.constant(0.3 * rng.standard_normal(spec.shape)) for name, spec in
              specs.items() if not spec.integer}
    x = tf.constant(rng.standard_normal([2, 5, 4, 4, 2]))  # two batch axes
    term = tf.constant(rng.standard_normal([2, 5, 3])) @ params["context_kernel"] \
        if conditional else None
    upstream = tf.constant(rng.standard_normal([2, 5, 4, 4, 4]))
    sources = [x] + [params[name] for name in sorted(params) if name.startswith("conv")]
    sources += [params["log_gain"]]
    sources += [term] if conditional else []

    def run(network):
        with tf.GradientTape() as tape:
            tape.watch(sources)
            out = network()
        return [out] + tape.gradient(out, sources, output_gradients=upstream)

    want = run(lambda: glow_network(x, params, context_term=term))
    saved = glow_network_saving(x, params, context_term=term)[1]
    got = tf.function(lambda: run(lambda: glow_network_replayed(x, params, saved,
                                                                 context_term=term)),
                      autograph=False)()
    for value, expected in zip(got, want):
        np.testing.assert_allclose(value, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("memory_saving", [False, True])
def test_the_training_replay_runs_the_forward_convolutions_only_under_memory_saving(
        memory_saving):
    bijector, x = glow_steps(tf.float64, unroll=False, memory_saving=memory_saving)
    graph = tf.function(_gradients, autograph=False).get_concrete_function(bijector, x).graph
    bodies = [{node.op for node in f.node_def} for f in graph.as_graph_def().library.function]
    backward = [ops for ops in bodies if "Conv2DBackpropFilter" in ops]
    assert backward, bodies
    # Standard mode saves the network's activations; memory saving rebuilds them.
    assert all(("Conv2D" in ops) == memory_saving for ops in backward), backward


def test_forward_traced_without_a_tape_still_differentiates_exactly():
    # Sampling traces the forward loop with tf.gather slices (no tape recording); a caller
    # may still differentiate that function afterwards.
    looped, x = glow_steps(tf.float64, unroll=False)
    unrolled, _ = glow_steps(tf.float64, unroll=True)
    z = looped.inverse(x)
    forward = tf.function(looped.forward, autograph=False)
    forward(z)  # traced here, outside any tape

    def gradients(run, bijector):
        with tf.GradientTape() as tape:
            tape.watch([z] + bijector.params)
            loss = tf.reduce_sum(tf.sin(run(z)))
        return tape.gradient(loss, [z] + bijector.params)

    _assert_same_gradients(gradients(forward, looped), gradients(unrolled.forward, unrolled),
                           relative_to_max=1e-10)
