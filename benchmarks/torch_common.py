"""What the PyTorch peer scripts share (run in the benchmark-only virtualenv, never by tfflow)."""

from __future__ import annotations

import time

import torch

#: What `--clock` measures: wall seconds or this process's CPU seconds (all threads).
CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


def warm_up_adam(lr: float) -> None:
    """One Adam step on a dummy weight, before the clock starts.

    Adam's constructor and first step import torch._dynamo lazily (about 7 s
    on this machine): a one-off cost of the process, not of the model, so it
    is paid up front, as tfflow's benchmarks import TensorFlow first.
    """
    warm = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.Adam([warm], lr=lr)
    warm.sum().backward()
    optimizer.step()


def adam_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> bool:
    """One step on `loss`; a non-finite loss is skipped (False), as tfflow's guard does."""
    optimizer.zero_grad(set_to_none=True)
    if not torch.isfinite(loss):
        return False
    loss.backward()
    optimizer.step()
    return True
