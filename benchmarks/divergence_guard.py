"""Per-step cost of `tfflow.training.DivergenceGuard` (issue 7) in `fit`.

The guard copies the weights before every step so that, on a non-finite loss,
the last finite weights can be put back and the layer at fault found. This
times the default Glow on digits (batch 32) with and without it: median step
time after 20 warm-up steps, 3 interleaved repeats, ratio with / without.

    python benchmarks/divergence_guard.py
"""

from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # pylint: disable=wrong-import-position

import tfflow  # pylint: disable=wrong-import-position
from tfflow.training import DivergenceGuard  # pylint: disable=wrong-import-position


class StepTimes(keras.callbacks.Callback):
    """Wall-clock time at the end of every training batch."""

    def __init__(self) -> None:
        super().__init__()
        self.ends: list[float] = []

    def on_train_batch_end(self, batch, logs=None) -> None:
        self.ends.append(time.perf_counter())


def median_step_ms(guard: bool, steps: int = 120, warmup: int = 20) -> float:
    keras.utils.set_random_seed(0)
    data = tfflow.data.load("digits", "train", batch_size=32, shuffle=True, seed=0,
                            drop_remainder=True, repeat=True)
    model = tfflow.models.Glow((8, 8, 1), scales=2, steps_per_scale=4, hidden_channels=64,
                               num_levels=17)
    model.compile()
    times = StepTimes()
    model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0,
              callbacks=[times] + ([DivergenceGuard()] if guard else []))
    ends = times.ends[warmup:]
    return statistics.median(b - a for a, b in zip(ends, ends[1:])) * 1e3


def main(repeats: int = 3) -> None:
    results: dict[bool, list[float]] = {False: [], True: []}
    for repeat in range(repeats):
        for guard in (False, True):
            results[guard].append(median_step_ms(guard))
            print(f"  repeat {repeat}: guard {'on ' if guard else 'off'} "
                  f"{results[guard][-1]:.2f} ms/step", flush=True)
    off, on = statistics.median(results[False]), statistics.median(results[True])
    print(f"Glow L=2 K=4 h64 on digits, batch 32: {off:.2f} ms/step without the guard, "
          f"{on:.2f} with it; ratio {on / off:.3f}")


if __name__ == "__main__":
    main()
