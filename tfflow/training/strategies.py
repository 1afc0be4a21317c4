"""The `tf.distribute` strategies `tfflow-train --strategy` names; the one place one is created."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import tensorflow as tf

from tfflow.training.errors import UserError

__all__ = ["is_chief", "make_strategy", "STRATEGIES"]


def _default_strategy(tpu: str | None) -> tf.distribute.Strategy:
    del tpu
    return tf.distribute.get_strategy()


def _mirrored_strategy(tpu: str | None) -> tf.distribute.Strategy:
    del tpu
    # Every local GPU; on a machine without one, the CPU (one replica).
    return tf.distribute.MirroredStrategy()


def _multi_worker_strategy(tpu: str | None) -> tf.distribute.Strategy:
    del tpu
    if not os.environ.get("TF_CONFIG"):
        raise UserError("strategy multi_worker reads the cluster from the TF_CONFIG environment "
                        "variable, which is not set; set it on every worker, e.g. "
                        '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
                        '"task": {"type": "worker", "index": 0}}.')
    try:
        cluster = json.loads(os.environ["TF_CONFIG"])
    except json.JSONDecodeError as error:
        raise UserError(f"TF_CONFIG is not valid JSON: {error}.") from None
    if not isinstance(cluster, dict) or "cluster" not in cluster or "task" not in cluster:
        raise UserError(f"expected TF_CONFIG with 'cluster' and 'task' keys, got "
                        f"{os.environ['TF_CONFIG']!r}.")
    return tf.distribute.MultiWorkerMirroredStrategy()


def _tpu_strategy(tpu: str | None) -> tf.distribute.Strategy:
    if not tpu:
        raise UserError("strategy tpu needs --tpu: the TPU's name or grpc:// address, or "
                        "'local' on a TPU VM.")
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError) as error:
        raise UserError(f"cannot reach TPU {tpu!r}: {' '.join(str(error).split())}") from None
    return tf.distribute.TPUStrategy(resolver)


# Strategy name -> factory(tpu address). tf.distribute does all communication;
# tfflow's train step scales the loss by the replica count and its metrics
# and ActNorm initialisation are replica-safe (see FlowModel).
STRATEGIES: dict[str, Callable[[str | None], tf.distribute.Strategy]] = {
    "default": _default_strategy,
    "mirrored": _mirrored_strategy,
    "multi_worker": _multi_worker_strategy,
    "tpu": _tpu_strategy,
}


def make_strategy(name: str, tpu: str | None = None) -> tf.distribute.Strategy:
    """Creates the `tf.distribute.Strategy` named `name` (the only place one is created).

    Args:
      name: "default" (no distribution: one device), "mirrored" (every local
        GPU, synchronous all-reduce), "multi_worker" (several hosts, the cluster
        from the TF_CONFIG environment variable; run the same command on every
        worker) or "tpu".
      tpu: For "tpu": the TPU's name or address ("local" on a TPU VM).

    Raises:
      UserError: for an unknown name, a missing TF_CONFIG or --tpu, or an
        unreachable TPU.
    """
    if name not in STRATEGIES:
        raise UserError(f"unknown strategy {name!r}; expected one of {', '.join(STRATEGIES)}.")
    return STRATEGIES[name](tpu)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's files (always, except non-chief workers).

    Under multi-worker training every worker runs the same program; only the
    chief (the "chief" task, or worker 0 when there is none) may write to the
    shared workdir, or the workers would overwrite each other's files.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type is None or task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief
