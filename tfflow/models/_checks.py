"""Input checks for `FlowModel` and its SavedModel export: every bad input, one clear error.

One set of rules, applied wherever data enters a model (`model(x)`,
`predict`, `evaluate`, `log_prob`, `bits_per_dim`, `encode`, `decode`,
`sample`, `interpolate`, `initialize`, `fit`'s data and the exported
signatures):

* `x`: a floating dtype; shape `[batch, *event_shape]` (the scoring methods,
  `log_prob`, `bits_per_dim`, `encode`, `decode`, take more leading batch
  dimensions, `[*batch, *event_shape]`, as TFP does); at least one example;
  every value finite. For a model with `num_levels` set (quantised data,
  dequantised into [0, 1) as `tfflow.data` does: `x = (k + u) / B`) every value
  must also lie in a range: what the model trains on (`fit`, `initialize`) in
  [0, 1], give or take `RANGE_TOLERANCE` (`training_range`); what it scores in
  the wider `scoring_range`, which takes the model's own samples and still
  refuses data on the integer scale 0..B-1.
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
never compiles (`checked_data`); generators and `PyDataset`s are checked
batch by batch in Python before Keras reads them.

Every message starts with the object that rejects the input (e.g.
`FlowModel.log_prob:`), then says what was expected and what it got.
"""

from __future__ import annotations

import operator
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

from tfflow._rules import is_count, is_temperature

__all__: list = []  # private to tfflow

RANGE_TOLERANCE = 1e-3


class ValueRange(NamedTuple):
    """Allowed values [low, high], as shown in messages (`shown`), and why."""

    low: float
    high: float
    shown: str
    why: str


def _dims(shape) -> str:
    return ", ".join("None" if d is None else str(d) for d in shape)


def training_range(num_levels: int | None) -> ValueRange | None:
    """What a model with `num_levels` trains on (`fit`, `initialize`); None for continuous data.

    Dequantised data lie in [0, 1) (`x = (k + u) / B`); the 1e-3 slack allows
    rounding in a user's own scaling (`x / 255` in float16). Pixels in [0, 255]
    or [-1, 1] are the usual mistake, caught here before they shape a model.
    """
    if not num_levels:
        return None
    return ValueRange(-RANGE_TOLERANCE, 1. + RANGE_TOLERANCE, "[0, 1]",
                      f"the model has num_levels={num_levels}: data quantised to {num_levels} "
                      f"levels and dequantised into [0, 1), e.g. (k + u) / {num_levels} as "
                      f"tfflow.data does, with {RANGE_TOLERANCE:g} slack for rounding")


def scoring_range(num_levels: int | None, domain=None) -> ValueRange | None:
    """What a model scores (`log_prob`, `predict`, `encode`, the export); None if anything.

    Wider than `training_range`: a flow's own samples stray past [0, 1] (the
    default Glow on digits, 20,000 samples: [-0.41, 1.68] at T = 1, [-0.55,
    1.94] at T = 1.2; a fresh tiny Glow at T = 1.5 reached 2.4), and
    `log_prob(model.sample(n))` must work. The one mistake the range still
    catches is data on the integer scale [0, B - 1] (pixels in [0, 255]): it
    allows half that scale around [0, 1] (at least 2), so [0, 1] +- 8 for
    B = 17 and +- 127.5 for B = 256, and a batch with a value beyond is on the
    wrong scale. ([-1, 1]-scaled data pass here; `fit` refuses them.) The
    range never exceeds the flow's `domain` (`FlowLayer.data_domain`: a
    RealNVP's logit preprocessing is undefined past [-0.056, 1.056]).
    """
    if not num_levels:
        return None
    half = max(num_levels / 2., 2.)
    low, high = 0.5 - half, 0.5 + half
    why = (f"the model has num_levels={num_levels}: data dequantised into [0, 1), or the "
           f"model's own samples, which stray past it; a value beyond means data on the "
           f"integer scale 0..{num_levels - 1}")
    if domain is not None and (domain[0] > low or domain[1] < high):
        low, high, why = max(low, domain[0]), min(high, domain[1]), \
            f"the model has num_levels={num_levels}; {domain[2]}"
    return ValueRange(low, high, f"[{low:.4g}, {high:.4g}]", why)


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


def floating(owner: str, what: str, value: Any, dtype, *, cast: bool = True) -> tf.Tensor:
    """`value` as a tensor of `dtype` (or its own floating dtype if not `cast`).

    An integer, bool or string input is an error.
    """
    tensor, given = _converted(owner, value, dtype, f"{what} as floating point numbers of "
                                                    f"dtype {tf.as_dtype(dtype).name}")
    if not given.is_floating:
        raise ValueError(f"{owner}: expected {what} as floating point data of dtype "
                         f"{tf.as_dtype(dtype).name}, got {given.name}.")
    return tf.cast(tensor, dtype) if cast else tensor


def batch_shape(owner: str, what: str, tensor: tf.Tensor, event_shape, *,
                leading: bool = False) -> None:
    """`tensor` must be `[batch, *event_shape]` with batch != 0 where known.

    With `leading`, any number (at least one) of leading batch dimensions is
    allowed, `[*batch, *event_shape]`, as TFP's `log_prob` takes them (the
    entry points that score or map examples: `log_prob`, `bits_per_dim`,
    `encode`, `decode`); none of them may be 0. A single example without a
    batch dimension stays an error: it is ambiguous with a batch of vectors.
    """
    shape = tensor.shape
    if shape.rank is None:
        return
    event_ndims = len(event_shape)
    rank_ok = shape.rank >= event_ndims + 1 if leading else shape.rank == event_ndims + 1
    if not rank_ok or not shape[shape.rank - event_ndims:].is_compatible_with(event_shape):
        more = f" (or more leading batch dimensions, [*batch, {_dims(event_shape)}])" \
            if leading else ""
        raise ValueError(f"{owner}: expected {what} of shape [batch, {_dims(event_shape)}]{more}, "
                         f"got {shape.as_list()}.")
    if 0 in shape[:shape.rank - event_ndims].as_list():
        raise ValueError(f"{owner}: expected a batch of at least one example, got {what} of "
                         f"shape {shape.as_list()}.")


# --- Value checks: ValueError eagerly, InvalidArgumentError in a traced function -------------

def values(owner: str, what: str, tensor: tf.Tensor,
           value_range: ValueRange | None = None) -> tf.Tensor:
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
        low, high, shown, why = value_range
        in_range = tf.reduce_all(_inside(tensor, value_range))
        # Non-finite values are reported by the check above, not as out of range.
        checks.append(tf.debugging.Assert(in_range | tf.logical_not(all_finite), [
            f"{owner}: expected {what} in {shown} ({why}), got values from",
            tf.reduce_min(tensor), "to", tf.reduce_max(tensor)]))
    with tf.control_dependencies(checks):
        return tf.identity(tensor)


def _inside(tensor: tf.Tensor, value_range: ValueRange) -> tf.Tensor:
    """bool, elementwise: `value_range.low <= tensor <= value_range.high`."""
    return (tensor >= tf.cast(value_range.low, tensor.dtype)) & \
        (tensor <= tf.cast(value_range.high, tensor.dtype))


def valid_rows(tensor: tf.Tensor, value_range: ValueRange | None = None) -> tf.Tensor:
    """bool [N]: the rows of `tensor` [N, ...] that pass `values` (finite, in `value_range`).

    The per-row form of the rule, for answers per row (the SavedModel's signatures).
    """
    ok = tf.math.is_finite(tensor)
    if value_range is not None:
        ok &= _inside(tensor, value_range)
    return tf.reduce_all(tf.reshape(ok, [tf.shape(tensor)[0], -1]), axis=1)


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
    low, high, shown, why = value_range
    if lowest < low or highest > high:
        outside = int(tf.reduce_sum(tf.cast((tensor < low) | (tensor > high), tf.int64)))
        raise ValueError(f"{owner}: expected {what} in {shown} ({why}), got values from "
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
    if number is None or not is_count(number, minimum):
        raise ValueError(f"{message} {value!r}.")
    return number


def sample_shape(owner: str, value: Any) -> tuple:
    """`sample`'s first argument, TFP's way: an integer n or a shape of them -> a tuple.

    `n` (an int >= 1, or a traced integer scalar, checked by `count`) gives
    `(n,)`; a tuple, list, `tf.TensorShape` or 1-D array of ints >= 1 gives
    itself as a tuple of Python ints; `()` is one draw without a sample axis.
    Anything else (a 0 in the shape, a float, a nested list) is a `ValueError`.
    """
    if isinstance(value, tf.TensorShape):
        value = value.as_list()
    try:
        ndim = 0 if _traced_scalar(value) is not None and value.shape.rank == 0 \
            else np.ndim(value)
    except ValueError:  # a ragged nested list
        ndim = None
    if ndim == 0:
        return (count(owner, "n", value),)
    try:
        dims = [operator.index(d) for d in np.asarray(value).tolist()] if ndim == 1 else None
    except (TypeError, NotImplementedError):  # floats; a traced shape (not a concrete one)
        dims = None
    if dims is None or any(d < 1 for d in dims):
        raise ValueError(f"{owner}: expected n an integer >= 1 or a sample shape of them, got "
                         f"{value!r}.")
    return tuple(dims)


def temperature(owner: str, value: Any):
    """A finite number >= 0 (0 decodes the latent mode; negative is a sign error).

    A concrete value comes back as a Python float or raises `ValueError`; a
    traced tensor comes back gated on an `Assert` (`InvalidArgumentError`).
    """
    message = f"{owner}: expected temperature a finite number >= 0, got"
    traced = _traced_scalar(value)
    if traced is not None:
        return _asserted(traced, tf.math.is_finite(traced) & (traced >= 0.), message)
    if not is_temperature(value):  # tfflow._rules owns the rule (tfflow-sample's too)
        raise ValueError(f"{message} {value!r}.")
    return float(value)


def seed(owner: str, value: tf.Tensor | None) -> tf.Tensor | None:
    """A stateless seed must be two integers."""
    if value is not None and value.shape != [2]:
        raise ValueError(f"{owner}: expected seed an int or a pair of ints, got shape "
                         f"{value.shape.as_list()}.")
    return value


# --- Data given to fit / evaluate / predict --------------------------------------------------

def graph_batch(model, data, owner: str, value_range: ValueRange | None):
    """Checks one batch `x`, `(x, labels)` or `(x, context)`; the same structure comes back.

    Eagerly (a generator's or `PyDataset`'s batch) a bad batch raises
    `ValueError`; traced (a tf.data pipeline) the batch is gated on asserts.
    """
    if isinstance(data, (tuple, list)) and len(data) == 1 and isinstance(data[0], (tuple, list)):
        return type(data)([graph_batch(model, data[0], owner, value_range)])
    if isinstance(data, (tuple, list)):
        x, rest = data[0], list(data[1:])
    else:
        x, rest = data, None
    # The pipeline keeps the data's own float dtype; the step casts it.
    x = floating(owner, "x", x, model.dtype_name, cast=False)
    batch_shape(owner, "x", x, model.event_shape)
    x = values(owner, "x", x, value_range)
    if rest is None:
        return x
    if model.num_classes and rest and rest[0] is not None:
        rest[0] = labels(owner, rest[0], model.num_classes, tf.shape(x)[0])
    if model.context_shape is not None and rest and rest[0] is not None:
        rest[0] = context(owner, rest[0], model.context_shape, model.dtype_name, tf.shape(x)[0])
    return type(data)([x] + rest) if isinstance(data, list) else tuple([x] + rest)


def context(owner: str, value: Any, context_shape, dtype, batch=None) -> tf.Tensor:
    """A context `[batch, *context_shape]`: floating, finite, one row per example if `batch`."""
    tensor = floating(owner, "context", value, dtype)
    batch_shape(owner, "context", tensor, context_shape)
    tensor = values(owner, "context", tensor)
    return tensor if batch is None else rows(owner, "context", tensor, batch)


def _checked_generator(model, generator, owner: str, value_range):
    """Yields the generator's batches unchanged, each checked eagerly first (`ValueError`)."""
    for index, batch in enumerate(generator):
        _checked_eagerly(model, batch, owner, value_range, f"batch {index} of the generator")
        yield batch


def _checked_eagerly(model, batch, owner: str, value_range, where: str) -> None:
    try:
        graph_batch(model, batch, owner, value_range)
    except ValueError as error:
        raise ValueError(f"{error} (in {where})") from None


def _checked_py_dataset(model, dataset, owner: str, value_range):
    """`dataset` (a `keras.utils.PyDataset`) with each batch checked when Keras reads it."""
    import keras  # the models package imports Keras already; this module stays light

    class CheckedPyDataset(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=dataset.workers,
                             use_multiprocessing=dataset.use_multiprocessing,
                             max_queue_size=dataset.max_queue_size)

        def __len__(self):
            return len(dataset)

        @property
        def num_batches(self):
            return dataset.num_batches

        def __getitem__(self, index):
            batch = dataset[index]
            _checked_eagerly(model, batch, owner, value_range,
                             f"batch {index} of the {type(dataset).__name__}")
            return batch

        def on_epoch_begin(self):
            dataset.on_epoch_begin()

        def on_epoch_end(self):
            dataset.on_epoch_end()

    return CheckedPyDataset()


def checked_data(model, x, y, kwargs: dict, method: str = "fit"):
    """`fit`'s (`evaluate`'s, `predict`'s) arguments with the data checked where XLA cannot skip it.

    Arrays are checked at once (`ValueError`). A `tf.data.Dataset` gets a
    checking `map` (tf.data is never XLA-compiled, so this works under
    `jit_compile=True` and any strategy; errors are `InvalidArgumentError`s
    raised when the bad batch is read). A Python generator and a
    `keras.utils.PyDataset` are wrapped so that each batch is checked eagerly
    (`ValueError` naming the batch) before Keras hands it to the step.
    """
    import inspect

    import keras

    owner = f"FlowModel.{method}"
    value_range = model.value_range(method)

    def check(data):
        if isinstance(data, tf.data.Dataset):
            structured = isinstance(data.element_spec, (tuple, list))

            # Not converted by AutoGraph: the checks branch on static facts only, and
            # converting them took 3.4 s of the default model's first step (measured).
            @tf.autograph.experimental.do_not_convert
            def checked(*element):
                return graph_batch(model, element if structured else element[0], owner,
                                   value_range)

            return data.map(checked, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if isinstance(data, keras.utils.PyDataset):
            return _checked_py_dataset(model, data, owner, value_range)
        if inspect.isgenerator(data):
            return _checked_generator(model, data, owner, value_range)
        if isinstance(data, (tuple, list)) and data and \
                isinstance(data[0], (np.ndarray, tf.Tensor)):
            # (x, labels) or (x, context) arrays
            graph_batch(model, tuple(data), owner, value_range)
        elif isinstance(data, (np.ndarray, tf.Tensor)):
            graph_batch(model, data, owner, value_range)
        return data

    def check_arrays_or_dataset(data, second):
        if second is not None and isinstance(data, (np.ndarray, tf.Tensor)) and \
                isinstance(second, (np.ndarray, tf.Tensor, list)) and \
                (model.num_classes or model.context_shape is not None):
            graph_batch(model, (data, second), owner, value_range)
            return data
        return check(data)

    x = check_arrays_or_dataset(x, y)
    validation = kwargs.get("validation_data")
    if isinstance(validation, tf.data.Dataset):
        kwargs = dict(kwargs, validation_data=check(validation))
    elif isinstance(validation, (tuple, list)) and validation:
        check_arrays_or_dataset(validation[0], validation[1] if len(validation) > 1 else None)
    return x, y, kwargs
