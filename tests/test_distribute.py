"""Training under tf.distribute.MirroredStrategy over 2 logical CPU devices equals one device.

Logical devices must be configured before TensorFlow starts, so the comparison
runs in a fresh process.
"""

import json
import math
import os
import subprocess
import sys

_SCRIPT = r"""
import json
import math
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import numpy as np
import tfflow

def train(strategy):
    keras.utils.set_random_seed(0)
    x = tf.random.stateless_uniform([64, 8, 8, 1], seed=(1, 2))
    data = tf.data.Dataset.from_tensor_slices(x).batch(16)   # global batch 16
    with strategy.scope():
        model = tfflow.models.Glow((8, 8, 1), scales=2, steps_per_scale=1, hidden_channels=8,
                                   num_levels=17)
        model.compile(learning_rate=1e-3, warmup_steps=0)
    history = model.fit(data, epochs=2, verbose=0).history
    return model, history

single, single_history = train(tf.distribute.get_strategy())
mirrored, mirrored_history = train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
weight_diff = max(float(np.max(np.abs(a.numpy() - b.numpy())))
                  for a, b in zip(single.weights, mirrored.weights))
# ActNorm parameters as each replica holds them.
replica_spread = 0.0
for layer in [l for _, l in mirrored.flow.walk() if l.needs_data_init]:
    # ActNormLayer's loc/log_scale, or a GlowStepsLayer's stacked actnorm_loc/actnorm_log_scale.
    for weight in [w for w in layer.weights if w.name.split("/")[-1] in
                   ("loc", "log_scale", "actnorm_loc", "actnorm_log_scale")]:
        copies = [v.numpy() for v in weight.value.values]
        replica_spread = max(replica_spread, max(float(np.max(np.abs(c - copies[0])))
                                                 for c in copies))
print(json.dumps({"weight_diff": weight_diff, "replicas": len(weight.value.values),
                  "replica_spread": replica_spread, "single": single_history,
                  "mirrored": mirrored_history, "initialized": mirrored.is_initialized}))
"""


def test_mirrored_strategy_matches_single_device():
    result = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True,
                            timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    assert out["initialized"]
    assert out["weight_diff"] < 1e-5, out
    assert out["replica_spread"] == 0.0, out
    for metric in ("loss", "bits_per_dim"):
        for a, b in zip(out["single"][metric], out["mirrored"][metric]):
            assert abs(a - b) < 1e-5, (metric, out)


def test_train_under_mirrored_strategy(tmp_path):
    """`tfflow-train --strategy=mirrored`'s path: one replica per GPU, the CPU when there is none."""
    from tfflow import training
    config = training.TrainConfig(model="realnvp", dataset="two_moons", num_examples=256,
                                  epochs=2, batch_size=64, strategy="mirrored",
                                  max_train_seconds=0, workdir=str(tmp_path), verbose=0)
    result = training.train(config)
    assert result.epochs_run == 2
    assert all(math.isfinite(v) for v in result.history["loss"] + result.history["val_loss"])
    assert (tmp_path / "model.keras").exists()
