"""The contract between tfflow's Keras layers and its stateless bijectors.

A `FlowLayer` owns weights (created in `build` with `add_weight`, so Keras
tracks, trains, saves and distributes them) and hands out a bijector built from
their current values: `layer.bijector(context)`. The bijector is cheap to build
and, inside `tf.function`, is built once per trace.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
import weakref
from typing import Any, Callable, Iterator

import keras
import tensorflow as tf
from tensorflow_probability import bijectors as tfb

from tfflow._deprecation import deprecated_subclass
from tfflow.bijectors.program import BijectorProgram

__all__ = ["FlowContext", "FlowLayer", "deprecated_alias", "renamed_argument", "serialize",
           "deserialize"]

# Programs shared by all layers of one signature; an entry goes with its last holder.
_PROGRAMS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def _without_names(config):
    """A config with every "name" entry dropped (names do not change the function)."""
    if isinstance(config, dict):
        # A dtype policy's config is {"name": "mixed_bfloat16"}: that name counts.
        return {k: v if k == "dtype" else _without_names(v) for k, v in config.items()
                if k != "name"}
    if isinstance(config, (list, tuple)):
        return [_without_names(v) for v in config]
    return config


@dataclasses.dataclass
class FlowContext:
    """What a layer may need to hand out its bijector.

    Attributes:
      training: batch statistics (batch norm) instead of running averages.
      labels: int class labels [N] for class-conditional layers, or None.
      context: the conditioning input [..., *context_shape] of a conditional
        model (standardised by the model), broadcastable against the batch
        of the flow's input; None for an unconditional one.
      init_records: when a dict, data-initialised layers (ActNorm, batch norm)
        hand out bijectors that normalise with their input's moments and record
        `{layer: values}` here, for `layer.assign_initial(*values)` (Glow's init).
    """

    training: bool = False
    labels: tf.Tensor | None = None
    context: tf.Tensor | None = None
    init_records: dict | None = None


class FlowLayer(keras.layers.Layer):
    """A Keras layer that owns a flow part's weights and builds its bijector.

    Subclasses implement `bijector(context)` and, when they change the event
    shape, `output_event_shape`. `build` receives the event shape with a
    leading `None` batch dimension. Calling the layer runs the normalising
    direction (data -> latent), which is what `model.summary()` shows.
    """

    event_ndims: int = 3
    #: True for layers whose bijector depends on `FlowContext.labels`.
    uses_labels: bool = False
    #: The width of the context c a conditional layer reads (`FlowContext.context`);
    #: None for a layer that takes none. Layers with a `context_units=` argument set it.
    context_units: int | None = None

    @property
    def uses_context(self) -> bool:
        """True for layers whose bijector depends on `FlowContext.context`: `context_units` set."""
        return self.context_units is not None

    # Self-description: what health checks, reversible grouping and data-dependent
    # initialisation ask of a layer instead of checking its class.
    #: False for a layer whose bijector changes the event shape (squeeze, flatten).
    keeps_event_shape: bool = True
    #: False for a layer whose output for one example depends on the others in the
    #: batch (batch statistics): it cannot be inverted example by example.
    per_example: bool = True
    #: True for a layer that `FlowModel.initialize` sets from a batch of data: it has a
    #: non-trainable `initialized` weight and `assign_initial(*values)`, and its
    #: bijector records those values when `FlowContext.init_records` is a dict.
    needs_data_init: bool = False

    def flow_children(self) -> list[FlowLayer]:
        """The flow layers this layer is made of (a container's parts); `[]` for a leaf.

        A container also implements `apply_children`. A method, not a property:
        Keras saves a layer's weights under the first attribute path (by name)
        that reaches them, so a property listing the parts would move them in
        `.keras` files and break loading the files saved before it.
        """
        return []

    def add_initialized_flag(self) -> None:
        """Creates `initialized`, the saved non-trainable flag of a data-initialised layer.

        0 until `assign_initial` sets it to 1; saved with the model, so a
        reloaded or resumed model is never initialised twice.
        """
        self.initialized = self.add_weight(name="initialized", shape=(), initializer="zeros",
                                           trainable=False, dtype="float32")

    def data_domain(self) -> tuple[float, float, str] | None:
        """The interval (low, high) of input values on which this layer's map is defined, and why.

        None where the map is defined on every real value (most layers). A
        container's domain is the most restrictive of its children's (a chain
        overrides this with its first, data-side, part). `FlowModel` intersects
        it with its scoring range, so that it never scores a value on which
        the flow is undefined.
        """
        domains = [d for d in (child.data_domain() for child in self.flow_children()) if d]
        if not domains:
            return None
        return (max(d[0] for d in domains), min(d[1] for d in domains),
                "; ".join(dict.fromkeys(d[2] for d in domains)))

    def apply_children(self, x: tf.Tensor,
                       apply: Callable[[FlowLayer, tf.Tensor], tf.Tensor]) -> tf.Tensor:
        """A container's data -> latent map of `x`, with `apply(child, value)` for each child.

        `apply` stands in for running a child; the container says how its
        children's results combine (in order; on some channels). Leaves have no
        children and raise.
        """
        raise ValueError(f"{type(self).__name__}: a leaf flow layer has no children to apply.")

    def walk(self, path: str | None = None) -> Iterator[tuple[str, FlowLayer]]:
        """`(path, layer)` for this layer and every flow layer below it, parents first.

        Paths join layer names with "/", starting at `path` (default: this
        layer's name), e.g. "flow/level_0/actnorm_layer_1".
        """
        path = self.name if path is None else path
        yield path, self
        for child in self.flow_children():
            yield from child.walk(f"{path}/{child.name}")

    def bijector(self, context: FlowContext | None = None) -> tfb.Bijector:
        raise NotImplementedError

    def context_values(self, context: FlowContext | None) -> tf.Tensor | None:
        """The context tensor this layer's bijector conditions on; None if it uses none.

        The one rule for a conditional layer handed no context: a `ValueError`
        naming the layer and the context it needs (`context_units`).
        """
        if not self.uses_context:
            return None
        values = None if context is None else context.context
        if values is None:
            units = getattr(self, "context_units", None)
            raise ValueError(f"{type(self).__name__} {self.name!r}: this layer is conditional "
                             f"({units} context units); its bijector needs "
                             f"FlowContext(context=[..., {units}]), got none.")
        return values

    # Shared traces ------------------------------------------------------------------------------
    def function_config(self) -> dict:
        """The config that decides the function of (input, weights): `get_config()` less names.

        Layers whose config holds what only initialises weights (a seed) drop it,
        so that layers differing only in that share one program.
        """
        return _without_names(self.get_config())

    def program(self, context: FlowContext | None = None, *,
                compile: bool = True) -> BijectorProgram | None:
        """This layer's bijector as a `BijectorProgram` of its weights, or None.

        Layers with the same class, `function_config`, weight shapes and
        training flag get the same program, so that inside `tf.function` they
        share one traced graph (and one traced gradient). None where the bijector
        depends on more than the weights (labels, batch statistics, recording
        an initialisation).
        """
        context = context or FlowContext()
        if (context.init_records is not None
                or (self.uses_labels and context.labels is not None)
                or (self.uses_context and context.context is not None)):
            return None
        signature = json.dumps(
            [type(self).__module__, type(self).__qualname__, self.function_config(),
             # The input shape too: a weightless layer may read it in `build` (a permutation).
             getattr(self, "_build_shapes_dict", None),
             [[list(w.shape), str(w.dtype)] for w in self.weights], bool(context.training),
             bool(compile)], sort_keys=True, default=str)
        # Every layer holds its programs; the registry only finds them (weakly). A program
        # holds its template layer, which it may retrace with later (a new batch size).
        held = self.__dict__.setdefault("_tfflow_programs", {})
        program = held.get(signature)
        if program is None:
            program = _PROGRAMS.get(signature)
        if program is None:
            template = self
            static_context = FlowContext(training=bool(context.training))

            def scope(params):
                return keras.StatelessScope(state_mapping=list(zip(template.weights, params)))

            program = BijectorProgram(lambda params: template.bijector(static_context),
                                      self.event_ndims, scope=scope, compile=compile,
                                      name=type(self).__name__)
            _PROGRAMS[signature] = program
        held[signature] = program
        return program

    def output_event_shape(self, event_shape: tuple) -> tuple:
        """Event shape after this layer in the data -> latent direction."""
        return tuple(event_shape)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + tuple(self.output_event_shape(tuple(input_shape[1:])))

    def call(self, x):
        return self.bijector(FlowContext()).inverse(x)


def serialize(layer: keras.layers.Layer | None) -> dict | None:
    return None if layer is None else keras.saving.serialize_keras_object(layer)


def deserialize(config: Any):
    return None if config is None else keras.saving.deserialize_keras_object(config)


# Old names: kept for one release, with a DeprecationWarning -------------------------------------

def deprecated_alias(cls: type, old_name: str) -> type:
    """`tfflow._deprecation.deprecated_subclass` of a layer, registered for `.keras` files.

    Registered under its own (old) name, so files saved before the rename
    still load. Remove it one release after the rename.
    """
    return keras.saving.register_keras_serializable(package="tfflow")(
        deprecated_subclass(cls, old_name))


def renamed_argument(owner: str, old: str, old_value: Any, new: str, new_value: Any) -> Any:
    """The value of argument `new`, taken from its deprecated old name `old` when that is given.

    Passing `old` warns (`DeprecationWarning`); passing both is a `ValueError`.
    `new_value` is None when the caller did not pass `new`.
    """
    if old_value is None:
        return new_value
    if new_value is not None:
        raise ValueError(f"{owner}: expected `{new}` only (`{old}` is its deprecated old name), "
                         f"got both: {new}={new_value!r}, {old}={old_value!r}.")
    warnings.warn(f"{owner}: argument `{old}` is deprecated and will be removed in the next "
                  f"release; use `{new}`.", DeprecationWarning, stacklevel=3)
    return old_value
