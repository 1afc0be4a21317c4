"""Plumbing shared by tfflow's bijectors: one pass for value and log-det, a safe cache.

Two facts about TFP 0.25 shape this module.

* TFP keys its global bijector cache on a bijector's parameters. Two bijectors
  built from the same variables compare equal, so after the variables change a
  cached `inverse`/log-det for an input tensor that is passed again comes back
  stale (measured in eager mode). tfflow bijectors therefore compare and hash by
  identity, and an instance that holds a variable skips the cache in eager mode,
  where values can change between calls. Inside `tf.function` the cache stays on.
* `TransformedDistribution.log_prob` calls `inverse(y)` and then
  `inverse_log_det_jacobian(y)`. For a coupling both need the conditioner
  network, so each subclass computes value and log-det together
  (`_forward_and_log_det`, `_inverse_and_log_det`) and the log-det is stored in
  the cache entry of the value (TFP's "greedy attributes" cache), so the
  network runs once per direction.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import tensorflow as tf
from tensorflow_probability import bijectors as tfb
from tensorflow_probability.python.internal import cache_util

from tfflow.bijectors import _validation

__all__ = ["ConditionedBijector", "FlowBijector"]

#: A conditioner network: the conditioning input -> the transform's parameters.
Conditioner = Callable[[tf.Tensor], tf.Tensor]


def _is_variable(value: Any) -> bool:
    """True for a `tf.Variable` or a Keras 3 variable (which is not a tf.Variable)."""
    if isinstance(value, tf.Variable):
        return True
    return hasattr(value, "assign") and hasattr(value, "value") and hasattr(value, "trainable")


class _UncachedCalls:
    """Stand-in for TFP's bijector cache that computes and stores nothing."""

    def __init__(self, bijector: tfb.Bijector):
        self._bijector = bijector

    def forward(self, x, **kwargs):
        return self._bijector._forward(x, **kwargs)  # pylint: disable=protected-access

    def inverse(self, y, **kwargs):
        return self._bijector._inverse(y, **kwargs)  # pylint: disable=protected-access

    def forward_attributes(self, x, **kwargs):
        del x, kwargs
        return {}

    def inverse_attributes(self, y, **kwargs):
        del y, kwargs
        return {}


_GREEDY_CACHE = cache_util.BijectorCacheWithGreedyAttrs(
    forward_name="_forward_with_attrs", inverse_name="_inverse_with_attrs")


class FlowBijector(tfb.Bijector):
    """Base class of tfflow's bijectors: input validation, parameters, one pass per direction.

    Subclasses implement `_forward_and_log_det(x) -> (y, fldj)` and
    `_inverse_and_log_det(y) -> (x, ildj)`, each log-det at
    `forward_min_event_ndims`, and may implement `_forward_log_det(x)` /
    `_inverse_log_det(y)` where the log-det is cheaper alone (a constant
    Jacobian). All four receive inputs that have passed `_validate_input`.
    Instances compare and hash by identity.

    Validation (one hook, `_validate_input(x, inverse=...)`, run on the input
    of every direction and of the log-dets): static facts raise `ValueError`
    naming the bijector, at call or trace time; values are asserted at run time
    under `validate_args=True` only (`InvalidArgumentError`). The base checks
    the event rank, the channel count given as `channels=` to `__init__`, and
    finiteness; subclasses extend it by overriding and calling `super()` first.

    Parameters: `_convert_parameters(loc=..., log_scale=...)` converts them to
    one float dtype (variables are kept by reference and read at every call).
    """

    def __init__(self, *, channels: int | None = None, **kwargs):
        """Builds the bijector.

        Args:
          channels: the static size of the last input axis that this bijector's
            parameters fix (checked by `_validate_input`), or None for any.
          **kwargs: `tfp.bijectors.Bijector`'s arguments
            (`forward_min_event_ndims`, `validate_args`, `parameters`, ...).
        """
        self._input_channels = None if channels is None else int(channels)
        super().__init__(**kwargs)

    def _get_parameterization(self):
        return id(self)

    @property
    def _cache(self):
        if tf.executing_eagerly() and any(
                _is_variable(v) for v in tf.nest.flatten(
                    self.parameters or {}, expand_composites=False)):
            return _UncachedCalls(self)
        return _GREEDY_CACHE.__get__(self, type(self))

    # The validation hook ------------------------------------------------------
    def _validate_input(self, x: tf.Tensor, *, inverse: bool) -> tf.Tensor:
        """Checks an input of `inverse` (`inverse=True`) or of `forward`; returns it.

        Static: rank >= the event rank and, when the bijector was built with
        `channels`, that many channels on the last axis (`ValueError`). Under
        `validate_args`: no NaN or Inf (`InvalidArgumentError` at run time; the
        returned tensor carries the assertion). Subclasses that know more (a
        partition, divisibility, a range) override this, call `super()` first
        and add their checks to what it returns.
        """
        owner = type(self).__name__
        ndims = self.inverse_min_event_ndims if inverse else self.forward_min_event_ndims
        if isinstance(ndims, int):
            _validation.check_rank(owner, x, ndims)
        _validation.check_channels(owner, x, self._input_channels)
        return _validation.with_finite_check(owner, x, self.validate_args)

    # Parameter conversion -----------------------------------------------------
    def _convert_parameters(self, *, dtype: tf.DType | None = None,
                            **values: Any) -> tuple[tf.DType, tuple]:
        """`(dtype, converted values in the order given)` for this bijector's parameters.

        Without `dtype`, the float parameters must share one dtype (float32 if
        none has one); with it (e.g. `tf.int32` for a permutation) each must
        have that dtype or convert to it. Variables are kept by reference (read
        at every call with `read`); None stays None (an optional parameter).
        Errors name this bijector and the parameter.
        """
        owner = type(self).__name__
        if dtype is None:
            dtype = common_dtype(values, owner=owner)
        converted = tuple(None if value is None else as_parameter(value, dtype, name, owner=owner)
                          for name, value in values.items())
        return dtype, converted

    # Subclass hooks -----------------------------------------------------------
    def _forward_and_log_det(self, x):
        raise NotImplementedError(f"{type(self).__name__}: _forward_and_log_det")

    def _inverse_and_log_det(self, y):
        raise NotImplementedError(f"{type(self).__name__}: _inverse_and_log_det")

    def _forward_log_det(self, x):
        """The forward log-det of a validated `x`; override where it is cheaper alone."""
        return self._forward_and_log_det(x)[1]

    def _inverse_log_det(self, y):
        """The inverse log-det of a validated `y`; override where it is cheaper alone."""
        return self._inverse_and_log_det(y)[1]

    # TFP hooks derived from them ----------------------------------------------
    def _forward_with_attrs(self, x):
        y, fldj = self._forward_and_log_det(self._validate_input(x, inverse=False))
        # TFP keeps one log-det per cache edge, always as the inverse one.
        return y, {"ildj": -fldj}

    def _inverse_with_attrs(self, y):
        x, ildj = self._inverse_and_log_det(self._validate_input(y, inverse=True))
        return x, {"ildj": ildj}

    def _forward(self, x):
        return self._forward_and_log_det(self._validate_input(x, inverse=False))[0]

    def _inverse(self, y):
        return self._inverse_and_log_det(self._validate_input(y, inverse=True))[0]

    def _forward_log_det_jacobian(self, x):
        attrs = self._cache.forward_attributes(x)
        if "ildj" in attrs:
            return -attrs["ildj"]
        return self._forward_log_det(self._validate_input(x, inverse=False))

    def _inverse_log_det_jacobian(self, y):
        attrs = self._cache.inverse_attributes(y)
        if "ildj" in attrs:
            return attrs["ildj"]
        return self._inverse_log_det(self._validate_input(y, inverse=True))

    # Public log-dets: TFP checks the input's rank before any hook runs, with a
    # message that does not say which bijector complained; check it here first.
    def forward_log_det_jacobian(self, x, event_ndims=None, name="forward_log_det_jacobian",
                                 **kwargs):
        self._check_log_det_input(x, event_ndims, self.forward_min_event_ndims)
        return super().forward_log_det_jacobian(x, event_ndims=event_ndims, name=name,
                                                **kwargs)

    def inverse_log_det_jacobian(self, y, event_ndims=None, name="inverse_log_det_jacobian",
                                 **kwargs):
        self._check_log_det_input(y, event_ndims, self.inverse_min_event_ndims)
        return super().inverse_log_det_jacobian(y, event_ndims=event_ndims, name=name,
                                                **kwargs)

    def _check_log_det_input(self, x, event_ndims, min_event_ndims) -> None:
        """`ValueError` naming this bijector for a static `event_ndims` or rank too small."""
        owner = type(self).__name__
        ndims = min_event_ndims if event_ndims is None else tf.get_static_value(event_ndims)
        if ndims is None or not isinstance(min_event_ndims, int):
            return
        if int(ndims) < min_event_ndims:
            raise ValueError(f"{owner}: expected event_ndims >= {min_event_ndims}, "
                             f"got event_ndims={int(ndims)}.")
        shape = tf.TensorShape(x.shape if hasattr(x, "shape") else np.shape(x))
        _validation.check_rank(owner, shape, int(ndims))


def common_dtype(values, dtype_hint=tf.float32, *, owner: str = "tfflow") -> tf.DType:
    """The float dtype shared by the parameters (Keras variables' string dtypes too).

    `values` is a list, or a dict `{name: value}` so that an error can say which
    parameter has which dtype; `owner` (the bijector's class name) starts the message.
    """
    named = values if isinstance(values, dict) else dict(enumerate(values))
    dtypes = {what: tf.as_dtype(v.dtype) for what, v in named.items()
              if v is not None and hasattr(v, "dtype")}
    if len(set(dtypes.values())) > 1:
        got = ", ".join(f"{what}: {d.name}" if isinstance(what, str) else d.name
                        for what, d in dtypes.items())
        raise ValueError(f"{owner}: expected parameters of one dtype, got {got}.")
    return next(iter(dtypes.values())) if dtypes else dtype_hint


def as_parameter(value, dtype: tf.DType, name: str, *, owner: str = "tfflow"):
    """Keeps variables by reference (read at every call), converts everything else once."""
    if _is_variable(value):
        if tf.as_dtype(value.dtype) != dtype:
            raise ValueError(f"{owner}: expected parameter `{name}` of dtype {dtype.name}, "
                             f"got {tf.as_dtype(value.dtype).name}.")
        return value
    return tf.convert_to_tensor(value, dtype=dtype, name=name)


def read(value) -> tf.Tensor:
    """The current value of a parameter stored by `as_parameter`."""
    return tf.convert_to_tensor(value)


class ConditionedBijector(FlowBijector):
    """A bijector whose parameters a conditioner network computes (couplings, autoregressive).

    Holds the conditioner (any callable; checked here, once) and exposes it as
    `conditioner`. A conditional model fixes its context inside the callable.
    """

    def __init__(self, conditioner: Conditioner, *, dtype, **kwargs):
        """Builds the bijector.

        Args:
          conditioner: callable from the conditioning input to the parameters.
          dtype: the dtype of the bijector's inputs.
          **kwargs: `FlowBijector`'s arguments.
        """
        if not callable(conditioner):
            raise ValueError(f"{type(self).__name__}: conditioner must be callable, "
                             f"got {conditioner!r}.")
        self._conditioner = conditioner
        super().__init__(dtype=tf.as_dtype(dtype), **kwargs)

    @property
    def conditioner(self) -> Conditioner:
        return self._conditioner
