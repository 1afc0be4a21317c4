"""MultiWorkerMirroredStrategy with 2 worker processes on 127.0.0.1 equals one process.

Each worker is a real process with its own TF_CONFIG; they talk over gRPC on
free local ports. The same script, without TF_CONFIG, is the single-process
reference. Every process is killed when the test ends, pass or fail.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

_WORKER = r"""
import json, os, sys
import keras
import numpy as np
import tensorflow as tf
import tfflow
from tfflow import training

out_dir = sys.argv[1]
multi = "TF_CONFIG" in os.environ
strategy = training.make_strategy("multi_worker" if multi else "default")
keras.utils.set_random_seed(0)
x = tf.random.stateless_uniform([64, 8, 8, 1], seed=(1, 2))
data = tf.data.Dataset.from_tensor_slices(x).batch(16)  # the global batch
with strategy.scope():
    model = tfflow.models.Glow((8, 8, 1), scales=2, steps_per_scale=1, hidden_channels=8,
                               num_levels=17)
    model.compile(learning_rate=1e-3, warmup_steps=0)
history = model.fit(data, epochs=2, verbose=0).history
chief = training.is_chief(strategy)
task = json.loads(os.environ.get("TF_CONFIG", '{"task": {"index": 0}}'))["task"]["index"]
np.savez(os.path.join(out_dir, f"weights{task if multi else '_single'}.npz"),
         *[w.numpy() for w in model.weights])
if chief:  # non-chief workers must not write into the shared run folder
    model.save(os.path.join(out_dir, "model.keras"))
print(json.dumps({"history": {k: [float(v) for v in vs] for k, vs in history.items()},
                  "chief": chief, "replicas": strategy.num_replicas_in_sync,
                  "initialized": model.is_initialized}))
"""

_TIMEOUT_S = 300


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start(argv, tf_config=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen([sys.executable] + [str(arg) for arg in argv], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _cluster(count):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(count)]}
    return [{"cluster": cluster, "task": {"type": "worker", "index": index}}
            for index in range(count)]


def _finish(procs):
    """Waits for every process within the time bound; returns [(rc, stdout, stderr)]."""
    deadline = time.monotonic() + _TIMEOUT_S
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=max(1., deadline - time.monotonic()))
            results.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return results


def _last_json(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


def test_two_workers_match_one_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    multi_dir, single_dir = tmp_path / "multi", tmp_path / "single"
    multi_dir.mkdir()
    single_dir.mkdir()
    results = _finish([_start([script, multi_dir], tf_config) for tf_config in _cluster(2)])
    for index, (code, _, err) in enumerate(results):
        assert code == 0, f"worker {index} failed:\n{err[-3000:]}"
    (code, out, err), = _finish([_start([script, single_dir])])
    assert code == 0, err[-3000:]

    reports = [_last_json(out) for _, out, _ in results]
    single = _last_json(out)
    assert [r["replicas"] for r in reports] == [2, 2]
    assert [r["chief"] for r in reports] == [True, False]
    assert all(r["initialized"] for r in reports)
    # Only the chief wrote the checkpoint, and it loads.
    assert sorted(p.name for p in multi_dir.iterdir()) == [
        "model.keras", "weights0.npz", "weights1.npz"]
    import keras
    import tfflow  # registers the model's classes with Keras
    del tfflow
    restored = keras.models.load_model(multi_dir / "model.keras")
    assert restored.is_initialized

    w0, w1, ws = (np.load(path) for path in (multi_dir / "weights0.npz",
                                             multi_dir / "weights1.npz",
                                             single_dir / "weights_single.npz"))
    assert len(w0.files) == len(ws.files) > 0
    for key in w0.files:
        np.testing.assert_array_equal(w0[key], w1[key], err_msg=f"weight {key} across workers")
        np.testing.assert_allclose(w0[key], ws[key], rtol=0, atol=1e-5,
                                   err_msg=f"weight {key} vs one process")
    for metric in ("loss", "bits_per_dim"):
        for report in reports:
            np.testing.assert_allclose(report["history"][metric], single["history"][metric],
                                       rtol=1e-5, err_msg=metric)


@pytest.mark.parametrize("tf_config", [None, "not json", '{"cluster": {}}'])
def test_multi_worker_needs_a_valid_tf_config(monkeypatch, tf_config):
    from tfflow import training
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(training.UserError, match="TF_CONFIG"):
        training.make_strategy("multi_worker")


def test_tpu_needs_an_address():
    from tfflow import training
    with pytest.raises(training.UserError, match="--tpu"):
        training.make_strategy("tpu")


def test_tfflow_train_on_two_workers(tmp_path):
    """The command line: the same `tfflow-train --strategy=multi_worker` on both workers."""
    train = pathlib.Path(__file__).resolve().parents[1] / "bin" / "tfflow-train"
    workdir = tmp_path / "run"
    argv = [train, "--strategy=multi_worker", f"--workdir={workdir}", "--scales=1",
            "--steps_per_scale=1", "--hidden_channels=8", "--epochs=1", "--batch_size=64",
            "--max_train_seconds=0", "--num_samples=4", "--verbose=0"]
    results = _finish([_start(argv, tf_config) for tf_config in _cluster(2)])
    for index, (code, _, err) in enumerate(results):
        assert code == 0, f"worker {index} failed:\n{err[-3000:]}"
    summaries = [out.strip().splitlines()[-1] for _, out, _ in results]
    assert "wrote" in summaries[0] and "the chief worker writes" in summaries[1], summaries
    # Both workers trained the same model: their test scores agree.
    assert summaries[0].split(";")[0] == summaries[1].split(";")[0], summaries
    assert {"config.json", "model.keras", "samples_T0.7.png"} <= {
        p.name for p in workdir.iterdir()}
    assert not (workdir / "backup").exists()


def _epochs_backed_up(workdir):
    try:
        return json.loads((workdir / "backup" / "state.json").read_text())["epochs_done"]
    except (OSError, ValueError):  # not there yet (written atomically: never partial)
        return 0


def test_a_worker_killed_mid_epoch_and_restarted_ends_with_the_uninterrupted_weights(tmp_path):
    """SIGKILL one of two `tfflow-train --strategy=multi_worker` workers, start both again.

    The backup lives in the shared workdir (the chief writes it, every worker
    reads it when it starts), so the restarted cluster resumes from the epoch
    the kill interrupted and, with --deterministic, ends bit-identical to a
    cluster that was never interrupted.
    """
    train = pathlib.Path(__file__).resolve().parents[1] / "bin" / "tfflow-train"
    flags = ["--strategy=multi_worker", "--scales=1", "--steps_per_scale=1",
             "--hidden_channels=8", "--epochs=3", "--batch_size=64", "--num_samples=4",
             "--verbose=2", "--deterministic"]
    reference, victim = tmp_path / "reference", tmp_path / "victim"

    def cluster(workdir):
        return [_start([train, f"--workdir={workdir}", *flags], tf_config)
                for tf_config in _cluster(2)]

    uninterrupted, killed = cluster(reference), cluster(victim)
    try:
        deadline = time.monotonic() + _TIMEOUT_S
        while _epochs_backed_up(victim) < 1:
            assert all(p.poll() is None for p in killed), "a worker ended before the kill"
            assert time.monotonic() < deadline, "no backup appeared"
            time.sleep(0.02)
        killed[1].kill()  # SIGKILL, inside the second epoch
        (chief_code, _, chief_err), _ = _finish(killed)
        # The surviving chief loses its peer in a collective: one line, exit status 2.
        assert chief_code == 2, chief_err[-3000:]
        last = chief_err.strip().splitlines()[-1]
        assert last.startswith("tfflow-train: error: lost contact with another worker"), last
        assert f"the run is saved in {victim} (backup after epoch " in last, last
        assert (victim / "backup" / "state.json").is_file()
        resumed = _finish(cluster(victim))
        finished = _finish(uninterrupted)
    finally:
        for process in uninterrupted + killed:
            if process.poll() is None:
                process.kill()
    for code, out, err in resumed + finished:
        assert code == 0, out[-2000:] + err[-3000:]
    for _, out, _ in resumed:
        assert "Resuming from" in out and "at epoch 2/3" in out, out
    import keras
    import tfflow  # registers the model's classes with Keras
    del tfflow
    mine = keras.models.load_model(victim / "model.keras").get_weights()
    theirs = keras.models.load_model(reference / "model.keras").get_weights()
    for a, b in zip(mine, theirs, strict=True):
        np.testing.assert_array_equal(a, b)
