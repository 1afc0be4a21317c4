"""Mixed precision: coupling networks in 16 bits, the flow, its log-dets and the loss in float32."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

import tfflow
from tfflow import layers as fl
from tfflow.mixed_precision import flow_and_network_dtypes


def _glow(dtype):
    keras.utils.set_random_seed(0)
    return tfflow.models.Glow((8, 8, 1), scales=2, steps_per_scale=2, hidden_channels=16,
                              num_levels=17, dtype=dtype)


def _x(n=32):
    return tf.random.stateless_uniform((n, 8, 8, 1), seed=(1, 2))


def test_policy_split():
    assert flow_and_network_dtypes("mixed_bfloat16") == ("float32", "mixed_bfloat16")
    assert flow_and_network_dtypes("float64") == ("float64", "float64")
    assert flow_and_network_dtypes(None) == ("float32", "float32")


def test_bfloat16_networks_float32_flow_and_log_prob_close_to_float32():
    full, mixed = _glow("float32"), _glow("mixed_bfloat16")
    x = _x()
    full.initialize(x)
    mixed.set_weights(full.get_weights())
    # Keras's own walk: the networks are plain Keras layers, not flow layers (flow.walk).
    layers = mixed._flatten_layers(include_self=False, recursive=True)
    networks = [l for l in layers if isinstance(l, (fl.GlowConditioner, fl.ZeroInitConv,
                                                    fl.StackedGlowNetworks))]
    assert networks and all(l.compute_dtype == "bfloat16" for l in networks)
    flow_layers = [l for l in layers if isinstance(l, (fl.ActNormLayer, fl.LUConv1x1Layer,
                                                       fl.AffineCouplingLayer,
                                                       fl.GlowStepsLayer))]
    assert flow_layers and all(l.compute_dtype == "float32" for l in flow_layers)
    assert all(w.dtype in ("float32", "int32") for w in mixed.weights)
    assert mixed.dtype_name == "float32"

    ildj = mixed.bijector.inverse_log_det_jacobian(x, event_ndims=3)
    assert ildj.dtype == tf.float32
    log_prob = mixed.log_prob(x)
    assert log_prob.dtype == tf.float32
    # At initialisation the couplings are the identity: identical densities.
    np.testing.assert_allclose(log_prob, full.log_prob(x), rtol=1e-5, atol=1e-4)
    # With non-zero networks, 16-bit networks move log p by little (per dimension).
    rng = np.random.default_rng(0)
    weights = [w + 0.02 * rng.normal(size=w.shape) if w.dtype.kind == "f" and w.ndim else w
               for w in full.get_weights()]
    full.set_weights(weights)
    mixed.set_weights(weights)
    difference = np.abs(mixed.log_prob(x) - full.log_prob(x)) / full.num_dims
    assert np.max(difference) < 0.02, np.max(difference)


def test_bfloat16_fit_is_finite_and_learns():
    model = _glow("mixed_bfloat16")
    model.compile(learning_rate=1e-3, warmup_steps=0)
    history = model.fit(_x(64), batch_size=16, epochs=3, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))
    assert history["loss"][-1] < history["loss"][0]
    sample = model.sample(16, temperature=1.0, seed=3)
    assert sample.dtype == tf.float32 and np.all(np.isfinite(sample))


def test_global_policy_is_the_default():
    previous = keras.config.dtype_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = tfflow.models.RealNVP((4,), num_couplings=2, hidden_units=(8,))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    # Keras's own walk: the networks are plain Keras layers, not flow layers (flow.walk).
    nets = [l for l in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(l, fl.MLPConditioner)]
    assert nets and all(l.compute_dtype == "bfloat16" for l in nets)
    assert model.dtype_name == "float32"
    x = tf.random.stateless_normal((8, 4), seed=(1, 1))
    assert model.log_prob(x).dtype == tf.float32
    assert np.all(np.isfinite(model.log_prob(x)))


def test_a_float16_model_compiles_with_loss_scaling():
    model = tfflow.models.Glow((8, 8, 1), scales=1, steps_per_scale=1, hidden_channels=8,
                               num_levels=17, dtype="mixed_float16")
    model.compile()
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    x = tf.random.stateless_uniform([32, 8, 8, 1], seed=(1, 2))
    history = model.fit(x, epochs=1, batch_size=16, verbose=0).history
    assert np.isfinite(history["loss"][0])
    plain = tfflow.models.Glow((8, 8, 1), scales=1, steps_per_scale=1, hidden_channels=8,
                               num_levels=17)
    plain.compile()
    assert not isinstance(plain.optimizer, keras.optimizers.LossScaleOptimizer)
