"""Input checks for `FlowModel` and its SavedModel export: every bad input, one clear error.

One set of rules, applied wherever data enters a model (`log_prob`,
`bits_per_dim`, `encode`, `decode`, `sample`, `interpolate`, `initialize`,
`fit`'s data and the exported signatures):

* `x`: a floating dtype; shape `[batch, *event_shape]`; at least one example;
  every value finite. For a model with `num_levels` set (quantised data,
  dequantised into [0, 1) as `tfflow.data` does: `x = (k + u) / B`) every value
  must also lie in [0, 1], give or take `RANGE_TOLERANCE` (rounding in a user's
  own scaling, e.g. `x / 255` computed in float16). Pixels in [0, 255] or
  [-1, 1] are the usual mistake, and the model's density there is meaningless.
  Continuous models (tabular, 2-D) have no range: only finiteness applies.
* `labels` (class-conditional models only; others ignore them): an integer
  dtype, one per example (shape `[batch]`; a scalar is repeated), values in
  `[0, num_classes)`.
* `z` (`decode`): a floating dtype, shape `[batch, *latent_shape]`, finite.

Static facts (dtype, rank, event shape, a known batch of 0) raise `ValueError`
at once, also while tracing. Values raise `ValueError` when the caller runs
eagerly; inside a traced function (a compiled train step, the tf.data pipeline,
an exported signature) they become `tf.debugging.Assert` ops that raise
`tf.errors.InvalidArgumentError` when run. XLA compiles `Assert` to a no-op
(measured), so `fit` also checks its data in the tf.data pipeline, which XLA
never compiles (`checked_fit_data`).

Every message starts with the object that rejects the input (e.g.
`FlowModel.log_prob:`), then says what was expected and what it got.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import tensorflow as tf

__all__: list = []  # private to tfflow

RANGE_TOLERANCE = 1e-3


def _dims(shape) -> str:
    return ", ".join("None" if d is None else str(d) for d in shape)


def data_range(num_levels: int | None) -> tuple[float, float, str] | None:
    """The allowed (low, high) for data of a model with `num_levels`, and why; None if any."""
    if not num_levels:
        return None
    return (-RANGE_TOLERANCE, 1. + RANGE_TOLERANCE,
            f"the model has num_levels={num_levels}: data quantised to {num_levels} levels "
            f"and dequantised into [0, 1), e.g. (k + u) / {num_levels} as tfflow.data does, "
            f"with {RANGE_TOLERANCE:g} slack for rounding")


# --- Static checks (dtype, shape): ValueError, also at trace time -----------------------------

def _converted(owner: str, value: Any, dtype_hint, expected: str) -> tuple[tf.Tensor, tf.DType]:
    """`value` as a tensor, and the dtype it was given in (an error if it does not convert)."""
    # Check the dtype given, not the converted one: `convert_to_tensor` turns an
    # integer numpy array into floats when given a float `dtype_hint`.
    given = getattr(value, "dtype", None)
    try:
        tensor = tf.convert_to_tensor(value, dtype_hint=dtype_hint)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{owner}: expected {expected}, got {type(value).__name__} that does "
                         f"not convert to a tensor ({error}).") from None
    return tensor, (tensor.dtype if given is None else tf.as_dtype(given))


def floating(owner: str, what: str, value: Any, dtype) -> tf.Tensor:
    """`value` as a tensor of `dtype`; an integer, bool or string input is an error."""
    tensor, given = _converted(owner, value, dtype, f"{what} as floating point numbers of "
                                                    f"dtype {tf.as_dtype(dtype).name}")
    if not given.is_floating:
        raise ValueError(f"{owner}: expected {what} as floating point data of dtype "
                         f"{tf.as_dtype(dtype).name}, got {given.name}.")
    return tf.cast(tensor, dtype)


def batch_shape(owner: str, what: str, tensor: tf.Tensor, event_shape) -> None:
    """`tensor` must be `[batch, *event_shape]` with batch != 0 where known."""
    shape = tensor.shape
    if shape.rank is None:
        return
    if shape.rank != len(event_shape) + 1 or not shape[1:].is_compatible_with(event_shape):
        raise ValueError(f"{owner}: expected {what} of shape [batch, {_dims(event_shape)}], "
                         f"got {shape.as_list()}.")
    if shape[0] == 0:
        raise ValueError(f"{owner}: expected a batch of at least one example, got {what} of "
                         f"shape {shape.as_list()}.")


# --- Value checks: ValueError eagerly, InvalidArgumentError in a traced function -------------

def values(owner: str, what: str, tensor: tf.Tensor,
           value_range: tuple[float, float, str] | None = None) -> tf.Tensor:
    """Checks that `tensor` is finite (and in `value_range`); returns it (graph: gated on it)."""
    if tf.executing_eagerly():
        _eager_values(owner, what, tensor, value_range)
        return tensor
    finite = tf.math.is_finite(tensor)
    all_finite = tf.reduce_all(finite)
    checks = [
        tf.debugging.Assert(tf.shape(tensor)[0] > 0, [
            f"{owner}: expected a batch of at least one example, got {what} of shape",
            tf.shape(tensor)]),
        tf.debugging.Assert(all_finite, [
            f"{owner}: expected finite {what} (no NaN or Inf), got this many non-finite values:",
            tf.reduce_sum(tf.cast(tf.logical_not(finite), tf.int32))]),
    ]
    if value_range is not None:
        low, high, why = value_range
        in_range = tf.reduce_all((tensor >= tf.cast(low, tensor.dtype)) &
                                 (tensor <= tf.cast(high, tensor.dtype)))
        # Non-finite values are reported by the check above, not as out of range.
        checks.append(tf.debugging.Assert(in_range | tf.logical_not(all_finite), [
            f"{owner}: expected {what} in [0, 1] ({why}), got values from",
            tf.reduce_min(tensor), "to", tf.reduce_max(tensor)]))
    with tf.control_dependencies(checks):
        return tf.identity(tensor)


def _eager_values(owner, what, tensor, value_range) -> None:
    if tensor.shape[0] == 0:
        raise ValueError(f"{owner}: expected a batch of at least one example, got {what} of "
                         f"shape {tensor.shape.as_list()}.")
    # One host sync for the common (valid) case: x * 0 sums to NaN iff x holds a NaN or Inf.
    probe = tf.stack([tf.reduce_sum(tensor * 0), tf.reduce_min(tensor), tf.reduce_max(tensor)])
    poisoned, lowest, highest = (float(v) for v in probe.numpy())
    if not np.isfinite(poisoned):
        finite = tf.math.is_finite(tensor)
        nans = int(tf.reduce_sum(tf.cast(tf.math.is_nan(tensor), tf.int64)))
        infs = int(tf.reduce_sum(tf.cast(tf.math.is_inf(tensor), tf.int64)))
        first = tf.where(tf.logical_not(finite))[0].numpy().tolist()
        raise ValueError(f"{owner}: expected finite {what}, got {nans} NaN and {infs} Inf "
                         f"value(s) (the first at index {first}).")
    if value_range is None:
        return
    low, high, why = value_range
    if lowest < low or highest > high:
        outside = int(tf.reduce_sum(tf.cast((tensor < low) | (tensor > high), tf.int64)))
        raise ValueError(f"{owner}: expected {what} in [0, 1] ({why}), got values from "
                         f"{lowest:.6g} to {highest:.6g} ({outside} of {int(tf.size(tensor))} "
                         f"outside).")


# --- Labels --------------------------------------------------------------------------------------

def labels(owner: str, value: Any, num_classes: int, batch) -> tf.Tensor:
    """Class labels as int32 `[batch]` (a scalar is repeated), checked against `num_classes`.

    `batch` is the number of examples (an int, or a scalar tensor in a traced function).
    """
    tensor, given = _converted(owner, value, tf.int32, "labels as integer class indices")
    if not given.is_integer:
        raise ValueError(f"{owner}: expected labels as integer class indices in "
                         f"[0, {num_classes}), got dtype {given.name}.")
    tensor = tf.cast(tensor, tf.int32)
    static_batch = tf.get_static_value(batch)
    if tensor.shape.rank == 0:
        tensor = tf.fill(tf.reshape(batch, [1]), tensor)
    elif tensor.shape.rank is not None and tensor.shape.rank != 1:
        raise ValueError(f"{owner}: expected labels of shape [batch] (one class index per "
                         f"example), got {tensor.shape.as_list()}.")
    elif tensor.shape[0] is not None and static_batch is not None and \
            tensor.shape[0] != int(static_batch):
        raise ValueError(f"{owner}: expected one label per example ({int(static_batch)}), got "
                         f"{tensor.shape[0]} labels.")
    if tf.executing_eagerly():
        if tensor.shape[0] and not bool(tf.reduce_all((tensor >= 0) & (tensor < num_classes))):
            bad = tf.boolean_mask(tensor, (tensor < 0) | (tensor >= num_classes))
            raise ValueError(f"{owner}: expected labels in [0, {num_classes}) (the model has "
                             f"num_classes={num_classes}), got {bad.numpy().tolist()[:10]}.")
        return tensor
    checks = [
        tf.debugging.Assert(tf.equal(tf.size(tensor), tf.cast(batch, tf.int32)), [
            f"{owner}: expected one label per example, got this many labels and examples:",
            tf.size(tensor), batch]),
        tf.debugging.Assert(tf.reduce_all((tensor >= 0) & (tensor < num_classes)), [
            f"{owner}: expected labels in [0, {num_classes}) (the model has "
            f"num_classes={num_classes}), got labels from", tf.reduce_min(tensor), "to",
            tf.reduce_max(tensor)]),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(tensor)


# --- Scalars ------------------------------------------------------------------------------------

def rows(owner: str, what: str, tensor: tf.Tensor, batch) -> tf.Tensor:
    """`tensor` whose leading axis must equal `batch` (an int or a scalar tensor)."""
    got, want = tensor.shape[0], tf.get_static_value(batch)
    if got is not None and want is not None:
        if got != int(want):
            raise ValueError(f"{owner}: expected {what} with one row per example ({int(want)} "
                             f"rows), got shape {tensor.shape.as_list()}.")
        return tensor
    return _asserted(tensor, tf.equal(tf.shape(tensor)[0], tf.cast(batch, tf.int32)),
                     f"{owner}: expected {what} with one row per example")


def _traced_scalar(value: Any) -> tf.Tensor | None:
    """`value` as a tensor when it is a symbolic (traced) scalar; None for a concrete value."""
    if tf.is_tensor(value) and not hasattr(value, "numpy"):
        return value
    return None


def _asserted(tensor: tf.Tensor, condition: tf.Tensor, message: str) -> tf.Tensor:
    with tf.control_dependencies([tf.debugging.Assert(condition, [message, tensor])]):
        return tf.identity(tensor)


def count(owner: str, what: str, value: Any, minimum: int = 1):
    """An integer >= `minimum`: the rule for `n`, `steps` and the like, wherever they enter.

    A concrete value (a Python or NumPy number, an eager tensor) comes back as a
    Python int, or raises `ValueError` (an integral float such as 16.0 is
    accepted). A traced tensor (an exported signature's `n`) must be an integer
    dtype and comes back gated on an `Assert` (`InvalidArgumentError` when run).
    """
    message = f"{owner}: expected {what} an integer >= {minimum}, got"
    traced = _traced_scalar(value)
    if traced is not None:
        if not traced.dtype.is_integer:
            raise ValueError(f"{message} dtype {traced.dtype.name}.")
        return _asserted(traced, traced >= minimum, message)
    try:
        number = operator.index(value)
    except TypeError:
        number = int(value) if isinstance(value, float) and value.is_integer() else None
    if number is None or number < minimum:
        raise ValueError(f"{message} {value!r}.")
    return number


def temperature(owner: str, value: Any):
    """A finite number >= 0 (0 decodes the latent mode; negative is a sign error).

    A concrete value comes back as a Python float or raises `ValueError`; a
    traced tensor comes back gated on an `Assert` (`InvalidArgumentError`).
    """
    message = f"{owner}: expected temperature a finite number >= 0, got"
    traced = _traced_scalar(value)
    if traced is not None:
        return _asserted(traced, tf.math.is_finite(traced) & (traced >= 0.), message)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not np.isfinite(number) or number < 0:
        raise ValueError(f"{message} {value!r}.")
    return number


def seed(owner: str, value: tf.Tensor | None) -> tf.Tensor | None:
    """A stateless seed must be two integers."""
    if value is not None and value.shape != [2]:
        raise ValueError(f"{owner}: expected seed an int or a pair of ints, got shape "
                         f"{value.shape.as_list()}.")
    return value


# --- fit's data ----------------------------------------------------------------------------------

def graph_batch(model, data, owner: str):
    """Checks one batch `x` or `(x, labels, ...)` in a traced function; same structure back."""
    if isinstance(data, (tuple, list)):
        x, rest = data[0], list(data[1:])
    else:
        x, rest = data, None
    x = floating(owner, "x", x, getattr(x, "dtype", model.dtype_name))
    batch_shape(owner, "x", x, model.event_shape)
    x = values(owner, "x", x, data_range(model.num_levels))
    if rest is None:
        return x
    if model.num_classes and rest and rest[0] is not None:
        rest[0] = labels(owner, rest[0], model.num_classes, tf.shape(x)[0])
    return type(data)([x] + rest) if isinstance(data, list) else tuple([x] + rest)


def checked_fit_data(model, x, y, kwargs: dict):
    """`fit`'s arguments with the data checked where XLA cannot skip it.

    A `tf.data.Dataset` gets a checking `map` (tf.data is never XLA-compiled,
    so this works under `jit_compile=True` and any strategy; errors are
    `InvalidArgumentError`s raised when the bad batch is read). Arrays are
    checked at once (`ValueError`). Other inputs (generators, `PyDataset`)
    are checked inside the train step, which XLA compiles without its asserts.
    """
    owner = "FlowModel.fit"

    def check(data):
        if isinstance(data, tf.data.Dataset):
            structured = isinstance(data.element_spec, (tuple, list))
            return data.map(lambda *element: graph_batch(
                model, element if structured else element[0], owner),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if isinstance(data, (np.ndarray, tf.Tensor)):
            tensor = floating(owner, "x", data, getattr(data, "dtype", model.dtype_name))
            batch_shape(owner, "x", tensor, model.event_shape)
            values(owner, "x", tensor, data_range(model.num_levels))
        return data

    def check_arrays_or_dataset(data, labels_):
        data = check(data)
        if (model.num_classes and labels_ is not None and
                isinstance(data, (np.ndarray, tf.Tensor)) and
                isinstance(labels_, (np.ndarray, tf.Tensor, list))):
            labels(owner, labels_, model.num_classes, int(data.shape[0]))
        return data

    x = check_arrays_or_dataset(x, y)
    validation = kwargs.get("validation_data")
    if isinstance(validation, tf.data.Dataset):
        kwargs = dict(kwargs, validation_data=check(validation))
    elif isinstance(validation, (tuple, list)) and validation:
        check_arrays_or_dataset(validation[0], validation[1] if len(validation) > 1 else None)
    return x, y, kwargs
