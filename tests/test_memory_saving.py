"""Memory-saving training (`memory_saving=True`): same model, same gradients, fewer activations.

The reversible blocks rebuild every step's input from its output in the
backward pass; these tests check that the gradients equal plain autodiff's
(float64, relative 1e-5), that `fit` (also under XLA) and `.keras` saving work,
that the blocks refuse what they cannot reconstruct, and that a step's peak
tensor memory drops (TF's allocator statistics, in a fresh process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfflow
from tfflow import layers as fl

MODELS = {
    "glow_affine_lu": lambda ms, dtype: tfflow.models.Glow(
        (8, 8, 2), scales=2, steps_per_scale=2, hidden_channels=8, memory_saving=ms,
        dtype=dtype),
    "glow_additive_conv_classes": lambda ms, dtype: tfflow.models.Glow(
        (8, 8, 1), scales=1, steps_per_scale=2, hidden_channels=8, coupling="additive",
        permutation="conv", num_classes=3, memory_saving=ms, dtype=dtype),
    "glow_reverse_permutation": lambda ms, dtype: tfflow.models.Glow(
        (8, 8, 2), scales=2, steps_per_scale=2, hidden_channels=8, permutation="reverse",
        memory_saving=ms, dtype=dtype),
    "realnvp_image_batch_norm": lambda ms, dtype: tfflow.models.RealNVP(
        (8, 8, 1), hidden_channels=8, blocks=1, memory_saving=ms, dtype=dtype),
    "realnvp_vector_spline": lambda ms, dtype: tfflow.models.RealNVP(
        (4,), num_couplings=3, hidden_units=(8,), coupling="spline", memory_saving=ms,
        dtype=dtype),
    "nice": lambda ms, dtype: tfflow.models.NICE((6,), hidden_units=(8,), memory_saving=ms,
                                                 dtype=dtype),
}


def _pair(name, dtype="float64"):
    """(plain, memory-saving) models with the same, non-trivial weights, initialised on x."""
    plain, saving = MODELS[name](False, dtype), MODELS[name](True, dtype)
    x = tf.random.stateless_uniform((6,) + plain.event_shape, seed=(1, 2), dtype=dtype)
    labels = tf.constant([0, 1, 2, 0, 1, 2]) if plain.num_classes else None
    plain.initialize(x, labels)
    # Zero-initialised output layers make every coupling the identity: perturb all weights.
    rng = np.random.default_rng(0)
    weights = [w + 0.05 * rng.normal(size=w.shape) if w.dtype.kind == "f" and w.ndim else w
               for w in plain.get_weights()]
    plain.set_weights(weights)
    saving.set_weights(weights)
    return plain, saving, x, labels


def _loss_and_gradients(model, x, labels):
    with tf.GradientTape() as tape:
        # fit's loss from public parts: the training-mode bijector over the base, built
        # under the tape (a memory-saving bijector reads its weights when it is built).
        flow = tfp.distributions.TransformedDistribution(
            model.base_distribution(), model.bijector_for(labels, training=True))
        loss = -tf.reduce_mean(flow.log_prob(x))
    return loss, tape.gradient(loss, model.trainable_variables)


@pytest.mark.parametrize("name", list(MODELS))
def test_gradients_equal_plain_autodiff_float64(name):
    plain, saving, x, labels = _pair(name)
    assert any(isinstance(l, fl.ReversibleChainLayer) or
               (isinstance(l, fl.GlowStepsLayer) and l.memory_saving)
               for _, l in saving.flow.walk())
    # Eager: tiny models run faster than they trace. The traced path is
    # test_traced_gradients_equal_too and the fit tests.
    plain_loss, plain_grads = _loss_and_gradients(plain, x, labels)
    loss, grads = _loss_and_gradients(saving, x, labels)
    np.testing.assert_allclose(loss, plain_loss, rtol=1e-10)
    assert len(grads) == len(plain_grads)
    for variable, g, want in zip(saving.trainable_variables, grads, plain_grads):
        assert g is not None, variable.path
        g, want = tf.convert_to_tensor(g), tf.convert_to_tensor(want)
        scale = max(float(np.max(np.abs(want))), 1e-12)
        np.testing.assert_allclose(g, want, rtol=0, atol=1e-5 * scale, err_msg=variable.path)


def test_traced_gradients_equal_too():
    plain, saving, x, labels = _pair("glow_affine_lu")
    run = tf.function(_loss_and_gradients, autograph=False)
    _, plain_grads = run(plain, x, labels)
    _, grads = run(saving, x, labels)
    for g, want in zip(grads, plain_grads):
        np.testing.assert_allclose(g, want, rtol=1e-7, atol=1e-10)


def _digits(n=32):
    return tf.random.stateless_uniform((n, 8, 8, 1), seed=(3, 4))


def test_jit_compiled_fit_matches_the_plain_eager_fit():
    def fit(memory_saving):
        keras.utils.set_random_seed(0)
        model = tfflow.models.Glow((8, 8, 1), scales=1, steps_per_scale=2, hidden_channels=8,
                                   num_levels=17, memory_saving=memory_saving)
        # The reference runs eagerly: nothing to trace, and plain autodiff.
        model.compile(jit_compile=memory_saving, run_eagerly=not memory_saving,
                      warmup_steps=0)
        history = model.fit(tf.data.Dataset.from_tensor_slices(_digits()).batch(16), epochs=1,
                            verbose=0).history
        return model, history["loss"][0]

    plain, plain_loss = fit(False)
    saving, loss = fit(True)
    assert np.isfinite(loss)
    assert loss == pytest.approx(plain_loss, rel=1e-4)
    np.testing.assert_allclose(saving.log_prob(_digits()), plain.log_prob(_digits()),
                               rtol=1e-3, atol=1e-2)


def test_keras_save_load_round_trip(tmp_path):
    model = tfflow.models.Glow((8, 8, 1), scales=1, steps_per_scale=2, hidden_channels=8,
                               memory_saving=True)
    model.compile(warmup_steps=0)
    model.run_eagerly = True  # eager steps: nothing to trace, and the eager gradient path
    model.fit(_digits(), batch_size=16, epochs=1, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    blocks = [l for _, l in loaded.flow.walk() if isinstance(l, fl.GlowStepsLayer)]
    assert len(blocks) == 1 and blocks[0].memory_saving and blocks[0].num_steps == 2
    np.testing.assert_allclose(loaded.log_prob(_digits()), model.log_prob(_digits()),
                               rtol=1e-6, atol=1e-5)
    assert loaded.is_initialized


def test_blocks_refuse_what_they_cannot_rebuild():
    with pytest.raises(ValueError, match="batch statistics"):
        fl.ReversibleChainLayer([fl.ActNormLayer(), fl.BatchNormalizationLayer()])
    block = fl.ReversibleChainLayer([fl.ActNormLayer(), fl.SqueezeLayer()])
    with pytest.raises(ValueError, match="keep the event shape"):
        block.build((None, 4, 4, 1))


_MEMORY_SCRIPT = r"""
import json, os
os.environ["TF_CPU_ALLOCATOR_USE_BFC"] = "true"   # so that CPU:0 reports peak tensor memory
import keras, tensorflow as tf, tfflow
x = tf.random.stateless_uniform((8, 16, 16, 2), seed=(1, 2))
peaks = {}
for memory_saving in (False, True):
    keras.utils.set_random_seed(0)
    model = tfflow.models.Glow((16, 16, 2), scales=1, steps_per_scale=16, hidden_channels=4,
                               memory_saving=memory_saving)
    model.initialize(x)
    model.compile(warmup_steps=0)
    model.train_on_batch(x)
    tf.config.experimental.reset_memory_stats("CPU:0")
    model.train_on_batch(x)
    info = tf.config.experimental.get_memory_info("CPU:0")
    peaks[str(memory_saving)] = info["peak"] - info["current"]
print(json.dumps(peaks))
"""


def test_memory_saving_stores_fewer_activations():
    # Peak tensor memory of a training step above what stays allocated: the
    # activations. The standard mode's backward loop replays one step at a time
    # too, from the K steps' inputs it kept: memory saving keeps none of them
    # (K=16: 0.51x measured). Without the ordering of the rebuilds, TF's executor rebuilds
    # every step as soon as the output is known and nothing is saved (measured).
    result = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT], capture_output=True,
                            text=True, timeout=600,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    peaks = json.loads(result.stdout.strip().splitlines()[-1])
    assert peaks["True"] < 0.6 * peaks["False"], peaks
