"""Export a trained flow as a SavedModel that TF Serving (or plain TensorFlow) runs.

The export holds only core TensorFlow ops and the model's variables: loading it
needs neither tfflow nor TensorFlow Probability. Signatures (every input shape
and dtype declared, batch size variable):

* `serving_default`, `log_prob`: `x` [N, *event] -> `log_prob` [N] (nats),
  `bits_per_dim` [N] and `valid` [N] (bool);
* `encode`: `x` -> `z` [N, *latent] and `valid` [N];
* `decode`: `z` -> `x` [N, *event] and `valid` [N];
* `sample`: `n` (int32 scalar), `seed` (int32[2]), `temperature` (float32
  scalar) -> `samples` [n, *event]; deterministic per seed (stateless ops).

Class-conditional models take a `label` (int32 [N], or [n] for `sample`) in
each signature; conditional models (`context_shape`) a `context` [N,
*context_shape] of the model's dtype, one row per example, in the data's own
units (the model standardises it): `sample` then draws `n` samples per context
row, `samples` [rows, n, *event].

**Per-row answers.** `log_prob`, `encode` and `decode` answer each row on its
own, because TF Serving's server-side batching concatenates the rows of
several requests into one call: one bad row must not fail its neighbours. A
row is invalid when its `x` (`z` for `decode`) holds a NaN or Inf, when its
`x` lies outside the model's scoring range (`FlowModel.scoring_range`, the
rule `FlowModel.log_prob` applies: with `num_levels`, dequantised data and the
model's own samples, which stray past [0, 1]), when its `context` row holds a NaN or Inf, or
when its `label` is outside [0, num_classes). An invalid row gets
`valid = False` and NaN in every other output; the flow runs on a sanitised
copy of the batch (each invalid input row replaced by a placeholder in range),
so a bad row leaves no trace: the valid rows' answers are bit-identical to those
of the same batch with valid rows in the invalid ones' places (in a batch of
another size TF's CPU kernels may round a row differently, about 1e-6
relative). A request whose inputs cannot be rows of one batch fails as a whole with
an `InvalidArgumentError` naming the signature: a wrong shape, rank or dtype
(TF's "is not compatible with expected shape" error), an empty batch, or a
`label`/`context` count other than one per example.

**`sample`** takes scalars, which TF Serving cannot batch, so its bad requests
fail alone, as a whole, with an `InvalidArgumentError`: `n < 1`; more than
`max_samples` samples (`n`, times the context rows for a conditional model;
fixed at export time, `export_saved_model(max_samples=...)` or
`tfflow-export --max_samples`) since one small request would otherwise
allocate without bound; a negative or non-finite `temperature`; labels out of
range or not one per sample; a NaN or Inf context. The `n` and `temperature`
rules are `FlowModel.sample`'s (`_checks.count`, `_checks.temperature`).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

import tensorflow as tf

from tfflow.models import _checks
from tfflow.models.flow_model import FlowModel

__all__ = ["export_saved_model", "SIGNATURES", "DEFAULT_MAX_SAMPLES"]

SIGNATURES = ("serving_default", "log_prob", "sample", "encode", "decode")

# The most samples one `sample` request may draw, unless the export says otherwise. A
# request's extra memory (peak RSS, measured on CPU) is ~11 KB per sample for tfflow-train's
# default Glow on the 8x8 digits (1,024: 14 MB, 0.3 s on 2 cores) and ~195 KB for the default
# Glow on 32x32x3 (1,024: 200 MB): without a bound one small request could take any amount.
DEFAULT_MAX_SAMPLES = 1024


class _ServingModule(tf.Module):
    """Holds the model (and so its variables) and the traced signature functions."""

    def __init__(self, model: FlowModel):
        super().__init__(name="tfflow_export")
        self.model = model
        # The tf.Variables behind the Keras variables, tracked explicitly: the
        # TF1-style loader (`saved_model_cli run`, TF Serving) restores only
        # variables in the object graph, not those merely captured by a function.
        self.model_variables = [v.value for v in model.variables]


def _next_version(path: pathlib.Path) -> int:
    versions = [int(p.name) for p in path.iterdir() if p.is_dir() and p.name.isdigit()] \
        if path.exists() else []
    return max(versions, default=0) + 1


def _required(tensor: tf.Tensor, condition: tf.Tensor, *message) -> tf.Tensor:
    """`tensor`, gated on `condition` (else `InvalidArgumentError` with `message`)."""
    with tf.control_dependencies([tf.debugging.Assert(condition, list(message))]):
        return tf.identity(tensor)


def _rows_where(valid: tf.Tensor, tensor: tf.Tensor, other) -> tf.Tensor:
    """`tensor` with its invalid rows (`valid` bool [N]) replaced by the scalar `other`."""
    mask = tf.reshape(valid, [-1] + [1] * (tensor.shape.rank - 1))
    return tf.where(mask, tensor, tf.cast(other, tensor.dtype))


def _signature_functions(module: _ServingModule, max_samples: int) -> dict:
    model = module.model
    dtype = tf.as_dtype(model.dtype_name)
    x_spec = tf.TensorSpec([None, *model.event_shape], dtype, name="x")
    z_spec = tf.TensorSpec([None, *model.latent_shape], dtype, name="z")
    label_spec = tf.TensorSpec([None], tf.int32, name="label")
    conditional = bool(model.num_classes)
    contextual = model.context_shape is not None
    # The model's own rule for scored data (FlowModel.log_prob's), applied per row here.
    value_range = model.scoring_range
    # The stand-in for an invalid x row: inside the range, so that the flow runs on
    # numbers it accepts (its answer for that row is thrown away).
    x_placeholder = 0. if value_range is None else (value_range.low + value_range.high) / 2.

    def checked(tensor, shape):
        # A loaded signature does not enforce its declared shape; without this a
        # wrong shape fails deep inside the flow, or broadcasts. The error reads
        # "Shape of tensor x [2,4,4,2] is not compatible with expected shape [?,8,8,1]".
        return tf.ensure_shape(tensor, shape)

    def check_label(name, label, batch):
        """Sample's labels: checked as a whole (`_checks.labels`)."""
        if label is None:
            return None
        return _checks.labels(f"SavedModel signature {name}", checked(label, [None]),
                              model.num_classes, batch)

    def check_context(name, context, batch):
        """[N, C] (flattened), finite, one row per example (`batch`; None: any number)."""
        if context is None:
            return None
        owner = f"SavedModel signature {name}"
        context = _checks.values(owner, "context", checked(context, [None, *model.context_shape]))
        context = tf.reshape(context, [-1, model.context_units])
        return context if batch is None else _checks.rows(owner, "context", context, batch)

    def rows(name, what, tensor, shape, value_range=None, placeholder=0.):
        """A per-row input: (its rows with invalid ones replaced by `placeholder`, valid [N])."""
        owner = f"SavedModel signature {name}"
        tensor = checked(tensor, shape)
        # An empty batch is a malformed request, as it is for FlowModel.log_prob.
        tensor = _required(tensor, tf.shape(tensor)[0] > 0,
                           f"{owner}: expected a batch of at least one example, got {what} of "
                           f"shape", tf.shape(tensor))
        valid = _checks.valid_rows(tensor, value_range)
        return _rows_where(valid, tensor, placeholder), valid

    def row_label(name, label, batch):
        """(labels [N] with out-of-range ones replaced by 0, valid [N]); None: (None, True)."""
        if label is None:
            return None, True
        label = checked(label, [None])
        label = _required(label, tf.equal(tf.size(label), batch),
                          f"SavedModel signature {name}: expected one label per example, got "
                          f"this many labels and examples:", tf.size(label), batch)
        valid = (label >= 0) & (label < model.num_classes)
        return tf.where(valid, label, 0), valid

    def row_context(name, context, batch):
        """(context [N, C] with non-finite rows replaced by 0, valid [N]); None: (None, True)."""
        if context is None:
            return None, True
        context = checked(context, [None, *model.context_shape])
        context = _checks.rows(f"SavedModel signature {name}", "context",
                               tf.reshape(context, [-1, model.context_units]), batch)
        valid = _checks.valid_rows(context)
        return _rows_where(valid, context, 0.), valid

    def per_row(name, what, tensor, shape, label, context, value_range=None, placeholder=0.):
        """The sanitised inputs of a per-row signature and the rows' validity."""
        tensor, valid = rows(name, what, tensor, shape, value_range, placeholder)
        batch = tf.shape(tensor)[0]
        label, label_ok = row_label(name, label, batch)
        context, context_ok = row_context(name, context, batch)
        return tensor, label, context, valid & label_ok & context_ok

    def answers(valid, outputs):
        """`outputs` with NaN on the invalid rows, plus `valid`."""
        outputs = {key: _rows_where(valid, value, float("nan")) for key, value in outputs.items()}
        return {**outputs, "valid": valid}

    def log_prob(x, label=None, context=None):
        """log p(x) [N] in nats, bits/dim [N] and valid [N]; NaN where a row is invalid."""
        x, label, context, valid = per_row("log_prob", "x", x, [None, *model.event_shape],
                                           label, context, value_range, x_placeholder)
        lp = model._log_prob(x, label, training=False,  # pylint: disable=protected-access
                             context=context)
        bpd = model.nll_to_bits_per_dim(-lp / model.num_dims)
        return answers(valid, {"log_prob": lp, "bits_per_dim": bpd})

    def encode(x, label=None, context=None):
        """z = bijector.inverse(x) [N, *latent] and valid [N]; NaN where a row is invalid."""
        x, label, context, valid = per_row("encode", "x", x, [None, *model.event_shape],
                                           label, context, value_range, x_placeholder)
        return answers(valid, {"z": model.bijector_for(label, context=context).inverse(x)})

    def decode(z, label=None, context=None):
        """x = bijector.forward(z) [N, *event] and valid [N]; NaN where a row is invalid."""
        z, label, context, valid = per_row("decode", "z", z, [None, *model.latent_shape],
                                           label, context)
        return answers(valid, {"x": model.bijector_for(label, context=context).forward(z)})

    def sample(n, seed, temperature, label=None, context=None):
        """`n` samples (per context row), refused as a whole when any argument is bad."""
        owner = "SavedModel signature sample"
        n = _checks.count(owner, "n", n)
        temperature = _checks.temperature(owner, temperature)
        label = check_label("sample", label, n)
        context = check_context("sample", context, None)
        # Bounded before anything is allocated; int64, so n * rows cannot wrap around.
        total = tf.cast(n, tf.int64)
        what = "n"
        if context is not None:
            total *= tf.cast(tf.shape(context)[0], tf.int64)
            what = "n x context rows"
        n = _required(n, total <= max_samples,
                      f"{owner}: expected {what} <= {max_samples} samples per request (the "
                      f"maximum fixed at export time: export_saved_model(max_samples=...) or "
                      f"tfflow-export --max_samples), got {what} =", total)

        def decode_latent(z, labels, rows_context):
            return model.bijector_for(labels, context=rows_context).forward(z)
        return {"samples": model.draw(n, temperature, seed, decode_latent, labels=label,
                                      context=context)}

    n_spec = tf.TensorSpec([], tf.int32, name="n")
    seed_spec = tf.TensorSpec([2], tf.int32, name="seed")
    t_spec = tf.TensorSpec([], tf.float32, name="temperature")
    # Each signature's function takes exactly its declared inputs, so that the
    # SavedModel's concrete functions list no unused `context=None` argument.
    if conditional:
        specs = {"log_prob": (lambda x, label: log_prob(x, label), [x_spec, label_spec]),
                 "encode": (lambda x, label: encode(x, label), [x_spec, label_spec]),
                 "decode": (lambda z, label: decode(z, label), [z_spec, label_spec]),
                 "sample": (lambda n, seed, temperature, label: sample(
                     n, seed, temperature, label), [n_spec, seed_spec, t_spec, label_spec])}
    elif contextual:
        c_spec = tf.TensorSpec([None, *model.context_shape], dtype, name="context")
        specs = {"log_prob": (lambda x, context: log_prob(x, context=context), [x_spec, c_spec]),
                 "encode": (lambda x, context: encode(x, context=context), [x_spec, c_spec]),
                 "decode": (lambda z, context: decode(z, context=context), [z_spec, c_spec]),
                 "sample": (lambda n, seed, temperature, context: sample(
                     n, seed, temperature, context=context),
                     [n_spec, seed_spec, t_spec, c_spec])}
    else:
        specs = {"log_prob": (lambda x: log_prob(x), [x_spec]),
                 "encode": (lambda x: encode(x), [x_spec]),
                 "decode": (lambda z: decode(z), [z_spec]),
                 "sample": (lambda n, seed, temperature: sample(n, seed, temperature),
                            [n_spec, seed_spec, t_spec])}
    functions = {}
    for name, (fn, signature) in specs.items():
        traced = tf.function(fn, input_signature=signature, autograph=False)
        setattr(module, name, traced)
        functions[name] = traced.get_concrete_function()
    functions["serving_default"] = functions["log_prob"]
    return functions


def export_saved_model(model: FlowModel, path: str | os.PathLike, *,
                       version: int | None = None,
                       max_samples: int = DEFAULT_MAX_SAMPLES) -> pathlib.Path:
    """Writes `model` as a SavedModel under `path/<version>/` (TF Serving's layout).

    The signatures and their contract (per-row answers with a `valid` output
    for `log_prob`, `encode` and `decode`; `sample` bounded by `max_samples`)
    are described in the module docstring of `tfflow.export`.

    Args:
      model: a trained `tfflow.FlowModel`.
      path: the model's base directory; created if missing.
      version: the version number; default one more than the largest present.
      max_samples: the most samples one `sample` request may draw (`n`, or `n`
        times the context rows of a conditional model); a request above it
        fails with an `InvalidArgumentError` naming `n`, the maximum and this
        option. A request's memory grows linearly in the samples: the default
        1,024 takes about 14 MB for tfflow-train's default 8x8 Glow and 200 MB
        for the default Glow on 32x32x3 images (measured on CPU).

    Returns:
      The directory written, `path/<version>`. It is written to a temporary
      name first and renamed, so a crash never leaves a half-written version
      where TF Serving would load it.
    """
    if not isinstance(model, FlowModel):
        raise ValueError(f"export_saved_model: expected a tfflow.FlowModel, got "
                         f"{type(model).__name__}.")
    max_samples = _checks.count("export_saved_model", "max_samples", max_samples)
    if max_samples > 2 ** 31 - 1:  # `n` is an int32 input
        raise ValueError(f"export_saved_model: expected max_samples <= 2147483647 (n is an "
                         f"int32), got {max_samples}.")
    base = pathlib.Path(path)
    base.mkdir(parents=True, exist_ok=True)
    version = _next_version(base) if version is None else int(version)
    target = base / str(version)
    if target.exists():
        raise ValueError(f"export_saved_model: {target} already exists; choose another "
                         f"version or remove it.")
    module = _ServingModule(model)
    signatures = _signature_functions(module, max_samples)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{version}-", dir=base))
    try:
        tf.saved_model.save(module, str(staging), signatures=signatures)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
