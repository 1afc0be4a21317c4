"""Speed and memory: tfflow vs tfp.bijectors.Glow / tfp.bijectors.RealNVP (issue 6), and vs
normflows' Glow in PyTorch (issue 13).

    python benchmarks/speed.py                       # everything: 31 workers, ~30-40 min on
                                                     # 2 cores shared with other jobs
    python benchmarks/speed.py --quick --xla off     # smoke run (~5 min): fewer steps, small sweeps
    python benchmarks/speed.py --sections images32,depth --xla off
    python benchmarks/speed.py --device gpu          # the same on a GPU

Every measurement runs in a fresh subprocess (this script with `--worker`), one
per model, configuration and mode, because trace caches and the peak-RSS
high-water mark are per process. A worker builds the model (same architecture
size as the peer: the parameter counts are printed and must agree within 10%),
runs the data-dependent ActNorm initialisation, then times:

* first step: the first training step, trace and compilation included (s);
* train step: median wall time of `--repeats` training steps after `--warmup`
  (at most `--phase_seconds` per metric; a steady call costing over half the
  first call is flagged as a likely recompilation on every call)
  (tfflow: `model.train_on_batch` after `model.compile(jit_compile=...)`, the
  Keras path a user runs; peers: a `tf.function` step with tf_keras Adam; both
  with Adam and the same 200-step linear warm-up);
* log_prob: median over a batch (tfflow `model.log_prob`; peers `dist.log_prob`
  in a `tf.function`); with XLA both are wrapped in `tf.function(jit_compile=True)`;
* sample: median time to draw a batch at temperature 1;
* peak RSS (GB) of the worker from just before the first training step to the
  end of the timed steps (Linux VmHWM, reset at the start): the libraries, the
  weights, the traced graph and the step's activations; "growth" is that peak
  minus the RSS just before the first step;
* non-finite samples: examples with any NaN/inf among 4 batches at T=1 and 4
  at T=0.7, drawn after the timed steps.

"graph" is a plain `tf.function`, "XLA" the same with `jit_compile=True`. Ratios
are tfflow / peer (below 1 is faster); issue 6's targets compare tfflow's
faster mode with the faster of the peer's two modes, issue 13's tfflow's
default mode on the device (what `FlowModel.compile()` picks without
`jit_compile`) with tfb.Glow's faster mode and with normflows; all are printed
with pass/MISS and the margin at the end.

normflows' Glow (PyTorch, eager, `--torch_threads` 2) is a third Glow column
in the images32, digits, deep and depth sections: benchmarks/torch_glow.py,
run by the benchmark-only virtualenv's python (`--peer_python`,
benchmarks/peers_requirements.md; PyTorch is no tfflow dependency) on the
same images (written to an .npz for it) and under the same protocol
(`common.measure_speed`). Without that virtualenv, or with `--device gpu`,
it is skipped with a one-line note.

Data: digits-derived images (the embedded 8x8 digits, their integer levels
repeated up to 32x32 and across channels for 32x32x3, dequantised with fresh
uniform noise per value, /17); vectors: 2-D eight_gaussians points and 64-D
flattened dequantised digits. tfb.Glow is fed x - 0.5 (tfflow's Glow centres
inside the model).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  pylint: disable=wrong-import-position

GB = 1e9
PEERS = {"glow": "tfb.Glow", "realnvp": "tfb.RealNVP"}
# normflows' Glow in PyTorch (issue 13): run by torch_glow.py in the benchmark-only
# virtualenv (--peer_python, benchmarks/peers_requirements.md), on the CPU, eagerly.
TORCH_PEER = "normflows"
TORCH_PEER_NAME = "normflows Glow (PyTorch eager)"
TORCH_GLOW = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_glow.py")
SECTIONS = ("images32", "digits", "deep", "depth", "paper_depth", "memory", "mixed", "vectors")
# Issue 13's absolute first-step targets (s) and the growth allowed from the first to the
# last depth of the sweep: the default digits Glow, and the paper's depth (L=3, K=32).
FIRST_STEP_TARGETS_S = {"digits": 2.0, "paper_depth": 4.0}
DEPTH_GROWTH_TARGET = 1.3
# Names tfflow's memory-saving (recompute-in-backward) switch might have; the first one
# found as a keyword of tfflow.models.Glow or FlowModel.compile is used.
MEMORY_SAVING_NAMES = ("memory_saving", "recompute", "recompute_activations",
                       "recompute_gradients", "save_memory", "invertible_backprop",
                       "memory_efficient", "reversible_gradients", "checkpointing")

# The issue's peer measurements (tfb.Glow, this machine class, 2 cores), for reference.
ISSUE_PEER = {"images32": "train 103 / 93 ms, log_prob 37 / 17 ms, sample 35 / 60 ms, "
                          "first step 7.8 / 11.3 s, peak RSS 1.0 / 1.6 GB",
              "digits": "train 46 / 27 ms, log_prob 15 / 5.9 ms, sample 16 / 8.9 ms, "
                        "first step 16 / 23 s"}
TARGETS = {"train_ms": 1.5, "log_prob_ms": 1.5, "sample_ms": 1.3, "first_step_s": 2.0}
# Memory-saving mode, K=32 / K=4 (issue 6, issue 13): tensor peak, peak RSS.
MEMORY_TARGETS = {"tensor_peak_steady": {"issue 6": 1.5, "issue 13": 1.2},
                  "peak_train_rss": {"issue 6": 1.5, "issue 13": 1.3}}
# Issue 13: tfflow in its default mode >= 1.5x faster than tfb.Glow's faster mode (train
# step, log_prob, sample), and faster than normflows' Glow (PyTorch eager, 2 threads).
ISSUE13_PEER_SPEEDUP = 1.5
VECTOR_DIMS = (2, 64)
QUICK_PROTOCOL = (1, 3)  # --quick: warm-up calls and timed calls per metric


# =============================================================================== worker


def _vector_data(dims, n, seed):
    import numpy as np  # pylint: disable=import-outside-toplevel
    from tfflow import data as tfdata  # pylint: disable=import-outside-toplevel
    if dims == 2:
        points = tfdata.load_array("eight_gaussians", "train")
        return points[np.arange(n) % len(points)].astype(np.float32)
    if dims == 64:
        return common.digits_images((8, 8, 1), n, seed).reshape(n, 64)
    return np.random.default_rng(seed).normal(size=(n, dims)).astype(np.float32)


def memory_saving_option(override: str | None = None):
    """Where tfflow's memory-saving switch lives: ("model"|"compile", name, value) or None.

    `override` is "model:NAME[=VALUE]" or "compile:NAME[=VALUE]" (VALUE as JSON, default true).
    """
    import inspect  # pylint: disable=import-outside-toplevel
    if override:
        where, _, rest = override.partition(":")
        name, _, value = rest.partition("=")
        if where not in ("model", "compile") or not name:
            raise SystemExit(f"--memory_saving_arg: expected model:NAME[=VALUE] or "
                             f"compile:NAME[=VALUE], got {override!r}")
        return where, name, json.loads(value) if value else True
    import tfflow  # pylint: disable=import-outside-toplevel
    places = {"model": inspect.signature(tfflow.models.Glow).parameters,
              "compile": inspect.signature(tfflow.models.FlowModel.compile).parameters}
    for name in MEMORY_SAVING_NAMES:
        for where, parameters in places.items():
            if name in parameters:
                return where, name, True
    return None


def _build_tfflow(spec, keras, tfflow):
    """The tfflow model of `spec`, with its precision and memory-saving options applied."""
    info = {}
    model_kwargs, compile_kwargs = {}, {}
    if spec["memory_saving"]:
        option = memory_saving_option(spec.get("memory_saving_arg"))
        if option is None:
            raise NotAvailable("tfflow has no memory-saving switch (looked for keywords "
                               f"{', '.join(MEMORY_SAVING_NAMES)} of tfflow.models.Glow and "
                               "FlowModel.compile)")
        where, name, value = option
        (model_kwargs if where == "model" else compile_kwargs)[name] = value
        info["memory_saving"] = f"{where}({name}={value!r})"
    if spec["precision"] != "float32":
        keras.mixed_precision.set_global_policy(spec["precision"])
    keras.utils.set_random_seed(spec["seed"])

    def build(**extra):
        if spec["model"] == "glow":
            return tfflow.models.Glow(tuple(spec["shape"]), scales=spec["levels"],
                                      steps_per_scale=spec["steps"],
                                      hidden_channels=spec["hidden"], num_levels=17,
                                      seed=spec["seed"], **model_kwargs, **extra)
        return tfflow.models.RealNVP(tuple(spec["shape"]), num_couplings=spec["couplings"],
                                     hidden_units=tuple(spec["hidden_units"]), **model_kwargs,
                                     **extra)

    model = build()
    if spec["precision"] != "float32":
        want = spec["precision"].split("_")[-1]  # bfloat16 / float16
        if not _computes_in(model, want):
            # The global policy did not reach the layers (e.g. a float32 `dtype`
            # default): ask the factory for the policy explicitly.
            try:
                model = build(dtype=spec["precision"])
            except Exception as error:  # pylint: disable=broad-except
                raise NotAvailable(f"{spec['precision']}: the global policy is not applied "
                                   f"and dtype={spec['precision']!r} fails: "
                                   f"{type(error).__name__}: {str(error)[:200]}") from error
            if not _computes_in(model, want):
                raise NotAvailable(f"{spec['precision']}: no tfflow layer computes in {want}")
        info["precision"] = f"{spec['precision']} ({_count_layers(model, want)} layers in {want})"
    model.compile(jit_compile=spec["xla"], **compile_kwargs)
    return model, info


def _sublayers(model):
    return model._flatten_layers(include_self=False, recursive=True)  # pylint: disable=protected-access


def _computes_in(model, dtype) -> bool:
    return _count_layers(model, dtype) > 0


def _count_layers(model, dtype) -> int:
    return sum(1 for layer in _sublayers(model) if getattr(layer, "compute_dtype", None) == dtype)


class NotAvailable(Exception):
    """The option asked for does not exist in this tfflow (reported as n/a)."""


def worker(spec: dict) -> dict:
    """Measures one model in one mode; returns a JSON-able dict (see the module docstring)."""
    common.setup_device(spec["device"])
    import keras  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    import tfflow  # pylint: disable=import-outside-toplevel

    out: dict = {"rss_imported": common.rss_bytes()}
    shape, batch, seed = tuple(spec["shape"]), spec["batch"], spec["seed"]
    image = spec["model"] == "glow"
    dims = math.prod(shape)
    make_data = common.digits_images if image else _vector_data
    x_np = make_data(shape if image else dims, batch, seed)
    x_init = tf.constant(make_data(shape if image else dims, max(256, batch), seed + 1))
    x = tf.constant(x_np)
    offset = 0.5 if image else 0.0  # tfb.Glow is fed centred data; tfflow's Glow centres itself

    start = time.perf_counter()
    if spec["library"] == "tfflow":
        try:
            model, info = _build_tfflow(spec, keras, tfflow)
        except NotAvailable as reason:
            return {"na": str(reason)}
        out.update(info)
        out["params"] = common.count_params(model.trainable_variables)
        out["build_s"] = time.perf_counter() - start
        start = time.perf_counter()
        model.initialize(x_init)
        out["init_s"] = time.perf_counter() - start

        def train():
            return float(model.train_on_batch(x, return_dict=True)["loss"])

        log_prob = tf.function(model.log_prob, jit_compile=True) if spec["xla"] \
            else model.log_prob

        def draw(seed_pair, temperature):
            return model.sample(batch, temperature=temperature, seed=seed_pair)

        if spec["xla"]:
            draw = tf.function(draw, jit_compile=True)

    else:
        if image:
            glow, make_distribution = common.tfp_glow(shape, levels=spec["levels"],
                                                      steps_per_level=spec["steps"],
                                                      hidden=spec["hidden"], seed=seed)
            dist = make_distribution()
            trainable = list(glow.trainable_variables)
        else:
            make_distribution, trainable = common.tfp_realnvp_stack(
                dims, num_couplings=spec["couplings"], hidden_units=spec["hidden_units"],
                seed=seed)
            dist = make_distribution()
        out["params"] = common.count_params(trainable)
        out["build_s"] = time.perf_counter() - start
        start = time.perf_counter()
        dist.log_prob(x_init - offset)  # tfb.Glow's ActNorms initialise on their first call
        out["init_s"] = time.perf_counter() - start
        optimizer = common.tf_keras_warmup_adam()

        # No input_signature: tfb.Glow fails to trace with an unknown batch size.
        @tf.function(jit_compile=spec["xla"])
        def train_step(data):
            with tf.GradientTape() as tape:
                loss = -tf.reduce_mean(dist.log_prob(data - offset)) / dims
            gradients = tape.gradient(loss, trainable)
            optimizer.apply_gradients(zip(gradients, trainable))
            return loss

        def train():
            return float(train_step(x))

        log_prob = tf.function(lambda data: dist.log_prob(data - offset), jit_compile=spec["xla"])

        @tf.function(jit_compile=spec["xla"])
        def draw(seed_pair, temperature):
            return make_distribution(temperature).sample(batch, seed=seed_pair) + offset

    tensors = common.TensorMemory("GPU:0" if spec["device"] == "gpu" else "CPU:0")
    out.update(common.measure_speed(
        train, lambda: log_prob(x).numpy(),
        lambda index, temperature: draw(tf.constant([index, seed], tf.int32),
                                        temperature).numpy(),
        batch=batch, warmup=spec["warmup"], repeats=spec["repeats"], cap_s=spec["cap_s"],
        phases=spec["phases"], tensors=tensors))
    return out


# ========================================================================= orchestration


def job(library, model, *, xla=False, precision="float32", memory_saving=False,
        phases="all", **config):
    """A worker spec (without the run-wide settings added by `Runner`)."""
    return {"library": library, "model": model, "xla": xla, "precision": precision,
            "memory_saving": memory_saving, "phases": phases, **config}


def glow_config(shape, levels, steps, batch, hidden=64):
    return {"shape": list(shape), "levels": levels, "steps": steps, "hidden": hidden,
            "batch": batch}


def label(spec) -> str:
    if spec["library"] == TORCH_PEER:
        return TORCH_PEER_NAME
    if spec["library"] == "tfflow":
        name = "tfflow " + ("Glow" if spec["model"] == "glow" else "RealNVP")
    else:
        name = PEERS[spec["model"]]
    extras = []
    if spec["precision"] != "float32":
        extras.append(spec["precision"])
    if spec["memory_saving"]:
        extras.append("memory-saving")
    extras.append("XLA" if spec["xla"] else "graph")
    return f"{name} ({', '.join(extras)})"


def describe(spec) -> str:
    if spec["model"] == "glow":
        return (f"{'x'.join(map(str, spec['shape']))} b{spec['batch']} L={spec['levels']} "
                f"K={spec['steps']} h{spec['hidden']}")
    return (f"{spec['shape'][0]}-D b{spec['batch']} {spec['couplings']} couplings "
            f"MLP {'-'.join(map(str, spec['hidden_units']))}")


class Runner:
    """Runs worker subprocesses, one per distinct spec, and keeps their results."""

    def __init__(self, args):
        self.args = args
        self.results: dict[str, list[dict]] = {}
        self.workdir = None  # the PyTorch worker's image files, made when first needed

    def image_file(self, spec) -> str:
        """An .npz of the images every worker of `spec` trains on (torch_glow.py's --data).

        The TensorFlow workers make the same arrays themselves (`common.digits_images`: the
        batch with `seed`, the ActNorm initialisation batch with `seed + 1`).
        """
        import numpy as np  # pylint: disable=import-outside-toplevel
        if self.workdir is None:
            self.workdir = tempfile.mkdtemp(prefix="tfflow_speed_")
        shape, batch, seed = tuple(spec["shape"]), spec["batch"], spec["seed"]
        path = os.path.join(self.workdir, f"{'x'.join(map(str, shape))}_b{batch}_s{seed}.npz")
        if not os.path.exists(path):
            np.savez(path, x=common.digits_images(shape, batch, seed),
                     x_init=common.digits_images(shape, max(256, batch), seed + 1))
        return path

    def torch_command(self, spec, *extra) -> list[str]:
        """The command line of torch_glow.py for `spec` (see its docstring)."""
        return [self.args.peer_python, TORCH_GLOW, f"--data={self.image_file(spec)}",
                f"--levels={spec['levels']}", f"--steps={spec['steps']}",
                f"--hidden={spec['hidden']}", f"--threads={self.args.torch_threads}",
                f"--phases={spec['phases']}", f"--warmup={spec['warmup']}",
                f"--repeats={spec['repeats']}", f"--phase_seconds={spec['cap_s']}",
                f"--seed={spec['seed']}", *extra]

    def torch_params(self, spec) -> int:
        """Trainable parameters of normflows' Glow for `spec` (built in the PyTorch venv)."""
        done = subprocess.run(self.torch_command(self.full(spec), "--params_only"),
                              capture_output=True, text=True, check=False)
        for line in done.stdout.splitlines():
            if line.startswith("PARAMS "):
                return int(line.split()[1])
        tail = [l for l in done.stderr.strip().splitlines() if l.strip()][-3:]
        raise SystemExit(f"{TORCH_GLOW} --params_only failed (exit {done.returncode}): "
                         + " | ".join(tail))

    def full(self, spec) -> dict:
        spec = dict(spec, device=self.args.device, seed=self.args.seed,
                    warmup=self.args.warmup, repeats=self.args.repeats,
                    cap_s=self.args.phase_seconds,
                    memory_saving_arg=self.args.memory_saving_arg)
        if spec["model"] == "realnvp" and spec["library"] == "tfp":
            spec["hidden_units"] = spec.pop("peer_hidden_units")
        else:
            spec.pop("peer_hidden_units", None)
        return spec

    @staticmethod
    def key(spec) -> str:
        return json.dumps({k: v for k, v in spec.items() if k != "phases"}, sort_keys=True)

    def run_all(self, specs, rounds: int):
        """Runs every distinct spec `rounds` times (a spec needing "all" phases covers "train")."""
        plan: dict[str, dict] = {}
        for spec in specs:
            spec = self.full(spec)
            key = self.key(spec)
            if key not in plan or spec["phases"] == "all":
                plan[key] = spec
        total = len(plan) * rounds
        count = 0
        for round_index in range(rounds):
            keys = list(plan) if round_index % 2 == 0 else list(plan)[::-1]
            for key in keys:
                count += 1
                spec = plan[key]
                start = time.perf_counter()
                result = self.run_one(spec)
                self.results.setdefault(key, []).append(result)
                print(f"[{count}/{total}] {describe(spec)} {label(spec)}: "
                      f"{summary_line(result)} ({time.perf_counter() - start:.0f} s)",
                      flush=True)

    def run_one(self, spec) -> dict:
        command = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
        if spec["library"] == TORCH_PEER:
            command = self.torch_command(spec)
        else:
            if self.args.cpu_allocator == "bfc":
                # TF's BFC allocator on the CPU too, so that it reports peak tensor memory.
                env["TF_CPU_ALLOCATOR_USE_BFC"] = "true"
            if self.args.tf_intra_op_threads is not None:
                # Read by TensorFlow when its runtime starts, as tf.config.threading sets it.
                env["TF_NUM_INTRAOP_THREADS"] = str(self.args.tf_intra_op_threads)
        try:
            done = subprocess.run(command, capture_output=True, text=True, env=env,
                                  timeout=self.args.job_timeout, check=False)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {self.args.job_timeout} s"}
        result = common.worker_result(done.stdout)
        if result is not None:
            return result
        tail = [l for l in done.stderr.strip().splitlines() if l.strip()][-3:]
        return {"error": f"exit {done.returncode}: " + " | ".join(tail)[-400:]}

    def get(self, spec) -> dict | None:
        """The median over rounds of every number measured for `spec` (None if not run)."""
        runs = self.results.get(self.key(self.full(spec)))
        if not runs:
            return None
        good = [r for r in runs if "error" not in r and "na" not in r]
        if not good:
            return runs[0]
        merged = dict(good[0])
        for field, value in good[0].items():
            if isinstance(value, list):
                merged[field] = common.median([common.median(r[field]) for r in good])
            elif isinstance(value, (int, float)) and not isinstance(value, bool) and \
                    field not in ("params", "nonfinite", "samples"):
                merged[field] = common.median([r[field] for r in good
                                               if r.get(field) is not None])
        merged["rounds"] = len(good)
        if "nonfinite" in merged:
            merged["nonfinite"] = sum(r["nonfinite"] for r in good)
            merged["samples"] = sum(r["samples"] for r in good)
        return merged


def summary_line(result) -> str:
    if "na" in result:
        return "n/a: " + result["na"]
    if "error" in result:
        return "ERROR: " + result["error"]
    cpu = result.get("first_step_cpu_s")
    parts = [f"first step {result['first_step_s']:.1f} s"
             + (f" ({cpu:.1f} s CPU)" if cpu is not None else ""),
             f"train {common.median(result['train_ms']):.1f} ms"]
    if "log_prob_ms" in result:
        parts += [f"log_prob {common.median(result['log_prob_ms']):.1f} ms",
                  f"sample {common.median(result['sample_ms']):.1f} ms",
                  f"non-finite {result['nonfinite']}/{result['samples']}"]
    parts.append(f"peak RSS {result['peak_train_rss'] / GB:.2f} GB")
    if not result.get("train_finite", True):
        parts.append("NON-FINITE LOSS")
    if "warning" in result:
        parts.append("WARNING " + result["warning"])
    return ", ".join(parts)


# ============================================================================== planning


def plan(args) -> dict:
    """The specs of every selected section, keyed by section."""
    quick = args.quick
    modes = xla_modes(args)
    sections = {}
    images32 = glow_config((32, 32, 3), 2, 4, 32)
    digits = glow_config((8, 8, 1), 2, 8, 64)
    deep = glow_config((32, 32, 3), 3, 4 if quick else 16, 32)

    libraries = ("tfflow",) if args.tfflow_only else ("tfflow", "tfp")

    def pair(config, phases="all", mode_list=None):
        specs = [job(lib, "glow", xla=xla, phases=phases, **config)
                 for xla in (modes if mode_list is None else mode_list)
                 for lib in libraries]
        if args.torch_peer:  # PyTorch eager: one mode
            specs.append(job(TORCH_PEER, "glow", phases=phases, **config))
        return specs

    sections["images32"] = {"config": images32, "specs": pair(images32)}
    sections["digits"] = {"config": digits, "specs": pair(digits)}
    sections["deep"] = {"config": deep, "specs": pair(deep, "train")}
    depths = tuple(args.depths) if args.depths else ((4, 8) if quick else (4, 8, 16))
    depth_modes = modes if args.depth_xla else [False]
    sections["depth"] = {
        "depths": depths, "modes": depth_modes,
        "specs": [s for k in depths
                  for s in pair(glow_config((32, 32, 3), 2, k, 32), "train", depth_modes)]}
    # The paper's depth (Glow: L=3, K=32) on 32x32x3: tfflow only (tfb.Glow takes minutes
    # to trace it), first step and training.
    paper = glow_config((32, 32, 3), 3, 32, 32)
    sections["paper_depth"] = {"config": paper, "specs": [
        job("tfflow", "glow", xla=xla, phases="train", **paper) for xla in modes]}
    memory_depths = (4, 8) if quick else (4, 32)
    memory_specs = []
    for k in memory_depths:
        config = glow_config((32, 32, 3), 2, k, 32)
        memory_specs += [job("tfflow", "glow", phases="train", **config),
                         job("tfflow", "glow", memory_saving=True, phases="train", **config)]
    sections["memory"] = {"depths": memory_depths, "specs": memory_specs}
    mixed = []
    for config in (images32, digits):
        for xla in modes:
            mixed += [job("tfflow", "glow", xla=xla, **config),
                      job("tfflow", "glow", xla=xla, precision=args.mixed_policy, **config)]
    sections["mixed"] = {"specs": mixed}
    vectors = []
    for dims in VECTOR_DIMS[:1] if quick else VECTOR_DIMS:
        config = vector_config(dims)
        vectors += [job(lib, "realnvp", xla=xla, **config)
                    for xla in modes for lib in ("tfflow", "tfp")]
    sections["vectors"] = {"dims": VECTOR_DIMS[:1] if quick else VECTOR_DIMS, "specs": vectors}
    return {name: sections[name] for name in args.sections}


def torch_peer_available(args) -> bool:
    """Whether normflows' Glow runs: its virtualenv exists, on the CPU, not --tfflow_only.

    Says so in one line when it is skipped for a reason the user may not expect.
    """
    if args.tfflow_only:
        return False
    if args.device != "cpu":
        print(f"{TORCH_PEER_NAME}: not run with --device {args.device} (a CPU build of torch)")
        return False
    return bool(common.without_missing_peers([TORCH_PEER], [TORCH_PEER], args.peer_python))


def xla_modes(args) -> list:
    return {"off": [False], "on": [True], "both": [False, True]}[args.xla]


def vector_config(dims, couplings=8, hidden=(128, 128), batch=256):
    """tfflow RealNVP((dims,)) defaults; the peer's MLP width chosen to match its size.

    tfflow's conditioners see all `dims` inputs (masked) and emit 2 x dims values,
    tfb.RealNVP's see dims // 2 and emit 2 x (dims - dims // 2): the peer's hidden
    width is the one whose parameter count is closest to tfflow's.
    """
    sizes = [dims, *hidden, 2 * dims]
    ours = couplings * sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    width = min(range(8, 4 * max(hidden)), key=lambda h: abs(
        common.tfp_realnvp_stack_params(dims, couplings, [h] * len(hidden)) - ours))
    return {"shape": [dims], "couplings": couplings, "hidden_units": list(hidden),
            "peer_hidden_units": [width] * len(hidden), "batch": batch}


def check_parameters(sections, runner) -> None:
    """Builds each compared pair once (in this process) and stops if they differ by > 10%."""
    import keras  # pylint: disable=import-outside-toplevel
    import tfflow  # pylint: disable=import-outside-toplevel
    seen = set()
    with_torch = {describe(spec) for section in sections.values() for spec in section["specs"]
                  if spec["library"] == TORCH_PEER}
    print("parameters (trainable):")
    for section in sections.values():
        for spec in section["specs"]:
            if spec["library"] != "tfflow" or spec["precision"] != "float32" \
                    or spec["memory_saving"]:
                continue
            ours = runner.full(spec)
            peer = runner.full(dict(spec, library="tfp"))
            name = describe(ours)
            if name in seen:
                continue
            seen.add(name)
            model, _ = _build_tfflow(dict(ours, xla=False), keras, tfflow)
            counts = {f"tfflow {name}": common.count_params(model.trainable_variables)}
            if ours["model"] == "glow":
                glow, _ = common.tfp_glow(tuple(ours["shape"]), levels=ours["levels"],
                                          steps_per_level=ours["steps"], hidden=ours["hidden"])
                counts[f"tfb.Glow {name}"] = common.count_params(glow.trainable_variables)
                if name in with_torch:
                    counts[f"{TORCH_PEER_NAME} {name}"] = runner.torch_params(
                        dict(spec, library=TORCH_PEER, xla=False))
            else:
                counts[f"tfb.RealNVP {describe(peer)}"] = common.tfp_realnvp_stack_params(
                    ours["shape"][0], ours["couplings"], peer["hidden_units"])
            common.check_params_close(counts)


def default_mode() -> str:
    """The mode `FlowModel.compile()` picks on this device by itself: "XLA" or "graph".

    Issue 13's targets judge tfflow in the mode a user gets by default; a small
    Glow is compiled without `jit_compile` and asked what Keras resolved.
    """
    import tfflow  # pylint: disable=import-outside-toplevel
    model = tfflow.models.Glow((8, 8, 1), scales=1, steps_per_scale=1, hidden_channels=4)
    model.compile()
    return "XLA" if model.jit_compile else "graph"


# ============================================================================== reporting


def _median(result, field):
    if not result or field not in result:
        return math.nan
    value = result[field]
    if value is None:
        return math.nan
    return common.median(value) if isinstance(value, list) else float(value)


def _fmt(value, unit=""):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "GB":
        return f"{value / GB:.2f}"
    if unit == "MB":
        return f"{value / 1e6:.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _cell(result, field, unit=""):
    if result is None:
        return "not run"
    if "na" in result:
        return "n/a"
    if "error" in result:
        return "error"
    return _fmt(_median(result, field), unit)


METRIC_NAMES = {"train_ms": "train step", "log_prob_ms": "log_prob", "sample_ms": "sample",
                "first_step_s": "first step"}
METRICS = [("train_ms", "train step (ms)", ""), ("log_prob_ms", "log_prob (ms)", ""),
           ("sample_ms", "sample (ms)", ""), ("first_step_s", "first step (s)", ""),
           ("peak_train_rss", "peak RSS in training (GB)", "GB"),
           ("tensor_peak_steady", "peak tensor memory in a step (MB)", "MB")]


def best(results: dict, field: str):
    """(value, mode) of the lowest `field` among {mode: result}."""
    options = [(_median(r, field), mode) for mode, r in results.items()
               if r and "error" not in r and "na" not in r]
    options = [o for o in options if not math.isnan(o[0])]
    return min(options) if options else (math.nan, "-")


def verdict(what, ours, peer, target, unit, peer_name="peer"):
    """One target line: speed-up = peer / ours against `target`."""
    (our_value, our_mode), (peer_value, peer_mode) = ours, peer
    if math.isnan(our_value) or math.isnan(peer_value):
        return f"{what}: not measured", None
    speedup = peer_value / our_value
    line = (f"{what}: tfflow {our_value:.{3 if unit == 's' else 1}f} {unit} ({our_mode}) vs "
            f"{peer_name} {peer_value:.{3 if unit == 's' else 1}f} {unit} ({peer_mode}): ratio "
            f"{our_value / peer_value:.2f}, {speedup:.2f}x faster (target >= {target:g}x): ")
    if speedup >= target:
        return line + "pass", True
    return (line + f"MISS by {(target - speedup) / target:.0%} (tfflow needs <= "
            f"{peer_value / target:.{3 if unit == 's' else 1}f} {unit})"), False


def report_glow_pair(name, section, runner, modes, targets_out, issue_note=None,
                     default="graph"):
    """A section's table and its target lines (speed targets only where all phases ran).

    `default` is tfflow's default mode on this device (`default_mode`), the one
    issue 13's steady-state targets judge: >= 1.5x faster than tfb.Glow's faster
    mode, and faster than normflows' Glow (when its virtualenv is there).
    """
    config = section["config"]
    full = any(spec["phases"] == "all" for spec in section["specs"])
    print(f"\n### {name}: Glow {describe(dict(config, model='glow'))}")
    if issue_note:
        print(f"(issue 6's tfb.Glow numbers, graph / XLA: {issue_note})")
    ours = {("XLA" if xla else "graph"): runner.get(job("tfflow", "glow", xla=xla, **config))
            for xla in modes}
    peer = {("XLA" if xla else "graph"): runner.get(job("tfp", "glow", xla=xla, **config))
            for xla in modes}
    torch = runner.get(job(TORCH_PEER, "glow", **config))
    _pair_table(ours, peer, "tfb.Glow", full, torch, default)
    if full:
        for field in ("train_ms", "log_prob_ms", "sample_ms"):
            targets_out.append(verdict(f"[{name}] {METRIC_NAMES[field]}", best(ours, field),
                                       best(peer, field), TARGETS[field], "ms"))
        for field in ("train_ms", "log_prob_ms", "sample_ms"):
            what = f"[{name}, issue 13] {METRIC_NAMES[field]}, tfflow's default mode"
            if default not in ours:
                targets_out.append((f"{what}: not measured (the default, {default}, is not "
                                    "among --xla's modes)", None))
                continue
            mine = (_median(ours[default], field), f"default: {default}")
            targets_out.append(verdict(f"{what} vs tfb.Glow's faster mode", mine,
                                       best(peer, field), ISSUE13_PEER_SPEEDUP, "ms",
                                       "tfb.Glow"))
            if torch is not None:
                targets_out.append(verdict(f"{what} vs {TORCH_PEER_NAME}", mine,
                                           (_median(torch, field), "2 threads"), 1.0, "ms",
                                           "normflows"))
    for mode in ours:
        targets_out.append(verdict(f"[{name}] first step ({mode})",
                                   (_median(ours[mode], "first_step_s"), mode),
                                   (_median(peer[mode], "first_step_s"), mode),
                                   TARGETS["first_step_s"], "s"))
    if full:
        counts = [(r["nonfinite"], r["samples"]) for r in ours.values() if r and "nonfinite" in r]
        bad, total = sum(c[0] for c in counts), sum(c[1] for c in counts)
        peer_bad = sum(r["nonfinite"] for r in peer.values() if r and "nonfinite" in r)
        ok = bad == 0 and total > 0
        targets_out.append((f"[{name}] non-finite samples at T <= 1: tfflow {bad}/{total} "
                            f"(target 0; {peer_bad} for tfb.Glow): "
                            + ("pass" if ok else "MISS"), ok))


def _pair_table(ours, peer, peer_name, full, torch=None, default=None):
    """A section's Markdown table: tfflow's and the TFP peer's modes, and ratios.

    With `torch` (normflows' result, one eager mode): its column, and the ratio
    of tfflow in its `default` mode to it, the issue-13 comparison.
    """
    columns = list(ours.values()) + list(peer.values()) + ([torch] if torch else [])
    header = ["metric"] + [f"tfflow {m}" for m in ours] + [f"{peer_name} {m}" for m in peer] + \
        ([TORCH_PEER_NAME] if torch else []) + [f"tfflow best / {peer_name} best"] + \
        ([f"tfflow default ({default}) / normflows"] if torch else [])
    rows = []
    metrics = METRICS if full else [m for m in METRICS if m[0] in ("train_ms", "first_step_s",
                                                                     "peak_train_rss",
                                                                     "tensor_peak_steady")]
    measured = [r for r in columns if r]
    metrics = [m for m in metrics if m[0] != "tensor_peak_steady"
               or any(r.get(m[0]) is not None for r in measured)]
    for field, title, unit in metrics:
        row = [title] + [_cell(r, field, unit) for r in columns]
        row.append(_ratio(best(ours, field)[0], best(peer, field)[0]))
        if torch:
            row.append(_ratio(_median(ours.get(default), field), _median(torch, field)))
        rows.append(row)
    ratio_cells = ["-"] * (2 if torch else 1)
    if full:
        row = ["non-finite samples (T=1, 0.7)"]
        for result in columns:
            row.append(f"{result['nonfinite']}/{result['samples']}" if result and
                       "nonfinite" in result else _cell(result, "nonfinite"))
        rows.append(row + ratio_cells)
    row = ["params"]
    for result in columns:
        row.append(f"{result['params']:,d}" if result and "params" in result else "-")
    rows.append(row + ratio_cells)
    common.print_table(header, rows)
    for name, result in [(f"tfflow {m}", r) for m, r in ours.items()] + \
            [(f"{peer_name} {m}", r) for m, r in peer.items()] + \
            ([(TORCH_PEER_NAME, torch)] if torch else []):
        if result and ("error" in result or "na" in result or "warning" in result):
            print(f"  note ({name}): "
                  f"{result.get('error') or result.get('na') or result.get('warning')}")


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}" if theirs and not math.isnan(theirs) \
        and not math.isnan(ours) else "-"


def report_depth(section, runner, modes, targets_out):
    depths = section["depths"]
    print("\n### first step (trace) time vs depth: Glow 32x32x3 b32 L=2 h64, K steps per level")
    header = ["model"] + [f"K={k}" for k in depths] + ["s per added step (first -> last)",
                                                        "growth exponent"]
    rows = []
    for lib in ("tfflow", "tfp", TORCH_PEER):
        for xla in modes if lib != TORCH_PEER else [False]:
            results = [runner.get(job(lib, "glow", xla=xla, phases="train",
                                      **glow_config((32, 32, 3), 2, k, 32))) for k in depths]
            if lib == TORCH_PEER and all(r is None for r in results):
                continue  # no PyTorch virtualenv, or --tfflow_only
            times = [_median(r, "first_step_s") for r in results]
            slopes = [(b - a) / (kb - ka) for a, b, ka, kb in
                      zip(times, times[1:], depths, depths[1:])]
            exponent = math.log(times[-1] / times[0]) / math.log(depths[-1] / depths[0]) \
                if times[0] > 0 and times[-1] > 0 else math.nan
            name = {"tfflow": "tfflow Glow graph", "tfp": "tfb.Glow graph",
                    TORCH_PEER: "normflows Glow eager"}[lib]
            name = name.replace(" graph", " XLA") if xla else name
            rows.append([name] + [_fmt(t) for t in times] +
                        [" -> ".join(f"{s:.2f}" for s in slopes), f"{exponent:.2f}"])
            if lib == "tfflow" and not any(math.isnan(t) for t in times):
                # Slower than linear: each added step costs less than the ones before
                # (the marginal seconds per step fall as K grows).
                sublinear = all(b < a for a, b in zip(slopes, slopes[1:])) if len(slopes) > 1 \
                    else exponent < 1
                targets_out.append((
                    f"[depth] trace time vs K ({'XLA' if xla else 'graph'}): tfflow "
                    + ", ".join(f"{t:.1f} s" for t in times)
                    + f" at K={'/'.join(map(str, depths))}; marginal s/step "
                    + " -> ".join(f"{s:.2f}" for s in slopes)
                    + f", exponent {exponent:.2f} (target: slower than linear, marginal cost "
                      "falling): " + ("pass" if sublinear else "MISS"), sublinear))
                growth = times[-1] / times[0]
                cpus = [_median(runner.get(job(lib, "glow", xla=xla, phases="train",
                                               **glow_config((32, 32, 3), 2, k, 32))),
                                "first_step_cpu_s") for k in (depths[0], depths[-1])]
                flat = growth <= DEPTH_GROWTH_TARGET
                targets_out.append((
                    f"[depth, issue 13] first step K={depths[0]} -> K={depths[-1]} "
                    f"({'XLA' if xla else 'graph'}): {growth:.2f}x wall, "
                    f"{cpus[1] / cpus[0]:.2f}x CPU (target <= {DEPTH_GROWTH_TARGET}x): "
                    + ("pass" if flat else "MISS"), flat))
    common.print_table(header, rows)
    print("(growth exponent: log(t_last / t_first) / log(K_last / K_first); 1 = linear. "
          "Marginal seconds per added step, between consecutive K.)")


def report_memory(section, runner, targets_out):
    """Peak memory at the two depths, standard vs memory-saving, and the target lines.

    Two measures per run, both over the timed steps after the first: TF's
    allocator peak ("tensor": weights, optimizer slots, activations and gradients
    alive at once: what recomputation saves; CPU workers run with the BFC
    allocator so that it is counted) and the process's peak RSS (that plus the
    libraries, the traced graph and whatever the allocator keeps; the first,
    tracing step already takes RSS to its peak).
    """
    depths = section["depths"]
    low, high = depths[0], depths[-1]
    print(f"\n### memory-saving training: Glow 32x32x3 b32 L=2 h64, K={low} vs K={high} "
          "(graph mode)")
    header = ["model"]
    for k in depths:
        header += [f"K={k} tensor peak (MB)", f"K={k} peak RSS (GB)", f"K={k} train (ms)"]
    header += [f"tensor peak K={high} / K={low}", f"peak RSS K={high} / K={low}"]
    rows, got = [], {}
    for lib, saving, name in (("tfflow", False, "tfflow Glow"),
                              ("tfflow", True, "tfflow Glow memory-saving"),
                              ("tfp", False, "tfb.Glow")):
        results = [runner.get(job(lib, "glow", memory_saving=saving, phases="train",
                                  **glow_config((32, 32, 3), 2, k, 32))) for k in depths]
        if all(r is None for r in results):
            continue
        got[(lib, saving)] = results
        row = [name]
        for result in results:
            tensor = _median(result, "tensor_peak_steady")
            row += [f"{tensor / 1e6:.0f}" if tensor == tensor else _cell(result, "x"),
                    _cell(result, "peak_train_rss", "GB"), _cell(result, "train_ms")]
        for field in ("tensor_peak_steady", "peak_train_rss"):
            peaks = [_median(r, field) for r in results]
            row.append(f"{peaks[-1] / peaks[0]:.2f}" if not any(map(math.isnan, peaks))
                       else "-")
        rows.append(row)
    common.print_table(header, rows)
    saving, standard = got.get(("tfflow", True)), got.get(("tfflow", False))
    if saving and any(r and "na" in r for r in saving):
        reason = next(r["na"] for r in saving if r and "na" in r)
        targets_out.append((f"[memory] memory-saving mode: n/a ({reason}): MISS", False))
        return
    if not saving or any(r is None or "error" in r for r in saving):
        targets_out.append(("[memory] memory-saving mode: not measured (error)", False))
        return
    for field, what, scale, unit in (
            ("tensor_peak_steady", "peak tensor memory in a training step", 1e6, "MB"),
            ("peak_train_rss", "peak RSS in training", GB, "GB"),
            ("tensor_step_added", "tensor memory a step adds to what lives between steps "
                                  "(activations, gradients; weights and Adam's slots excluded)",
             1e6, "MB")):
        peaks = [_median(r, field) for r in saving]
        if any(map(math.isnan, peaks)):
            targets_out.append((f"[memory] memory-saving {what}: not measured", None))
            continue
        ratio = peaks[-1] / peaks[0]
        line = (f"[memory] memory-saving {what}, K={high} / K={low}: {peaks[-1] / scale:.2f} / "
                f"{peaks[0] / scale:.2f} {unit} = {ratio:.2f}x")
        targets = MEMORY_TARGETS.get(field, {})
        line += "; " + ", ".join(
            f"{issue} target <= {target}x: "
            + ("pass" if ratio <= target else f"MISS by {(ratio - target) / target:.0%}")
            for issue, target in targets.items()) if targets else " (reported, no target)"
        if standard and all(r and r.get(field) is not None for r in standard):
            std = [_median(r, field) for r in standard]
            line += (f" (standard mode: {std[-1] / scale:.2f} / {std[0] / scale:.2f} {unit} = "
                     f"{std[-1] / std[0]:.2f}x)")
        targets_out.append((line, all(ratio <= t for t in targets.values()) if targets else None))
    if standard and all(r and "train_ms" in r for r in standard):
        costs = [_median(s, "train_ms") / _median(r, "train_ms")
                 for s, r in zip(saving, standard)]
        targets_out.append((
            "[memory] memory-saving step time / standard step time: "
            + ", ".join(f"K={k}: {c:.2f}x" for k, c in zip(depths, costs))
            + " (reported, no target)", None))


def report_mixed(args, runner, modes, targets_out):
    print(f"\n### mixed precision ({args.mixed_policy}) vs float32, tfflow Glow")
    header = ["config", "mode", "float32 train (ms)", "mixed train (ms)", "speed-up",
              "float32 log_prob (ms)", "mixed log_prob (ms)", "speed-up",
              "float32 sample (ms)", "mixed sample (ms)", "speed-up", "loss finite",
              "non-finite samples"]
    rows = []
    for config in (glow_config((32, 32, 3), 2, 4, 32), glow_config((8, 8, 1), 2, 8, 64)):
        for xla in modes:
            base = runner.get(job("tfflow", "glow", xla=xla, **config))
            mixed = runner.get(job("tfflow", "glow", xla=xla, precision=args.mixed_policy,
                                   **config))
            mode = "XLA" if xla else "graph"
            name = describe(dict(config, model="glow"))
            if mixed is None or "na" in mixed or "error" in mixed:
                reason = "not run" if mixed is None else (mixed.get("na") or mixed["error"])
                rows.append([name, mode] + ["-"] * 11)
                targets_out.append((f"[mixed] {name} {mode}: n/a ({reason})", False))
                continue
            row = [name, mode]
            for field in ("train_ms", "log_prob_ms", "sample_ms"):
                a, b = _median(base, field), _median(mixed, field)
                row += [_fmt(a), _fmt(b), f"{a / b:.2f}x" if a == a and b == b else "-"]
            row += ["yes" if mixed["train_finite"] else "NO",
                    f"{mixed['nonfinite']}/{mixed['samples']}"]
            rows.append(row)
            speedup = _median(base, "train_ms") / _median(mixed, "train_ms")
            targets_out.append((
                f"[mixed] {name} {mode}: trains without NaNs: "
                + ("pass" if mixed["train_finite"] else "MISS")
                + f"; train-step speed-up vs float32 {speedup:.2f}x (reported, no target); "
                f"{mixed.get('precision', '')}", bool(mixed["train_finite"])))
    common.print_table(header, rows)


def report_vectors(dims_list, runner, modes):
    for dims in dims_list:
        config = vector_config(dims)
        print(f"\n### RealNVP on {dims}-D vectors: tfflow RealNVP(({dims},)) "
              f"(MLP {'-'.join(map(str, config['hidden_units']))}) vs tfb.RealNVP x8 "
              f"(MLP {'-'.join(map(str, config['peer_hidden_units']))}), batch {config['batch']}")
        ours = {("XLA" if xla else "graph"): runner.get(job("tfflow", "realnvp", xla=xla,
                                                           **config)) for xla in modes}
        peer = {("XLA" if xla else "graph"): runner.get(job("tfp", "realnvp", xla=xla,
                                                           **config)) for xla in modes}
        _pair_table(ours, peer, "tfb.RealNVP", True)


def report(args, sections, runner, device):
    modes = xla_modes(args)
    targets: list = []
    print("\n## Results")
    print(f"device: {device}; {common.code_version()}; medians of {args.repeats} steps after "
          f"{args.warmup} warm-up steps, {args.rounds} round(s)")
    if "images32" in sections:
        report_glow_pair("32x32x3", sections["images32"], runner, modes, targets,
                         ISSUE_PEER["images32"], args.default_mode)
    if "digits" in sections:
        report_glow_pair("digits 8x8x1", sections["digits"], runner, modes, targets,
                         ISSUE_PEER["digits"], args.default_mode)
    if "deep" in sections:
        report_glow_pair("deep", sections["deep"], runner, modes, targets,
                         default=args.default_mode)
    if "depth" in sections:
        report_depth(sections["depth"], runner, sections["depth"]["modes"], targets)
    for name in ("digits", "paper_depth"):
        if name not in sections:
            continue
        config = sections[name]["config"]
        for xla in modes:
            phases = "all" if name == "digits" else "train"
            result = runner.get(job("tfflow", "glow", xla=xla, phases=phases, **config))
            first = _median(result, "first_step_s")
            cpu = _median(result, "first_step_cpu_s")
            want = FIRST_STEP_TARGETS_S[name]
            ok = None if math.isnan(first) else first <= want
            targets.append((
                f"[{name}, issue 13] tfflow first step ({'XLA' if xla else 'graph'}), "
                f"{describe({'model': 'glow', **config})}: {_fmt(first)} s wall, "
                f"{_fmt(cpu)} s CPU (target <= {want} s): "
                + {True: "pass", False: "MISS", None: "n/a"}[ok], ok))
    if "memory" in sections:
        report_memory(sections["memory"], runner, targets)
    if "mixed" in sections:
        report_mixed(args, runner, modes, targets)
    if "vectors" in sections:
        report_vectors(sections["vectors"]["dims"], runner, modes)
    print("\n## Targets (issue 6: speed-ups compare tfflow's faster mode with the peer's "
          "faster mode, first step per mode; issue 13: tfflow's default mode on this device, "
          f"{args.default_mode}, against tfb.Glow's faster mode and normflows)")
    for line, _ in targets:
        print("- " + line)
    passed = sum(1 for _, ok in targets if ok is True)
    missed = sum(1 for _, ok in targets if ok is False)
    print(f"\n{passed} passed, {missed} missed")


# ================================================================================== main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                        help="cpu (default; GPUs hidden) or gpu (fails if none is visible)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 warm-up + 3 timed steps, depth sweep K=4/8, memory "
                             "K=4 vs K=8, 'deep' config L=3 K=4, 2-D vectors only")
    parser.add_argument("--depth_xla", action="store_true",
                        help="also sweep the XLA trace time over depth (slow: XLA compiles "
                             "grow with K)")
    parser.add_argument("--depths", type=lambda v: [int(k) for k in v.split(",")],
                        default=None,
                        help="K values of the depth sweep, e.g. 4,8,32 (default 4,8,16; "
                             "--quick 4,8)")
    parser.add_argument("--tfflow_only", action="store_true",
                        help="skip the tfb.Glow peers (e.g. a depth sweep to K=32, which "
                             "tfb.Glow takes many minutes to trace on 2 shared cores)")
    parser.add_argument("--peer_python", "--torch_python", default="/work/bench-venv/bin/python",
                        help="python of the benchmark-only PyTorch virtualenv "
                             "(benchmarks/peers_requirements.md) that runs normflows' Glow "
                             "(torch_glow.py); skipped with a note when it is missing")
    parser.add_argument("--torch_threads", type=int, default=2,
                        help="torch.set_num_threads of the normflows worker (default 2)")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of: {', '.join(SECTIONS)}")
    parser.add_argument("--xla", choices=("both", "off", "on"), default="both",
                        help="measure without XLA, with jit_compile=True, or both (default)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every worker this many times (alternating order) and "
                             "report medians")
    # --warmup, --repeats, --phase_seconds, --seed: shared with the PyTorch worker.
    common.add_speed_protocol_flags(parser, quick=QUICK_PROTOCOL)
    parser.add_argument("--mixed_policy", default="mixed_bfloat16",
                        help="Keras mixed-precision policy for the 'mixed' section")
    parser.add_argument("--memory_saving_arg", default=None,
                        help="how to switch tfflow's memory-saving mode on: model:NAME[=VALUE] "
                             "(a tfflow.models.Glow keyword) or compile:NAME[=VALUE] (a "
                             "FlowModel.compile keyword); default: found by name")
    parser.add_argument("--cpu_allocator", choices=("bfc", "default"), default="bfc",
                        help="bfc (default): workers run with TF_CPU_ALLOCATOR_USE_BFC=true, so "
                             "TF reports peak tensor memory on the CPU; default: TF's plain "
                             "CPU allocator (no tensor-memory numbers)")
    parser.add_argument("--tf_intra_op_threads", type=int, default=None,
                        help="CPU threads per op in every TensorFlow worker (tfflow and "
                             "tfb.Glow alike; tfflow-train's default on the embedded data is 1, "
                             "tfflow.training.threads); default: TensorFlow's (every core)")
    parser.add_argument("--job_timeout", type=float, default=900.,
                        help="seconds before a worker is killed")
    parser.add_argument("--json", default=None, help="also write every raw result here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is None:
        args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
        unknown = set(args.sections) - set(SECTIONS)
        if unknown or not args.sections:
            parser.error(f"--sections: expected a subset of {','.join(SECTIONS)}, "
                         f"got {sorted(unknown) or 'nothing'}")
        quick_warmup, quick_repeats = QUICK_PROTOCOL
        args.warmup = args.warmup if args.warmup is not None else (quick_warmup if args.quick
                                                                   else 2)
        if args.warmup < 1:
            parser.error("--warmup: at least 1 (the first step is timed on its own)")
        args.repeats = args.repeats if args.repeats is not None else (quick_repeats if args.quick
                                                                       else 10)
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker is not None:
        common.print_result(worker(json.loads(args.worker)))
        return
    start = time.perf_counter()
    device = common.setup_device(args.device)
    print(f"device: {device}; {common.code_version()}", flush=True)
    print("command: python benchmarks/speed.py " + " ".join(sys.argv[1:]))
    args.torch_peer = torch_peer_available(args)
    sections = plan(args)
    runner = Runner(args)
    check_parameters(sections, runner)
    args.default_mode = default_mode()
    print(f"tfflow's default mode here (FlowModel.compile() without jit_compile): "
          f"{args.default_mode}")
    option = memory_saving_option(args.memory_saving_arg)
    print("tfflow memory-saving switch: " + (f"{option[0]}({option[1]}={option[2]!r})"
                                             if option else "none found (n/a)"))
    specs = [spec for section in sections.values() for spec in section["specs"]]
    runner.run_all(specs, args.rounds)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({"device": device, "version": common.code_version(),
                       "argv": sys.argv[1:],
                       "results": {k: v for k, v in runner.results.items()}}, out, indent=1)
    report(args, sections, runner, device)
    if runner.workdir:  # the PyTorch worker's image files
        shutil.rmtree(runner.workdir, ignore_errors=True)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
