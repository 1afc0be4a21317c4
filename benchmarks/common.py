"""Shared plumbing for the benchmarks: device choice, TFP peers, memory, budgeted training, tables.

Every model in a benchmark is trained the same way:

* the clock starts before anything model-specific runs (ActNorm data-dependent
  initialisation, the first `tf.function` trace), so trace time is part of
  the budget, as it is for a user;
* training stops after the first step that ends past `seconds`;
* after every epoch (and after the final, partial one) the validation split is
  evaluated, and the weights with the lowest validation NLL are kept and
  restored at the end; validation time counts towards the budget;
* the reported numbers come from one evaluation of the restored weights on
  pre-drawn batches that are identical for every model.

tfflow models train through `keras.Model.fit` (the user's path) with the
callbacks below; TFP peers train with a plain `tf.function` step and
`train_custom`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


#: How a benchmark's worker process hands its measurements back: its last such line.
RESULT_PREFIX = "RESULT "


def print_result(result: dict) -> None:
    """Prints a worker's result as the line `worker_result` reads back."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def worker_result(stdout: str) -> dict | None:
    """The last result a worker printed (`print_result`) in `stdout`; None if none."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    return None


def digits_images(shape: Sequence[int], n: int, seed: int):
    """n digits-derived images of `shape` (H and W multiples of 8) in [0, 1), float32."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    from tfflow import data as tfdata  # pylint: disable=import-outside-toplevel
    h, w, c = shape
    levels = tfdata.load_array("digits", "train").astype(np.float32)  # [N, 8, 8, 1] in 0..16
    levels = levels[np.arange(n) % len(levels)]
    levels = np.repeat(np.repeat(levels, h // 8, axis=1), w // 8, axis=2)
    levels = np.repeat(levels, c, axis=3)
    noise = np.random.default_rng(seed).uniform(size=levels.shape).astype(np.float32)
    return (levels + noise) / 17.


def subset(flag: str, value: str, allowed: Iterable[str]) -> list[str]:
    """A comma-separated flag value as a list, every entry one of `allowed` (else exit)."""
    allowed = list(allowed)
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    if not chosen or set(chosen) - set(allowed):
        raise SystemExit(f"--{flag}: expected a subset of {','.join(allowed)}; got {value!r}")
    return chosen


def without_missing_peers(models: list[str], torch_models: Iterable[str],
                          peer_python: str) -> list[str]:
    """`models` less the PyTorch peers when their virtualenv is not there (said once)."""
    torch_models = set(torch_models)
    if any(m in torch_models for m in models) and not os.path.exists(peer_python):
        print(f"no PyTorch virtualenv at {peer_python}: skipping the PyTorch peers")
        return [m for m in models if m not in torch_models]
    return models


def start_run(args: argparse.Namespace, models: Sequence[str], torch_models: Iterable[str],
              *, prefix: str) -> tuple[str, list[str], str]:
    """What a quality benchmark does first: `(device line, models to run, scratch folder)`.

    Checks `--models` against `models` (before TensorFlow loads, so a typo fails at
    once) less the PyTorch peers when `--peer_python` is missing, restricts
    TensorFlow to `--device` (before it creates a tensor), makes a scratch folder
    named `prefix...` and prints the device and the code measured.
    """
    chosen = without_missing_peers(subset("models", args.models, models), torch_models,
                                   args.peer_python)
    device = setup_device(args.device)
    workdir = tempfile.mkdtemp(prefix=prefix)
    print(f"device: {device}; {code_version()}")
    return device, chosen, workdir


def add_common_flags(parser: argparse.ArgumentParser, *, seconds: float) -> None:
    parser.add_argument("--seconds", type=float, default=seconds,
                        help="training budget per model and repeat, in seconds of --clock; "
                             f"default {seconds:g}")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                        help="cpu (default; GPUs hidden) or gpu (fails if none is visible)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="train every model this many times (seeds seed, seed+1, ...) "
                             "and report medians; the order of the models alternates")
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                        help="what --seconds measures: wall (default) or process (CPU time "
                             "of this process, all threads: fairer on a shared machine, where "
                             "other jobs steal wall time unevenly; on 2 idle cores a wall "
                             "second is about 2 process seconds)")


CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


class Clock:
    """Measures a run's budget on the chosen clock, and its wall and CPU time both."""

    def __init__(self, kind: str = "wall"):
        self.now = CLOCKS[kind]
        self.start = self.now()
        self.wall_start = time.perf_counter()
        self.cpu_start = time.process_time()

    def elapsed(self) -> float:
        return self.now() - self.start

    def finish(self, stats: dict) -> None:
        stats["train_s"] = time.perf_counter() - self.wall_start
        stats["cpu_s"] = time.process_time() - self.cpu_start


def setup_device(device: str) -> str:
    """Restricts TensorFlow to the requested device; returns a one-line description.

    Must run before TensorFlow creates its first tensor.
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    # Each run builds fresh tf.functions; TF's "retracing" warnings about that are noise here.
    tf.get_logger().setLevel("ERROR")
    gpus = tf.config.list_physical_devices("GPU")
    if device == "cpu":
        if gpus:
            tf.config.set_visible_devices([], "GPU")
        cores = os.cpu_count()
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:
            pass
        return (f"cpu ({cores} cores visible, {platform.processor() or platform.machine()}; "
                f"TF {tf.__version__})")
    if not gpus:
        raise SystemExit("--device=gpu: TensorFlow sees no GPU here; use --device=cpu.")
    names = []
    for gpu in gpus:
        details = tf.config.experimental.get_device_details(gpu)
        names.append(details.get("device_name", gpu.name))
    return f"gpu ({', '.join(names)}; TF {tf.__version__})"


def code_version() -> str:
    """The tfflow checkout measured: commit, and whether tfflow/ has uncommitted changes."""
    import subprocess  # pylint: disable=import-outside-toplevel
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                                capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "tfflow"], cwd=root,
                               text=True, capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "tfflow (no git checkout)"
    return f"tfflow at {commit}" + (" + uncommitted changes in tfflow/" if dirty else "")


def count_params(variables: Iterable[Any]) -> int:
    return int(sum(math.prod(int(d) for d in v.shape) for v in variables))


def check_params_close(counts: dict[str, int], tolerance: float = 0.10) -> None:
    """Prints the parameter counts; stops the benchmark if they differ by more than `tolerance`."""
    reference = max(counts.values())
    for name, count in counts.items():
        print(f"  {name:<24s} {count:>9,d} trainable parameters")
    spread = (max(counts.values()) - min(counts.values())) / reference
    if spread > tolerance:
        raise SystemExit(f"parameter counts differ by {spread:.1%} (> {tolerance:.0%}); "
                         "adjust the architecture flags so the comparison is fair.")
    print(f"  largest difference: {spread:.1%} (limit {tolerance:.0%})")


def materialise(dataset, passes: int = 1) -> list:
    """`passes` iterations over a finite dataset as a list of eager tensors.

    Each pass draws fresh dequantisation noise (tfflow.data re-randomises per
    iteration); the list is then fixed, so every model is scored on the same numbers.
    """
    batches = []
    for _ in range(passes):
        batches.extend(dataset)
    return batches


def mean_nll(log_prob_fn: Callable, batches: Sequence) -> float:
    """Mean negative log-likelihood (nats per example) over a list of batches."""
    total, count = 0.0, 0
    for x in batches:
        log_prob = log_prob_fn(x).numpy()
        total -= float(log_prob.sum())
        count += log_prob.shape[0]
    return total / count


# ------------------------------------------------------------------------------ TFP peers


def tfp_glow(image_shape, *, levels: int, steps_per_level: int, hidden: int, seed: int = 0):
    """`tfp.bijectors.Glow` with its default networks, under a N(0, I) base.

    Returns (glow, make_distribution): `make_distribution(temperature=1.0)` is the
    `tfd.TransformedDistribution` of the data, the base's standard deviation
    scaled by `temperature`. tfb.Glow's ActNorms initialise themselves on their
    first call, so make one eager `log_prob` call on data before training.
    """
    import functools  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tensorflow_probability as tfp  # pylint: disable=import-outside-toplevel
    tfb, tfd = tfp.bijectors, tfp.distributions
    tf.random.set_seed(seed)
    glow = tfb.Glow(output_shape=tuple(image_shape), num_glow_blocks=levels,
                    num_steps_per_block=steps_per_level,
                    coupling_bijector_fn=functools.partial(tfb.GlowDefaultNetwork,
                                                           num_hidden=hidden),
                    exit_bijector_fn=tfb.GlowDefaultExitNetwork, seed=seed)
    latent = glow.inverse_event_shape(tuple(image_shape))

    def make_distribution(temperature=1.0):
        return tfd.TransformedDistribution(tfd.Sample(tfd.Normal(0., temperature), latent), glow)

    return glow, make_distribution


def tfp_realnvp_stack(dims: int, *, num_couplings: int, hidden_units: Sequence[int],
                      seed: int = 0):
    """`num_couplings` x `tfb.RealNVP(num_masked=dims // 2)` with a reversing `tfb.Permute`
    between them, under a N(0, I) base.

    Each `shift_and_log_scale_fn` is a tf_keras MLP num_masked -> hidden_units ->
    2 x (dims - num_masked), ReLU, zero-initialised output layer (the flow starts
    as the identity), unbounded log-scale, as `tfb.real_nvp_default_template`
    builds it. Returns (make_distribution, trainable_variables);
    `make_distribution(temperature=1.0)` as in `tfp_glow`.
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tensorflow_probability as tfp  # pylint: disable=import-outside-toplevel
    import tf_keras  # pylint: disable=import-outside-toplevel
    tfb, tfd = tfp.bijectors, tfp.distributions
    tf.random.set_seed(seed)
    tf_keras.utils.set_random_seed(seed)
    masked = dims // 2
    layers, variables = [], []
    for k in range(num_couplings):
        net = tf_keras.Sequential([
            tf_keras.layers.InputLayer(input_shape=(masked,)),
            *[tf_keras.layers.Dense(units, activation="relu") for units in hidden_units],
            tf_keras.layers.Dense(2 * (dims - masked), kernel_initializer="zeros"),
        ])

        def shift_and_log_scale(x0, output_units, net=net):
            del output_units  # dims - masked
            shift, log_scale = tf.split(net(x0), 2, axis=-1)
            return shift, log_scale

        layers.append(tfb.RealNVP(num_masked=masked, shift_and_log_scale_fn=shift_and_log_scale))
        variables.extend(net.trainable_variables)
        if k < num_couplings - 1:
            layers.append(tfb.Permute(list(range(dims))[::-1]))
    flow = tfb.Chain(layers[::-1])

    def make_distribution(temperature=1.0):
        return tfd.TransformedDistribution(tfd.Sample(tfd.Normal(0., temperature), [dims]), flow)

    return make_distribution, variables


def tfp_realnvp_stack_params(dims: int, num_couplings: int, hidden_units: Sequence[int]) -> int:
    """The trainable parameter count of `tfp_realnvp_stack` (without building it)."""
    sizes = [dims // 2, *hidden_units, 2 * (dims - dims // 2)]
    per_net = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    return num_couplings * per_net


# ------------------------------------------------------------------------------- memory


def _proc_status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        pass
    return None


def rss_bytes() -> int | None:
    """This process's resident set size now (Linux; None elsewhere)."""
    return _proc_status_bytes("VmRSS")


def peak_rss_bytes() -> int:
    """This process's peak resident set size (since the last `reset_peak_rss`)."""
    peak = _proc_status_bytes("VmHWM")
    if peak is not None:
        return peak
    import resource  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, kB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


class TensorMemory:
    """TF's allocator statistics for one device (bytes of live tensors: weights, optimizer
    slots, activations), or None where the allocator keeps none (the CPU's, unless the
    process runs with TF_CPU_ALLOCATOR_USE_BFC=true)."""

    def __init__(self, device: str = "CPU:0"):
        self.device = device

    def _info(self):
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
        try:
            return tf.config.experimental.get_memory_info(self.device)
        except (ValueError, RuntimeError):
            return None

    def current(self) -> int | None:
        info = self._info()
        return None if info is None else int(info["current"])

    def peak(self) -> int | None:
        info = self._info()
        return None if info is None else int(info["peak"])

    def reset(self) -> None:
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
        try:
            tf.config.experimental.reset_memory_stats(self.device)
        except (ValueError, RuntimeError):
            pass


def reset_peak_rss() -> bool:
    """Resets the peak RSS to the current RSS (Linux >= 4.0); False if not possible here."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


# ------------------------------------------------- speed.py's protocol (any framework)


def add_speed_protocol_flags(parser: argparse.ArgumentParser, *,
                             quick: tuple[int, int] | None = None) -> None:
    """The timing flags of speed.py and of its PyTorch worker (torch_glow.py).

    --warmup 2 and --repeats 10 by default. With `quick` = (warmup, repeats) of
    a --quick run, both default to None and the caller picks 2/10 or `quick`.
    """
    def default(value: int, quick_value: int | None) -> str:
        return f"default {value}" + ("" if quick is None else f"; --quick {quick_value}")

    flags = (("--warmup", int, 2, "untimed calls after the first, per metric "
                                  f"({default(2, quick and quick[0])})"),
             ("--repeats", int, 10, f"timed calls per metric ({default(10, quick and quick[1])})"),
             ("--phase_seconds", float, 60.0,
              "cap on the warm-up + timed calls of one metric; fewer calls are timed when it "
              "is reached (default 60)"),
             ("--seed", int, 0, "seed of the data, the weights and the draws (default 0)"))
    for name, kind, value, text in flags:
        if quick is not None and name in ("--warmup", "--repeats"):
            value = None
        parser.add_argument(name, type=kind, default=value, help=text)


def timed_calls(fn: Callable[[], Any], warmup: int, repeats: int,
                cap_s: float) -> tuple[float, list[float]]:
    """(seconds of the first call, [seconds of each timed call]); fn must block until done.

    Stops early (after at least one timed call) once the warm-up and timed calls
    together pass `cap_s` seconds, so that a pathological case (e.g. an XLA
    recompilation on every call) costs a minute, not an hour.
    """
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    begin = time.perf_counter()
    for _ in range(warmup):
        fn()
        if time.perf_counter() - begin > cap_s:
            break
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        if time.perf_counter() - begin > cap_s:
            break
    return first, times


def looks_recompiled(first_s: float, times: Sequence[float]) -> bool:
    """A steady call costing over half the first (tracing) call: likely recompiling each call."""
    return bool(times) and sorted(times)[len(times) // 2] > max(0.5 * first_s, 0.5)


def measure_speed(train: Callable[[], float], log_prob: Callable[[], Any],
                  draw: Callable[[int, float], Any], *, batch: int, warmup: int, repeats: int,
                  cap_s: float, phases: str = "all", tensors: Any = None,
                  traced: bool = True) -> dict[str, Any]:
    """speed.py's measurements of a built, initialised model; the same for every framework.

    Args:
      train: one training step on the fixed batch; returns the loss as a float
        (so it has finished).
      log_prob: log p of the batch, finished when it returns.
      draw: `draw(index, temperature)`, one batch of samples as an array
        [batch, ...] (finished), `index` seeding the draw where the framework
        takes seeds.
      phases: "all", or "train" (first step and training only).
      tensors: a `TensorMemory` (TensorFlow's allocator statistics), or None
        where there are none (PyTorch on the CPU).
      traced: whether the first call traces (TensorFlow); if so, a steady call
        costing over half the first is flagged as a likely recompilation
        (`looks_recompiled`). An eager framework's first call is an ordinary
        call, so nothing is flagged.

    Returns the worker's fields: `first_step_s` (wall) and `first_step_cpu_s`
    (this process, all threads), `train_ms` (the timed steps after `warmup - 1`
    more untimed ones: the first step is a warm-up too), peak RSS of the first
    step and of the timed steps (reset just before the first step), and with
    phases "all" `log_prob_ms`, `sample_ms` (temperature 1) and the count of
    samples with a non-finite value among 4 batches at T=1 and 4 at T=0.7.
    """
    import numpy as np  # pylint: disable=import-outside-toplevel
    no_tensors = tensors is None

    def suspect(first_s: float, times: Sequence[float]) -> bool:
        return traced and looks_recompiled(first_s, times)

    def tensor(what: str) -> int | None:
        return None if no_tensors else getattr(tensors, what)()

    out: dict[str, Any] = {"rss_before_train": rss_bytes(), "peak_reset": reset_peak_rss(),
                           "tensor_before_train": tensor("current")}
    if not no_tensors:
        tensors.reset()
    losses = []
    start, cpu_start = time.perf_counter(), time.process_time()
    losses.append(train())
    out["first_step_s"] = time.perf_counter() - start
    # CPU seconds (all threads): the work, robust to other jobs on a shared machine.
    out["first_step_cpu_s"] = time.process_time() - cpu_start
    out["peak_first_step_rss"] = peak_rss_bytes()
    out["rss_after_first_step"] = rss_bytes()
    out["tensor_peak_first_step"] = tensor("peak")
    reset_peak_rss()
    if not no_tensors:
        tensors.reset()
    _, times = timed_calls(lambda: losses.append(train()), warmup - 1, repeats, cap_s)
    out["peak_steady_rss"] = peak_rss_bytes()
    out["peak_train_rss"] = max(out["peak_first_step_rss"], out["peak_steady_rss"])
    out["train_ms"] = [1e3 * t for t in times]
    suspects = ["train step"] if suspect(out["first_step_s"], times) else []
    out["tensor_peak_steady"] = tensor("peak")
    # What lives between steps (weights, optimizer slots): the rest of the peak is what a
    # step adds (activations, gradients), the part recomputation can save.
    out["tensor_between_steps"] = tensor("current")
    if not no_tensors:
        out["tensor_step_added"] = out["tensor_peak_steady"] - out["tensor_between_steps"]
    out["train_finite"] = bool(np.all(np.isfinite(losses)))
    out["final_loss"] = losses[-1]
    if phases == "all":
        first, times = timed_calls(log_prob, warmup, repeats, cap_s)
        out["log_prob_first_s"], out["log_prob_ms"] = first, [1e3 * t for t in times]
        suspects += ["log_prob"] if suspect(first, times) else []
        counter = iter(range(10**6))
        first, times = timed_calls(lambda: draw(next(counter), 1.0), warmup, repeats, cap_s)
        out["sample_first_s"], out["sample_ms"] = first, [1e3 * t for t in times]
        suspects += ["sample"] if suspect(first, times) else []
        bad, total = 0, 0
        for temperature in (1.0, 0.7):
            for k in range(4):
                samples = np.asarray(draw(10**6 + k, temperature))
                bad += int(np.sum(~np.all(np.isfinite(samples.reshape(batch, -1)), axis=1)))
                total += batch
        out["nonfinite"], out["samples"] = bad, total
    out["peak_rss"] = peak_rss_bytes()
    if suspects:
        out["warning"] = (f"{', '.join(suspects)}: a steady call costs over half the first "
                          "call; recompiling (or retracing) on every call?")
    return out


# ---------------------------------------------------------------- Keras (tfflow) training


def keras_budget_callbacks(clock: Clock, seconds: float, monitor: str = "val_loss",
                           initial_val: float | None = None):
    """Callbacks for `fit`: stop after the step past the budget, keep the best validation weights.

    Returns (callbacks, stats): `stats` is filled in during `fit` with `steps`,
    `epochs`, `best_epoch`, `best_val`, `first_step_s` (wall), `train_s` (wall), `cpu_s`,
    `diverged`. With `initial_val` (the validation loss before training), the
    weights the model starts with are the best so far (epoch 0).
    """
    import keras  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel

    stats: dict[str, Any] = {"steps": 0, "epochs": 0, "best_epoch": None,
                             "best_val": math.inf, "first_step_s": None, "diverged": False}

    class Budget(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            stats["steps"] += 1
            if stats["first_step_s"] is None:
                stats["first_step_s"] = time.perf_counter() - clock.wall_start
            loss = (logs or {}).get("loss")
            if loss is not None and not np.isfinite(float(loss)):
                stats["diverged"] = True
                self.model.stop_training = True
            if clock.elapsed() >= seconds:
                self.model.stop_training = True

    class KeepBest(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.best_weights = None

        def on_train_begin(self, logs=None):
            if initial_val is not None and np.isfinite(float(initial_val)):
                stats["best_val"], stats["best_epoch"] = float(initial_val), 0
                self.best_weights = self.model.get_weights()

        def on_epoch_end(self, epoch, logs=None):
            stats["epochs"] = epoch + 1
            value = (logs or {}).get(monitor)
            if value is not None and np.isfinite(float(value)) and float(value) < stats["best_val"]:
                stats["best_val"] = float(value)
                stats["best_epoch"] = epoch + 1
                self.best_weights = self.model.get_weights()

        def on_train_end(self, logs=None):
            clock.finish(stats)
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)

    return [Budget(), KeepBest()], stats


# ------------------------------------------------------------- custom (TFP peer) training


def train_custom(train_step: Callable, val_loss: Callable[[], float], variables: Sequence,
                 train_dataset, clock: Clock, seconds: float) -> dict[str, Any]:
    """Trains with `train_step(x) -> loss` for `seconds` on `clock`, the same protocol as `fit`.

    After every epoch (and the final partial one) `val_loss()` (per-dimension
    NLL, the selection criterion) is computed; the values of `variables`
    (trainable and not) at the best one are restored at the end.
    """
    import numpy as np  # pylint: disable=import-outside-toplevel

    stats: dict[str, Any] = {"steps": 0, "epochs": 0, "best_epoch": None,
                             "best_val": math.inf, "first_step_s": None, "diverged": False}
    best = None
    stop = False
    while not stop:
        for x in train_dataset:
            loss = float(train_step(x))
            stats["steps"] += 1
            if stats["first_step_s"] is None:
                stats["first_step_s"] = time.perf_counter() - clock.wall_start
            if not np.isfinite(loss):
                stats["diverged"] = True
                stop = True
                break
            if clock.elapsed() >= seconds:
                stop = True
                break
        stats["epochs"] += 1
        value = float(val_loss())
        if np.isfinite(value) and value < stats["best_val"]:
            stats["best_val"] = value
            stats["best_epoch"] = stats["epochs"]
            best = [v.numpy() for v in variables]
    clock.finish(stats)
    if best is not None:
        for variable, value in zip(variables, best):
            variable.assign(value)
    return stats


def tf_keras_warmup_adam(learning_rate: float = 1e-3, warmup_steps: int = 200):
    """tf_keras Adam with the same linear warm-up as `tfflow.FlowModel.compile()`'s default.

    tf_keras (not Keras 3) because the TFP peers' variables are plain `tf.Variable`s
    and their conditioners are tf_keras layers.
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tf_keras  # pylint: disable=import-outside-toplevel

    class LinearWarmup(tf_keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            step = tf.cast(step, tf.float32) + 1.0
            return learning_rate * tf.minimum(1.0, step / float(max(warmup_steps, 1)))

        def get_config(self):
            return {}

    return tf_keras.optimizers.Adam(LinearWarmup())


# ------------------------------------------------------------------------------ reporting


def interleaved_runs(models: Sequence[str], repeats: int, first_seed: int):
    """Yields `(seed, model)` for every repeat, the models' order alternating per repeat.

    Seeds run first_seed, first_seed + 1, ...; alternating the order spreads
    the machine's drifting load over the models alike.
    """
    for repeat in range(repeats):
        order = list(models) if repeat % 2 == 0 else list(models)[::-1]
        for name in order:
            yield first_seed + repeat, name


def median(values: Sequence[float]) -> float:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(values) if values else math.nan


def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A Markdown table (pastes straight into benchmarks/README.md)."""
    cells = [[str(c) for c in header]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
    print(line(cells[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        print(line(row))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,d}"
    return str(value)


# ------------------------------------------------------------------ vector and table models


def fit_vector_model(model, arrays: dict, clock: Clock, seconds: float, *, batch_size: int,
                     learning_rate: float = 1e-3, warmup_steps: int = 200,
                     seed: int = 0) -> dict[str, Any]:
    """Fits a tfflow vector model on `arrays` ("train"/"validation"/"test", [rows, D]).

    The model's data-dependent start (the Gaussian fit of the training rows,
    for MAF/IAF/NSF) counts as epoch 0: it is the best-so-far before training,
    so early stopping can only return a model at least as good on validation.
    Returns the stats of `keras_budget_callbacks` plus `test_nll` (nats per row).
    """
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    train = tf.data.Dataset.from_tensor_slices(arrays["train"].astype(np.float32))
    train = train.shuffle(len(arrays["train"]), seed=seed, reshuffle_each_iteration=True)
    train = train.batch(batch_size, drop_remainder=len(arrays["train"]) > batch_size)
    validation = tf.data.Dataset.from_tensor_slices(
        arrays["validation"].astype(np.float32)).batch(4096)
    model.initialize(arrays["train"][:model.initialization_examples].astype(np.float32))
    model.compile(learning_rate=learning_rate, warmup_steps=warmup_steps)
    initial = model.evaluate(validation, verbose=0, return_dict=True)["loss"]
    callbacks, stats = keras_budget_callbacks(clock, seconds, initial_val=initial)
    model.fit(train, validation_data=validation, epochs=1_000_000, callbacks=callbacks,
              verbose=0)
    test = [tf.constant(arrays["test"][i:i + 4096].astype(np.float32))
            for i in range(0, len(arrays["test"]), 4096)]
    stats["test_nll"] = mean_nll(model.log_prob, test)
    return stats


def torch_peer(python: str, model: str, arrays: dict, seconds: float, *, seed: int,
               clock: str, workdir: str) -> dict[str, Any]:
    """Runs benchmarks/torch_peers.py in the PyTorch virtualenv `python`; its JSON result.

    The peers' libraries live only in that virtualenv (benchmarks/peers_requirements.md).
    """
    import json  # pylint: disable=import-outside-toplevel
    import subprocess  # pylint: disable=import-outside-toplevel

    import numpy as np  # pylint: disable=import-outside-toplevel

    data = os.path.join(workdir, "arrays.npz")
    np.savez(data, **{k: arrays[k] for k in ("train", "validation", "test")})
    out = os.path.join(workdir, f"{model}_{seed}.json")
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_peers.py")
    subprocess.run([python, script, f"--data={data}", f"--model={model}",
                    f"--seconds={seconds}", f"--seed={seed}", "--threads=2", f"--clock={clock}",
                    "--patience=0",  # like the TensorFlow models: the whole budget, best kept
                    f"--out={out}"], check=True, stdout=subprocess.DEVNULL)
    with open(out, encoding="utf-8") as handle:
        result = json.load(handle)
    return {"test_nll": result["test_nll"], "steps": result["steps"],
            "epochs": result["epochs"], "best_epoch": result["best_epoch"],
            "train_s": result.get("train_seconds", math.nan), "cpu_s": math.nan,
            "diverged": False}


def fit_tfp_flow(dist, trainable: Sequence, dims: int, train_dataset, val_batches: Sequence,
                 test_batches: Sequence, clock: Clock, seconds: float, *,
                 learning_rate: float = 1e-3, warmup_steps: int = 200) -> dict[str, Any]:
    """Trains a TFP distribution's `trainable` variables by NLL under `train_custom`'s protocol.

    tf_keras Adam with tfflow's warm-up; the best validation weights are kept;
    returns the stats with `test_nll` (nats per example on `test_batches`).
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    optimizer = tf_keras_warmup_adam(learning_rate, warmup_steps)

    @tf.function
    def log_prob(x):
        return dist.log_prob(x)

    @tf.function
    def train_step(x):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(dist.log_prob(x)) / dims
        optimizer.apply_gradients(zip(tape.gradient(loss, trainable), trainable))
        return loss

    stats = train_custom(train_step, lambda: mean_nll(log_prob, val_batches) / dims, trainable,
                         train_dataset, clock, seconds)
    stats["test_nll"] = mean_nll(log_prob, test_batches)
    return stats
