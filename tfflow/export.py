"""Export a trained flow as a SavedModel that TF Serving (or plain TensorFlow) runs.

The export holds only core TensorFlow ops and the model's variables: loading it
needs neither tfflow nor TensorFlow Probability. Signatures (every input shape
and dtype declared, batch size variable):

* `serving_default`, `log_prob`: `x` [N, *event] -> `log_prob` [N] (nats) and
  `bits_per_dim` [N];
* `sample`: `n` (int32 scalar), `seed` (int32[2]), `temperature` (float32
  scalar) -> `samples` [n, *event]; deterministic per seed (stateless ops);
* `encode`: `x` -> `z`; `decode`: `z` -> `x`.

Class-conditional models take a `label` (int32 [N], or [n] for `sample`) in
each signature; conditional models (`context_shape`) a `context` [N,
*context_shape] of the model's dtype, one row per example, in the data's own
units (the model standardises it): `sample` then draws `n` samples per context
row, `samples` [rows, n, *event]. Bad inputs are rejected by the SavedModel itself (core TF
`Assert` ops, no Python) with an `InvalidArgumentError` that names the
signature and what it expected: the wrong shape, rank or dtype, an empty batch,
NaN or Inf values, data outside [0, 1] (models with `num_levels`; 1e-3 slack),
labels out of range or not one per example, `n < 1`, a negative or non-finite
`temperature`. The rules are `FlowModel.log_prob`'s.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

import tensorflow as tf

from tfflow.models import _checks
from tfflow.models.flow_model import FlowModel

__all__ = ["export_saved_model", "SIGNATURES"]

SIGNATURES = ("serving_default", "log_prob", "sample", "encode", "decode")


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


def _signature_functions(module: _ServingModule) -> dict:
    model = module.model
    dtype = tf.as_dtype(model.dtype_name)
    x_spec = tf.TensorSpec([None, *model.event_shape], dtype, name="x")
    z_spec = tf.TensorSpec([None, *model.latent_shape], dtype, name="z")
    label_spec = tf.TensorSpec([None], tf.int32, name="label")
    conditional = bool(model.num_classes)
    contextual = model.context_shape is not None

    def checked(tensor, shape):
        # A loaded signature does not enforce its declared shape; without this a
        # wrong shape fails deep inside the flow, or broadcasts. The error reads
        # "Shape of tensor x [2,4,4,2] is not compatible with expected shape [?,8,8,1]".
        return tf.ensure_shape(tensor, shape)

    def check_label(name, label, batch):
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

    def check_x(name, x, label, context=None):
        x = _checks.values(f"SavedModel signature {name}",
                           "x", checked(x, [None, *model.event_shape]),
                           _checks.data_range(model.num_levels))
        batch = tf.shape(x)[0]
        return x, check_label(name, label, batch), check_context(name, context, batch)

    def log_prob(x, label=None, context=None):
        x, label, context = check_x("log_prob", x, label, context)
        lp = model._log_prob(x, label, training=False,  # pylint: disable=protected-access
                             context=context)
        bpd = model.nll_to_bits_per_dim(-lp / model.num_dims)
        return {"log_prob": lp, "bits_per_dim": bpd}

    def encode(x, label=None, context=None):
        x, label, context = check_x("encode", x, label, context)
        return {"z": model.bijector_for(label, context=context).inverse(x)}

    def decode(z, label=None, context=None):
        z = _checks.values("SavedModel signature decode", "z",
                           checked(z, [None, *model.latent_shape]))
        batch = tf.shape(z)[0]
        label, context = check_label("decode", label, batch), check_context("decode", context,
                                                                            batch)
        return {"x": model.bijector_for(label, context=context).forward(z)}

    def sample(n, seed, temperature, label=None, context=None):
        owner = "SavedModel signature sample"
        n = _checks.count(owner, "n", n)
        temperature = _checks.temperature(owner, temperature)
        label = check_label("sample", label, n)
        context = check_context("sample", context, None)
        def decode_latent(z, labels, rows_context):
            return model.bijector_for(labels, context=rows_context).forward(z)
        return {"samples": model.draw(n, temperature, seed, decode_latent, labels=label,
                                      context=context)}

    n_spec = tf.TensorSpec([], tf.int32, name="n")
    seed_spec = tf.TensorSpec([2], tf.int32, name="seed")
    t_spec = tf.TensorSpec([], tf.float32, name="temperature")
    if conditional:
        specs = {"log_prob": (log_prob, [x_spec, label_spec]),
                 "encode": (encode, [x_spec, label_spec]),
                 "decode": (decode, [z_spec, label_spec]),
                 "sample": (sample, [n_spec, seed_spec, t_spec, label_spec])}
    elif contextual:
        c_spec = tf.TensorSpec([None, *model.context_shape], dtype, name="context")
        specs = {"log_prob": (lambda x, context: log_prob(x, context=context), [x_spec, c_spec]),
                 "encode": (lambda x, context: encode(x, context=context), [x_spec, c_spec]),
                 "decode": (lambda z, context: decode(z, context=context), [z_spec, c_spec]),
                 "sample": (lambda n, seed, temperature, context: sample(
                     n, seed, temperature, context=context),
                     [n_spec, seed_spec, t_spec, c_spec])}
    else:
        specs = {"log_prob": (log_prob, [x_spec]), "encode": (encode, [x_spec]),
                 "decode": (decode, [z_spec]), "sample": (sample, [n_spec, seed_spec, t_spec])}
    functions = {}
    for name, (fn, signature) in specs.items():
        traced = tf.function(fn, input_signature=signature, autograph=False)
        setattr(module, name, traced)
        functions[name] = traced.get_concrete_function()
    functions["serving_default"] = functions["log_prob"]
    return functions


def export_saved_model(model: FlowModel, path: str | os.PathLike, *,
                       version: int | None = None) -> pathlib.Path:
    """Writes `model` as a SavedModel under `path/<version>/` (TF Serving's layout).

    Args:
      model: a trained `tfflow.FlowModel`.
      path: the model's base directory; created if missing.
      version: the version number; default one more than the largest present.

    Returns:
      The directory written, `path/<version>`. It is written to a temporary
      name first and renamed, so a crash never leaves a half-written version
      where TF Serving would load it.
    """
    if not isinstance(model, FlowModel):
        raise ValueError(f"export_saved_model: expected a tfflow.FlowModel, got "
                         f"{type(model).__name__}.")
    base = pathlib.Path(path)
    base.mkdir(parents=True, exist_ok=True)
    version = _next_version(base) if version is None else int(version)
    target = base / str(version)
    if target.exists():
        raise ValueError(f"export_saved_model: {target} already exists; choose another "
                         f"version or remove it.")
    module = _ServingModule(model)
    signatures = _signature_functions(module)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{version}-", dir=base))
    try:
        tf.saved_model.save(module, str(staging), signatures=signatures)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
