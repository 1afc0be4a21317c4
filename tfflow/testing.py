"""Checks that a bijector is exactly right, for tfflow's bijectors and yours.

`check_bijector(bijector, x)` asserts, at points `x` in the forward domain:

* finite: forward, inverse and both log-dets are finite;
* round trip: `inverse(forward(x)) == x`;
* log-det consistency: `forward_log_det_jacobian(x) == -inverse_log_det_jacobian(forward(x))`;
* log-det against autodiff: `forward_log_det_jacobian(x) == log|det J(x)|`, where
  `J` is the Jacobian of the flattened event computed by `tf.GradientTape`
  (use float64 inputs and parameters: float32 Jacobians of ill-conditioned maps
  are off by 1e-2);
* both log-dets are checked twice: right after the value they belong to
  (`forward(x)` then `forward_log_det_jacobian(x)`, `inverse(y)` then
  `inverse_log_det_jacobian(y)`, as `TransformedDistribution.log_prob` calls
  them: TFP's cache may then answer with a log-det computed together with the
  value), and alone, on tensors the cache has never seen;
* not the identity: `forward(x) != x` or a non-zero log-det.

Each failure is an `AssertionError` naming the bijector and the property. The
computation runs eagerly by default; pass `runner=in_function(...)` to run it
inside `tf.function`, with a `None` batch dimension, or under XLA.

Example:

    >>> import tensorflow as tf
    >>> import tensorflow_probability as tfp
    >>> import tfflow
    >>> x = tf.constant([[0.5, -1.0], [2.0, 0.1]], tf.float64)
    >>> tfflow.testing.check_bijector(tfp.bijectors.Exp(), x)
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf
from tensorflow_probability import bijectors as tfb

__all__ = [
    "BijectorReport",
    "EAGER",
    "Runner",
    "check_bijector",
    "evaluate_bijector",
    "in_function",
]


@dataclasses.dataclass(frozen=True)
class Runner:
    """How `check_bijector` runs its computation: eagerly or traced."""

    traced: bool = False
    unknown_batch: bool = False
    jit_compile: bool = False

    def run(self, fn: Callable, x: tf.Tensor, event_ndims: int):
        if not self.traced:
            return fn(x)
        shape = x.shape.as_list()
        batch_rank = len(shape) - event_ndims
        if self.unknown_batch:
            shape = [None] * batch_rank + shape[batch_rank:]
        traced = tf.function(fn, input_signature=[tf.TensorSpec(shape, x.dtype)],
                             jit_compile=self.jit_compile, reduce_retracing=False)
        return traced(x)

    def __str__(self):
        if not self.traced:
            return "eager"
        parts = ["tf.function", "batch=None" if self.unknown_batch else "static batch"]
        if self.jit_compile:
            parts.append("jit_compile")
        return ", ".join(parts)


EAGER = Runner()


def in_function(*, unknown_batch: bool = False, jit_compile: bool = False) -> Runner:
    """A runner that traces the checks in `tf.function`.

    Args:
      unknown_batch: declare the batch dimensions as `None` in the signature.
      jit_compile: compile with XLA.
    """
    return Runner(traced=True, unknown_batch=unknown_batch, jit_compile=jit_compile)


@dataclasses.dataclass
class BijectorReport:
    """What `evaluate_bijector` computed (numpy arrays, batch-shaped log-dets)."""

    x: np.ndarray
    y: np.ndarray
    x_round_trip: np.ndarray
    forward_log_det: np.ndarray
    inverse_log_det_at_y: np.ndarray
    autodiff_log_det: np.ndarray
    autodiff_sign: np.ndarray
    #: The same log-dets, each computed alone (not after its value, so not from the cache).
    forward_log_det_alone: np.ndarray | None = None
    inverse_log_det_alone: np.ndarray | None = None


def _default_event_ndims(bijector: tfb.Bijector) -> int:
    ndims = bijector.forward_min_event_ndims
    if not isinstance(ndims, (int, np.integer)):
        raise ValueError(f"check_bijector({bijector.name}): give event_ndims explicitly; "
                         f"forward_min_event_ndims is {ndims!r}.")
    return int(ndims)


def evaluate_bijector(bijector: tfb.Bijector, x, *, event_ndims: int | None = None,
                      runner: Runner = EAGER) -> BijectorReport:
    """Runs forward, inverse, both log-dets and the autodiff Jacobian at `x`.

    Args:
      bijector: any `tfp.bijectors.Bijector` with a single-tensor event.
      x: points in the forward domain, shape `batch_shape + event_shape`.
      event_ndims: rank of the event (default `forward_min_event_ndims`).
      runner: `EAGER` or `in_function(...)`.
    """
    event_ndims = _default_event_ndims(bijector) if event_ndims is None else event_ndims
    x = tf.convert_to_tensor(x, dtype_hint=bijector.dtype or tf.float32)
    if x.shape.rank is None or not x.shape[x.shape.rank - event_ndims:].is_fully_defined():
        raise ValueError(f"check_bijector({bijector.name}): the event shape of x must be "
                         f"static, got {x.shape}.")
    event_shape = x.shape[x.shape.rank - event_ndims:]
    event_size = event_shape.num_elements()

    def compute(x):
        # Each log-det right after its value, as log_prob asks for them: TFP's cache
        # may answer with the log-det that the value's computation stored.
        y = bijector.forward(x)
        fldj = bijector.forward_log_det_jacobian(x, event_ndims=event_ndims)
        # A fresh tensor, so that TFP's cache cannot answer the inverse for us.
        y_fresh = tf.identity(y)
        x_round_trip = bijector.inverse(y_fresh)
        ildj = bijector.inverse_log_det_jacobian(y_fresh, event_ndims=event_ndims)
        # Each log-det alone, at tensors the cache has never seen.
        fldj_alone = bijector.forward_log_det_jacobian(tf.identity(x), event_ndims=event_ndims)
        ildj_alone = bijector.inverse_log_det_jacobian(tf.identity(y), event_ndims=event_ndims)
        flat_x = tf.reshape(x, [-1, event_size])
        with tf.GradientTape() as tape:
            tape.watch(flat_x)
            flat_in = tf.reshape(flat_x, tf.concat([[-1], event_shape], 0))
            flat_y = tf.reshape(bijector.forward(flat_in), [tf.shape(flat_x)[0], -1])
        jacobian = tape.batch_jacobian(flat_y, flat_x)
        return y, fldj, x_round_trip, ildj, jacobian, fldj_alone, ildj_alone

    y, fldj, x_rt, ildj, jacobian, fldj_alone, ildj_alone = (
        t.numpy() for t in runner.run(compute, x, event_ndims))
    batch_shape = x.shape[:x.shape.rank - event_ndims].as_list()
    if jacobian.shape[-1] != jacobian.shape[-2]:
        raise AssertionError(
            f"check_bijector({bijector.name}) [{runner}]: forward changes the event size "
            f"from {jacobian.shape[-1]} to {jacobian.shape[-2]}: not a bijection.")
    sign, logdet = np.linalg.slogdet(jacobian.astype(np.float64))
    return BijectorReport(
        x=x.numpy(), y=y, x_round_trip=x_rt,
        forward_log_det=np.broadcast_to(fldj, batch_shape),
        inverse_log_det_at_y=np.broadcast_to(ildj, batch_shape),
        autodiff_log_det=logdet.reshape(batch_shape),
        autodiff_sign=sign.reshape(batch_shape),
        forward_log_det_alone=np.broadcast_to(fldj_alone, batch_shape),
        inverse_log_det_alone=np.broadcast_to(ildj_alone, batch_shape))


def _tolerances(dtype) -> tuple[float, float]:
    """(rtol, atol) for values of this dtype."""
    return (1e-8, 1e-8) if dtype == np.float64 else (1e-4, 1e-4)


def _assert_close(what: str, name: str, runner: Runner, got, want, rtol, atol):
    error = np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))
    allowed = atol + rtol * np.abs(np.asarray(want, np.float64))
    if not np.all(error <= allowed):
        worst = np.unravel_index(np.argmax(error - allowed), error.shape) if error.ndim else ()
        raise AssertionError(
            f"check_bijector({name}) [{runner}]: {what} failed: max error "
            f"{np.max(error):.3g} (at {tuple(int(i) for i in worst)}: got "
            f"{np.asarray(got)[worst].item():.10g}, expected {np.asarray(want)[worst].item():.10g}; "
            f"rtol={rtol:g}, atol={atol:g}).")


def check_bijector(bijector: tfb.Bijector, x, *, event_ndims: int | None = None,
                   runner: Runner = EAGER, rtol: float | None = None,
                   atol: float | None = None) -> BijectorReport:
    """Asserts that `bijector` is a correct bijection with a correct log-det at `x`.

    Args:
      bijector: any `tfp.bijectors.Bijector` (tfflow's or TFP's or yours).
      x: points in the forward domain, `batch_shape + event_shape`; float64
        recommended (the autodiff log-det is then exact to ~1e-12).
      event_ndims: rank of the event (default `forward_min_event_ndims`).
      runner: `EAGER` (default) or `in_function(unknown_batch=..., jit_compile=...)`.
      rtol, atol: tolerances; default 1e-8 for float64 and 1e-4 for float32
        (the Jacobian check then also allows `atol * event_size`).

    Returns:
      The `BijectorReport` of what was computed.

    Raises:
      AssertionError: naming the bijector and the first property that fails.
    """
    report = evaluate_bijector(bijector, x, event_ndims=event_ndims, runner=runner)
    name = bijector.name
    default_rtol, default_atol = _tolerances(report.x.dtype)
    rtol = default_rtol if rtol is None else rtol
    atol = default_atol if atol is None else atol
    event_size = report.x[(0,) * (report.x.ndim - (event_ndims if event_ndims is not None
                                                     else _default_event_ndims(bijector)))].size

    for what, value in (("forward(x)", report.y), ("inverse(forward(x))", report.x_round_trip),
                        ("forward_log_det_jacobian(x)", report.forward_log_det),
                        ("inverse_log_det_jacobian(y)", report.inverse_log_det_at_y),
                        ("forward_log_det_jacobian(x) alone", report.forward_log_det_alone),
                        ("inverse_log_det_jacobian(y) alone", report.inverse_log_det_alone),
                        ("autodiff log|det J|", report.autodiff_log_det)):
        if not np.all(np.isfinite(value)):
            raise AssertionError(f"check_bijector({name}) [{runner}]: finite outputs failed: "
                                 f"{what} holds NaN or Inf.")
    if np.any(report.autodiff_sign == 0):
        raise AssertionError(f"check_bijector({name}) [{runner}]: the autodiff Jacobian is "
                             f"singular: not a bijection at x.")
    _assert_close("round trip inverse(forward(x)) == x", name, runner,
                  report.x_round_trip, report.x, rtol, atol)
    _assert_close("log-det consistency fldj(x) == -ildj(forward(x)), each after its value",
                  name, runner, report.forward_log_det, -report.inverse_log_det_at_y, rtol, atol)
    _assert_close("log-det consistency fldj(x) == -ildj(forward(x)), each alone",
                  name, runner, report.forward_log_det_alone, -report.inverse_log_det_alone,
                  rtol, atol)
    _assert_close("log-det consistency fldj(x) after forward(x) == fldj(x) alone",
                  name, runner, report.forward_log_det, report.forward_log_det_alone, rtol, atol)
    jacobian_atol = atol if report.x.dtype == np.float64 else atol * event_size
    _assert_close("log-det against autodiff Jacobian fldj(x) == log|det J|", name, runner,
                  report.forward_log_det, report.autodiff_log_det, rtol, jacobian_atol)
    same_shape = report.y.shape == report.x.shape
    if same_shape and np.allclose(report.y, report.x, rtol=0., atol=atol) and \
            np.allclose(report.forward_log_det, 0., atol=atol):
        raise AssertionError(f"check_bijector({name}) [{runner}]: not the identity failed: "
                             f"forward(x) == x with zero log-det.")
    return report
