"""A bijector as pure functions of (input, parameters), traced once and reused.

`BijectorProgram(make)` turns `make(params) -> bijector` into three functions
of explicit tensors:

* `inverse(x, params) -> (z, ildj)`     the normalising direction (data -> latent);
* `forward(z, params) -> (x, fldj)`     the generating direction (latent -> data);

and gives the bijector itself (`make(params)`, used inside `scope(params)`),
which `ReversibleChain`'s memory-saving gradient rebuilds and replays.

With `compile=True` each is a `tf.function`: every call with the same shapes
(e.g. identical couplings of a RealNVP, whatever their weights) reuses one
traced graph and one traced gradient. Parameters being explicit, nothing
inside reads a variable. (Glow's K steps per scale no longer need this: they
are one `StackedSteps` loop.)
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Sequence

import tensorflow as tf
from tensorflow_probability import bijectors as tfb

from tfflow.bijectors._base import FlowBijector

__all__ = ["BijectorProgram", "ChainProgram", "ProgramBijector", "ProgramChain", "group_repeats",
           "inline_programs"]


_STATE = threading.local()


@contextlib.contextmanager
def inline_programs():
    """Within it, programs run their Python functions in place of their shared traces.

    For code compiled with XLA (`jit_compile=True`): XLA compiles the whole
    step anyway, and a train step that called the shared traced functions was
    recompiled at every call (measured: 4-6 s per step instead of 6 ms).
    `FlowModel`'s train and test steps enter it when the model is compiled
    with `jit_compile`.
    """
    previous = getattr(_STATE, "inline", False)
    _STATE.inline = True
    try:
        yield
    finally:
        _STATE.inline = previous


def _inlined() -> bool:
    return getattr(_STATE, "inline", False)


class BijectorProgram:
    """Pure functions of a bijector family `make(params)`; see the module docstring.

    Args:
      make: builds the bijector from a list of parameter tensors.
      scope: optional `scope(params)`, a context manager entered around every
        use of the bijector (tfflow's layers substitute their weights with
        `keras.StatelessScope`, so that networks called lazily see `params` too).
      event_ndims: rank of one event; log-dets are reduced to it.
      compile: wrap the functions in `tf.function` (share traces between calls).
      name: names the traced functions.
    """

    def __init__(self, make: Callable[[Sequence[tf.Tensor]], tfb.Bijector], event_ndims: int,
                 *, scope: Callable[[Sequence[tf.Tensor]], Any] | None = None,
                 compile: bool = True, name: str = "program"):
        self._make = make
        self._scope = scope or (lambda params: contextlib.nullcontext())
        self.event_ndims = int(event_ndims)
        self.name = name
        self.compiled = bool(compile)
        self._traced = None
        if compile:
            self._traced = {fn.__name__: tf.function(fn, autograph=False)
                            for fn in (self._inverse, self._forward)}

    def _function(self, name: str) -> Callable:
        if self._traced is None or _inlined():
            return getattr(self, name)
        return self._traced[name]

    def inverse(self, x, params):
        """`(z, ildj)`: the bijector's inverse (data -> latent) and its log-det at `x`."""
        return self._function("_inverse")(x, params)

    def forward(self, z, params):
        """`(x, fldj)`: the bijector's forward (latent -> data) and its log-det at `z`."""
        return self._function("_forward")(z, params)

    def make(self, params) -> tfb.Bijector:
        """The bijector of `params`; build and use it inside `scope(params)`."""
        return self._make(list(params))

    def scope(self, params):
        """The context `make(params)`'s bijector must be built and used in."""
        return self._scope(list(params))

    def leaves(self, params) -> list:
        """`[(program, params)]`: this program's parts, one per bijector (see `ChainProgram`)."""
        return [(self, list(params))]

    def _inverse(self, x, params):
        with self._scope(list(params)):
            bijector = self._make(list(params))
            return (bijector.inverse(x),
                    bijector.inverse_log_det_jacobian(x, event_ndims=self.event_ndims))

    def _forward(self, z, params):
        with self._scope(list(params)):
            bijector = self._make(list(params))
            return (bijector.forward(z),
                    bijector.forward_log_det_jacobian(z, event_ndims=self.event_ndims))


class ProgramBijector(FlowBijector):
    """The bijector `program.bijector(params)`, computed through the program's functions.

    Same values and log-dets; inside `tf.function` every instance of one program
    calls the same traced graph. tfflow bijectors follow TFP: `forward` maps
    latent -> data, `inverse` maps data -> latent. The event shape must be kept.
    """

    def __init__(self, program: BijectorProgram, params: Sequence[tf.Tensor], *,
                 name: str | None = None):
        parameters = dict(locals())
        self._program = program
        self._params = list(params)
        with tf.name_scope(name or program.name) as scope:
            super().__init__(forward_min_event_ndims=program.event_ndims,
                             is_constant_jacobian=False, validate_args=False,
                             parameters=parameters, name=scope)

    @property
    def program(self) -> BijectorProgram:
        return self._program

    @property
    def params(self) -> list:
        return list(self._params)

    def _forward_and_log_det(self, x):
        return self._program.forward(x, self._params)

    def _inverse_and_log_det(self, y):
        return self._program.inverse(y, self._params)


class ChainProgram(BijectorProgram):
    """Programs applied in sequence (`tfb.Chain` order), as one program of all their parameters.

    Its parameters are the members' parameters concatenated (`sizes` says how
    many each takes). One call runs every member, so a flow step of several
    parts is one traced function, shared by all steps of the same shapes.
    """

    def __init__(self, members: Sequence[BijectorProgram], sizes: Sequence[int], *,
                 compile: bool = True):
        self._members = list(members)
        self._sizes = [int(s) for s in sizes]
        event_ndims = {m.event_ndims for m in self._members}
        if len(event_ndims) != 1:
            raise ValueError(f"ChainProgram: members disagree on event_ndims: {event_ndims}.")
        super().__init__(None, event_ndims.pop(), compile=compile,
                         name="_".join(m.name for m in self._members))

    def _split(self, params):
        out, start = [], 0
        for size in self._sizes:
            out.append(list(params[start:start + size]))
            start += size
        return out

    def _inverse(self, x, params):
        ildj = tf.zeros([], x.dtype)
        for member, p in zip(self._members, self._split(params)):
            x, ldj = member._inverse(x, p)  # pylint: disable=protected-access
            ildj = ildj + ldj
        return x, ildj

    def _forward(self, z, params):
        fldj = tf.zeros([], z.dtype)
        for member, p in reversed(list(zip(self._members, self._split(params)))):
            z, ldj = member._forward(z, p)  # pylint: disable=protected-access
            fldj = fldj + ldj
        return z, fldj

    def leaves(self, params) -> list:
        return [leaf for member, p in zip(self._members, self._split(params))
                for leaf in member.leaves(p)]


def _chain_program(members, sizes) -> BijectorProgram:
    """The one `ChainProgram` of these members, kept alive by the first member."""
    if len(members) == 1:
        return members[0]
    key = (tuple(id(m) for m in members), tuple(sizes))
    chains = members[0].__dict__.setdefault("_chains", {})
    entry = chains.get(key)
    if entry is None or any(a is not b for a, b in zip(entry._members, members)):
        entry = ChainProgram(members, sizes, compile=members[0].compiled)
        chains[key] = entry
    return entry


def group_repeats(parts: Sequence[tuple[BijectorProgram, Sequence[tf.Tensor]]]) -> list:
    """Merges repeated runs of programs into `ChainProgram`s, one call per repeat.

    `[a, m, c, a, m, c, s]` (a Glow level's steps, then its split prior) becomes
    `[(amc, p0), (amc, p1), (s, p2)]`: the two steps call one shared program.
    """
    parts = [(program, list(params)) for program, params in parts]
    out = []
    while parts:
        programs = [p for p, _ in parts]
        best_period, best_repeats = 1, 1
        for period in range(1, len(parts) // 2 + 1):
            repeats = 1
            while (repeats + 1) * period <= len(parts) and all(
                    programs[repeats * period + i] is programs[i] for i in range(period)):
                repeats += 1
            if repeats > 1 and period * repeats > best_period * best_repeats:
                best_period, best_repeats = period, repeats
        for r in range(best_repeats):
            chunk = parts[r * best_period:(r + 1) * best_period]
            program = _chain_program([p for p, _ in chunk], [len(w) for _, w in chunk])
            out.append((program, [w for _, ws in chunk for w in ws]))
        parts = parts[best_period * best_repeats:]
    return out


class ProgramChain(FlowBijector):
    """Parts given as `(BijectorProgram, params)` pairs, applied like `tfb.Chain(parts)`.

    tfflow bijectors follow TFP: `forward` maps latent -> data, `inverse` maps
    data -> latent, applying the first part first. Every part keeps the event
    shape; log-dets are summed. Repeated runs of parts are merged into one
    shared program per repeat (`group_repeats`), so a traced graph holds one
    call per flow step, and every step of one shape runs the same function.
    """

    def __init__(self, parts: Sequence[tuple[BijectorProgram, Sequence[tf.Tensor]]], *,
                 event_ndims: int = 3, validate_args: bool = False,
                 name: str = "program_chain"):
        parameters = dict(locals())
        parts = [(program, [tf.convert_to_tensor(p) for p in params])
                 for program, params in parts]
        if not parts or not all(isinstance(p, BijectorProgram) for p, _ in parts):
            raise ValueError(f"{type(self).__name__}: expected a non-empty sequence of "
                             f"(BijectorProgram, params) pairs, got {parts!r}.")
        bad = [p.name for p, _ in parts if p.event_ndims != int(event_ndims)]
        if bad:
            raise ValueError(f"{type(self).__name__}: every part must have event_ndims="
                             f"{event_ndims}; got other values for {bad}.")
        self._parts = group_repeats(parts)
        self._event_ndims = int(event_ndims)
        with tf.name_scope(name) as name:
            super().__init__(forward_min_event_ndims=self._event_ndims,
                             is_constant_jacobian=False, validate_args=validate_args,
                             parameters=parameters, name=name)

    def _forward_and_log_det(self, z):
        fldj = tf.zeros([], z.dtype)
        for program, params in reversed(self._parts):
            z, ldj = program.forward(z, params)
            fldj = fldj + ldj
        return z, fldj

    def _inverse_and_log_det(self, x):
        ildj = tf.zeros([], x.dtype)
        for program, params in self._parts:
            x, ldj = program.inverse(x, params)
            ildj = ildj + ldj
        return x, ildj
