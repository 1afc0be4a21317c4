"""Load: one loaded SavedModel serves 8 threads at once with exactly the serial answers.

A tiny Glow (4x4x1) keeps even a batch of 4096 cheap. The bounded workload:
8 threads x 2 rounds x (log_prob and sample at batch sizes 1, 7, 64, 4096),
each thread in its own shuffled order, so calls of different sizes and
signatures overlap.
"""

import concurrent.futures
import random

import numpy as np
import pytest
import tensorflow as tf

import tfflow

SIZES = (1, 7, 64, 4096)
THREADS = 8
ROUNDS = 2


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The export, loaded once, and each call's serial answer."""
    model = tfflow.models.Glow((4, 4, 1), scales=1, steps_per_scale=1, hidden_channels=4,
                               num_levels=17)
    model.initialize(tf.random.stateless_uniform([64, 4, 4, 1], seed=(1, 2)))
    for v in model.trainable_variables:  # not the identity anywhere
        v.assign(v + 0.05 * tf.random.stateless_normal(v.shape, seed=(3, 4), dtype=v.dtype))
    path = tfflow.export.export_saved_model(model, tmp_path_factory.mktemp("load") / "m",
                                            max_samples=max(SIZES))
    loaded = tf.saved_model.load(str(path))
    inputs = {n: tf.random.stateless_uniform([n, 4, 4, 1], seed=(n, 5)) for n in SIZES}
    calls = {}
    for n in SIZES:
        calls[("log_prob", n)] = lambda n=n: loaded.signatures["log_prob"](
            x=inputs[n])["log_prob"].numpy()
        calls[("sample", n)] = lambda n=n: loaded.signatures["sample"](
            n=tf.constant(n), seed=tf.constant([n, 7]),
            temperature=tf.constant(0.7))["samples"].numpy()
    serial = {key: call() for key, call in calls.items()}
    return calls, serial


def test_serial_answers_are_sane(served):
    _, serial = served
    for (name, n), value in serial.items():
        assert value.shape[0] == n and np.all(np.isfinite(value)), (name, n)


def test_eight_threads_get_the_serial_answers(served):
    calls, serial = served

    def worker(index):
        order = list(calls) * ROUNDS
        random.Random(index).shuffle(order)
        return [(key, calls[key]()) for key in order]

    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(worker, range(THREADS), timeout=600))
    assert sum(len(r) for r in results) == THREADS * ROUNDS * len(calls)
    for per_thread in results:
        for key, value in per_thread:
            np.testing.assert_array_equal(value, serial[key], err_msg=str(key))
