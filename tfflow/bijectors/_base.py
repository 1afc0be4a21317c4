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

from typing import Any

import tensorflow as tf
from tensorflow_probability import bijectors as tfb
from tensorflow_probability.python.internal import cache_util

__all__ = ["FlowBijector"]


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
    """Base class of tfflow's bijectors.

    Subclasses implement `_forward_and_log_det(x) -> (y, fldj)` and
    `_inverse_and_log_det(y) -> (x, ildj)`, each log-det at
    `forward_min_event_ndims`, and may override `_forward_log_det_jacobian` /
    `_inverse_log_det_jacobian` where the log-det is cheaper alone (a constant
    Jacobian). Instances compare and hash by identity.
    """

    def _get_parameterization(self):
        return id(self)

    @property
    def _cache(self):
        if tf.executing_eagerly() and any(
                _is_variable(v) for v in tf.nest.flatten(
                    self.parameters or {}, expand_composites=False)):
            return _UncachedCalls(self)
        return _GREEDY_CACHE.__get__(self, type(self))

    # Subclass hooks -----------------------------------------------------------
    def _forward_and_log_det(self, x):
        raise NotImplementedError(f"{type(self).__name__}: _forward_and_log_det")

    def _inverse_and_log_det(self, y):
        raise NotImplementedError(f"{type(self).__name__}: _inverse_and_log_det")

    # TFP hooks derived from them ----------------------------------------------
    def _forward_with_attrs(self, x):
        y, fldj = self._forward_and_log_det(x)
        # TFP keeps one log-det per cache edge, always as the inverse one.
        return y, {"ildj": -fldj}

    def _inverse_with_attrs(self, y):
        x, ildj = self._inverse_and_log_det(y)
        return x, {"ildj": ildj}

    def _forward(self, x):
        return self._forward_and_log_det(x)[0]

    def _inverse(self, y):
        return self._inverse_and_log_det(y)[0]

    def _forward_log_det_jacobian(self, x):
        attrs = self._cache.forward_attributes(x)
        if "ildj" in attrs:
            return -attrs["ildj"]
        return self._forward_and_log_det(x)[1]

    def _inverse_log_det_jacobian(self, y):
        attrs = self._cache.inverse_attributes(y)
        if "ildj" in attrs:
            return attrs["ildj"]
        return self._inverse_and_log_det(y)[1]


def common_dtype(values, dtype_hint=tf.float32) -> tf.DType:
    """The float dtype shared by the parameters (Keras variables' string dtypes too)."""
    dtypes = {tf.as_dtype(v.dtype) for v in values if v is not None and hasattr(v, "dtype")}
    if len(dtypes) > 1:
        raise ValueError(f"expected parameters of one dtype, got {sorted(d.name for d in dtypes)}.")
    return dtypes.pop() if dtypes else dtype_hint


def as_parameter(value, dtype: tf.DType, name: str):
    """Keeps variables by reference (read at every call), converts everything else once."""
    if _is_variable(value):
        if tf.as_dtype(value.dtype) != dtype:
            raise ValueError(f"parameter `{name}` has dtype {value.dtype}, expected {dtype.name}.")
        return value
    return tf.convert_to_tensor(value, dtype=dtype, name=name)


def read(value) -> tf.Tensor:
    """The current value of a parameter stored by `as_parameter`."""
    return tf.convert_to_tensor(value)
