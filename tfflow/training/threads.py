"""How many CPU threads one TensorFlow op may use in a training run.

TensorFlow splits each op over every core (intra-op parallelism) and runs
independent ops side by side (inter-op). For the small examples of the
embedded data sets and tables, an op's work is too small to split: the
fork-and-join costs more than it saves. Measured on 2 idle CPU cores
(`benchmarks/README.md`, "Threads"): the default Glow's training step took
37-42 ms with one thread per op against 71-80 ms with TensorFlow's default,
and the default `tfflow-train` run of then (22 epochs) trained in 28-34 s
instead of 44-54 s; Glow on 16x16 images was 1.2-1.4x faster; on 28x28 and
32x32x3 images (hidden width 64 and 384) a training step went from 5%
slower to 1.3x faster, and `log_prob` at times slower; the toy densities'
vector flows ran at the same speed (Keras' per-step overhead dominates
there). So `train` asks for one thread per op for the embedded data sets
and tables on a machine without a GPU, and leaves TensorFlow's default
otherwise; `TrainConfig.intra_op_threads` overrides it.

TensorFlow fixes the setting when its runtime starts (the first op), once per
process: `train` sets it before it touches any data.
"""

from __future__ import annotations

import tensorflow as tf

from tfflow.data.names import EMBEDDED_DATASETS, is_table_file
from tfflow.training.config import TrainConfig
from tfflow.training.errors import UserError

__all__ = ["SMALL_EXAMPLE_THREADS", "planned_intra_op_threads", "use_intra_op_threads"]

#: Threads per op for small examples on a CPU-only machine (0 would be TensorFlow's default).
SMALL_EXAMPLE_THREADS = 1


def planned_intra_op_threads(config: TrainConfig) -> int:
    """The intra-op threads a run of `config` asks for; 0 is TensorFlow's default (every core).

    `config.intra_op_threads` when set; otherwise `SMALL_EXAMPLE_THREADS` for
    the embedded data sets (digits, the toy densities) and tables when no GPU
    is visible and the run is not on a TPU, and 0 for everything else (image
    sets from TFDS, accelerators).
    """
    if config.intra_op_threads is not None:
        return int(config.intra_op_threads)
    small = config.dataset in EMBEDDED_DATASETS or is_table_file(config.dataset)
    on_cpu = config.strategy != "tpu" and not tf.config.list_physical_devices("GPU")
    return SMALL_EXAMPLE_THREADS if small and on_cpu else 0


def use_intra_op_threads(config: TrainConfig) -> None:
    """Sets TensorFlow's intra-op threads to `planned_intra_op_threads(config)`.

    Where TensorFlow's runtime already runs in this process (the setting can
    no longer change), an explicit `config.intra_op_threads` is refused with a
    `UserError` and the automatic choice keeps what the process has.
    """
    threads = planned_intra_op_threads(config)
    if tf.config.threading.get_intra_op_parallelism_threads() == threads:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    except RuntimeError:
        if config.intra_op_threads is not None:
            raise UserError(
                f"expected intra_op_threads set before TensorFlow's runtime starts, but it "
                f"already runs in this process with "
                f"{tf.config.threading.get_intra_op_parallelism_threads()} (0: TensorFlow's "
                f"default), and {threads} was asked; train in a new process, or leave "
                f"intra_op_threads unset.") from None
