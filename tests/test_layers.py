"""tfflow's Keras layers: weights made in `build` and tracked, configs that round-trip.

One registry, `FLOW_LAYERS`, `{name: Case(make, input_shape)}`: every flow layer goes
through every check, so a new layer joins them by one line. The round trip
serialises a built layer with perturbed weights (`keras.saving.serialize_keras_object`,
through JSON as a `.keras` file stores it), deserialises it, copies the weights with
`set_weights` and compares the two layers' bijectors in both directions.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Callable

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfflow.models
from tfflow import bijectors as fb
from tfflow import layers as fl
from tfflow.layers import FlowContext

IMAGE = (None, 4, 4, 4)
VECTOR = (None, 6)
BATCH = 3
LABELS = np.array([0, 2, 1], np.int32)


@dataclasses.dataclass(frozen=True)
class Case:
    """`make() -> layer`, the shape it is built for, and whether it owns weights."""

    make: Callable[[], fl.FlowLayer]
    input_shape: tuple
    has_weights: bool = True
    labels: np.ndarray | None = None


def _glow_net(out_channels):
    return fl.GlowConditioner(8, out_channels)


FLOW_LAYERS = {
    "actnorm_image": Case(fl.ActNormLayer, IMAGE),
    "actnorm_vector": Case(lambda: fl.ActNormLayer(event_ndims=1), VECTOR),
    "batch_norm_image": Case(fl.BatchNormalizationLayer, IMAGE),
    "batch_norm_vector": Case(lambda: fl.BatchNormalizationLayer(event_ndims=1, momentum=0.9), VECTOR),
    "lu_conv1x1": Case(lambda: fl.LUInvertible1x1ConvLayer(seed=3), IMAGE),
    "lu_conv1x1_vector": Case(lambda: fl.LUInvertible1x1ConvLayer(event_ndims=1, seed=4),
                              VECTOR),
    "conv1x1": Case(lambda: fl.Invertible1x1ConvLayer(seed=5), IMAGE),
    "reverse": Case(lambda: fl.PermuteChannelsLayer("reverse"), IMAGE, has_weights=False),
    "shuffle": Case(lambda: fl.PermuteChannelsLayer("shuffle", seed=2), IMAGE,
                    has_weights=False),
    "affine_channel_split": Case(lambda: fl.AffineCouplingLayer(
        _glow_net(4), fb.ChannelSplit(0)), IMAGE),
    "affine_checkerboard_resnet": Case(lambda: fl.AffineCouplingLayer(
        fl.ResNetConditioner(4, 8, blocks=1), fb.Checkerboard(1), log_scale="glow"), IMAGE),
    "affine_vector": Case(lambda: fl.AffineCouplingLayer(
        fl.MLPConditioner((8,), 12), fb.AlternatingMask(1), event_ndims=1), VECTOR),
    "additive_channel_split": Case(lambda: fl.AdditiveCouplingLayer(
        _glow_net(2), fb.ChannelSplit(1)), IMAGE),
    "additive_vector": Case(lambda: fl.AdditiveCouplingLayer(
        fl.MLPConditioner((8, 8), 6), fb.AlternatingMask(0), event_ndims=1), VECTOR),
    "spline_channel_split": Case(lambda: fl.SplineCouplingLayer(
        _glow_net(2 * fl.SplineCouplingLayer.params_per_channel(4)), fb.ChannelSplit(0),
        num_bins=4, bound=2.), IMAGE),
    "spline_vector": Case(lambda: fl.SplineCouplingLayer(
        fl.MLPConditioner((8,), 6 * fl.SplineCouplingLayer.params_per_channel(3)),
        fb.AlternatingMask(1), event_ndims=1, num_bins=3), VECTOR),
    "split_prior": Case(lambda: fl.AffineCouplingLayer(
        fl.ZeroInitConv(4), fb.ChannelSplit(0)), IMAGE),
    "squeeze": Case(fl.SqueezeLayer, IMAGE, has_weights=False),
    "unsqueeze": Case(fl.UnsqueezeLayer, IMAGE, has_weights=False),
    "chain": Case(lambda: fl.ChainLayer([
        fl.ActNormLayer(), fl.LUInvertible1x1ConvLayer(seed=1),
        fl.AffineCouplingLayer(_glow_net(4), fb.ChannelSplit(0))]), IMAGE),
    "factor_out": Case(lambda: fl.FactorOutLayer(2, fl.ChainLayer([
        fl.SqueezeLayer(), fl.ActNormLayer(), fl.UnsqueezeLayer()])), IMAGE),
    "learned_prior": Case(fl.LearnedPriorLayer, IMAGE),
    "learned_prior_classes": Case(lambda: fl.LearnedPriorLayer(num_classes=3), IMAGE,
                                  labels=LABELS),
    "shift": Case(lambda: fl.ShiftLayer(0.25), IMAGE, has_weights=False),
    "logit": Case(lambda: fl.LogitPreprocessingLayer(0.1), IMAGE, has_weights=False),
    "flatten": Case(lambda: fl.FlattenLayer((4, 4, 4)), IMAGE, has_weights=False),
    "diagonal_scaling": Case(fl.DiagonalScalingLayer, VECTOR),
}

CONDITIONERS = {
    "zero_init_conv": (lambda: fl.ZeroInitConv(6, kernel_size=3, gain_factor=2.), IMAGE),
    "glow": (lambda: fl.GlowConditioner(8, 6), IMAGE),
    "resnet": (lambda: fl.ResNetConditioner(4, 6, blocks=2), IMAGE),
    "mlp": (lambda: fl.MLPConditioner([8, 4], 5), VECTOR),
}


def _data(input_shape, seed=0):
    """Data-side points in (0, 1) (the logit layer's domain), batch `BATCH`."""
    shape = (BATCH,) + tuple(input_shape[1:])
    return tf.constant(np.random.default_rng(seed).uniform(0.05, 0.95, size=shape),
                       tf.float32)


def _perturb(layer, seed=1):
    """Moves every float weight off its initial value, so layers differ from the identity."""
    rng = np.random.default_rng(seed)
    for v in layer.trainable_weights:
        v.assign(v.numpy() + 0.1 * rng.normal(size=v.shape).astype(v.dtype))


def _round_trip(layer):
    config = keras.saving.serialize_keras_object(layer)
    return keras.saving.deserialize_keras_object(json.loads(json.dumps(config)))


def _json(config):
    """A config as a `.keras` file stores it (tuples become lists)."""
    return json.loads(json.dumps(config))


def _holds(variables, variable):
    return any(v is variable for v in variables)


def _bijector_tensors(layer, x, labels):
    """`(z, ildj, forward(z))` of the layer's bijector at data `x`."""
    context = FlowContext(labels=None if labels is None else tf.constant(labels))
    bijector = layer.bijector(context)
    z = bijector.inverse(x)
    ildj = bijector.inverse_log_det_jacobian(x, event_ndims=x.shape.rank - 1)
    return z, ildj, bijector.forward(z)


def _bijector_outputs(layer, x, labels):
    return [t.numpy() for t in _bijector_tensors(layer, x, labels)]


@pytest.mark.parametrize("name", list(FLOW_LAYERS))
def test_weights_are_made_in_build_and_tracked(name):
    case = FLOW_LAYERS[name]
    layer = case.make()
    assert not layer.weights, "weights made before build"
    layer.build(case.input_shape)
    assert layer.built
    assert bool(layer.weights) == case.has_weights
    assert bool(layer.trainable_weights) == case.has_weights
    # Every variable the bijector reads is one the layer tracks (so `fit` trains it):
    # the gradient of the log-det and output with respect to each trainable weight.
    x = _data(case.input_shape)
    _perturb(layer)
    with tf.GradientTape() as tape:
        z, ildj, _ = _bijector_tensors(layer, x, case.labels)
        total = tf.reduce_sum(z) + tf.reduce_sum(ildj)
    grads = tape.gradient(total, layer.trainable_weights)
    for v, g in zip(layer.trainable_weights, grads):
        assert g is not None, f"{name}: {v.path} does not reach the bijector"
    # Calling the layer runs the normalising direction, with the declared output shape.
    if case.labels is None:
        out = layer(x)
        assert tuple(out.shape) == layer.compute_output_shape((BATCH,) + case.input_shape[1:])


@pytest.mark.parametrize("name", list(FLOW_LAYERS))
def test_config_round_trip_gives_the_same_bijector(name):
    case = FLOW_LAYERS[name]
    layer = case.make()
    layer.build(case.input_shape)
    _perturb(layer)
    clone = _round_trip(layer)
    assert type(clone) is type(layer)
    assert _json(clone.get_config()) == _json(layer.get_config())
    if not clone.built:
        clone.build(case.input_shape)
    assert [w.shape for w in clone.weights] == [w.shape for w in layer.weights]
    clone.set_weights(layer.get_weights())
    x = _data(case.input_shape)
    for got, want in zip(_bijector_outputs(clone, x, case.labels),
                         _bijector_outputs(layer, x, case.labels)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    # The round trip is not vacuous: the layer is not the identity with zero log-det.
    z, ildj, x_again = _bijector_outputs(layer, x, case.labels)
    np.testing.assert_allclose(x_again, x.numpy(), atol=1e-4)
    assert z.shape != x.shape or not np.allclose(z, x.numpy()) or np.any(ildj != 0.)


@pytest.mark.parametrize("name", list(FLOW_LAYERS))
def test_round_trip_of_an_unbuilt_layer(name):
    case = FLOW_LAYERS[name]
    clone = _round_trip(case.make())
    clone.build(case.input_shape)
    assert bool(clone.weights) == case.has_weights


@pytest.mark.parametrize("name", list(CONDITIONERS))
def test_conditioner_round_trip(name):
    make, input_shape = CONDITIONERS[name]
    net = make()
    assert not net.weights
    net.build(input_shape)
    assert net.weights and net.trainable_weights
    x = _data(input_shape)
    # The last layer starts at zero: so does the output (the coupling starts as the identity).
    np.testing.assert_array_equal(net(x).numpy(), 0.)
    _perturb(net)
    clone = _round_trip(net)
    assert _json(clone.get_config()) == _json(net.get_config())
    if not clone.built:
        clone.build(input_shape)
    clone.set_weights(net.get_weights())
    out = net(x).numpy()
    assert np.any(out != 0.)
    np.testing.assert_allclose(clone(x).numpy(), out, rtol=1e-6, atol=1e-6)
    assert out.shape == tuple(net.compute_output_shape((BATCH,) + input_shape[1:]))


def test_actnorm_initialized_flag_is_a_saved_non_trainable_weight():
    layer = fl.ActNormLayer(dtype="float64")
    layer.build(IMAGE)
    assert _holds(layer.non_trainable_weights, layer.initialized)
    assert not _holds(layer.trainable_weights, layer.initialized)
    assert {v.path.split("/")[-1] for v in layer.trainable_weights} == {"loc", "log_scale"}
    assert layer.loc.dtype == "float64" and layer.initialized.dtype == "float32"
    assert float(layer.initialized.numpy()) == 0.
    layer.assign_initial(tf.ones([4], tf.float64), tf.zeros([4], tf.float64))
    assert float(layer.initialized.numpy()) == 1.
    clone = _round_trip(layer)
    clone.set_weights(layer.get_weights())
    assert float(clone.initialized.numpy()) == 1.


def test_actnorm_initialising_bijector_records_the_batch_moments():
    layer = fl.ActNormLayer()
    layer.build(IMAGE)
    x = _data(IMAGE) * 3. + 1.
    records = {}
    z = layer.bijector(FlowContext(init_records=records)).inverse(x).numpy()
    assert list(records) == [layer]
    np.testing.assert_allclose(z.mean(axis=(0, 1, 2)), 0., atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 1, 2)), 1., atol=1e-4)
    with pytest.raises(ValueError, match="ActNormLayer"):
        layer.bijector(FlowContext(init_records={})).forward(x)


def test_non_trainable_weights():
    lu = fl.LUInvertible1x1ConvLayer()
    lu.build(IMAGE)
    assert {v.path.split("/")[-1] for v in lu.non_trainable_weights} == {"permutation",
                                                                         "sign_s"}
    bn = fl.BatchNormalizationLayer()
    bn.build(IMAGE)
    assert {v.path.split("/")[-1] for v in bn.non_trainable_weights} == {"moving_mean", "initialized",
                                                                         "moving_variance"}


@pytest.mark.parametrize("traced", [False, True])
def test_batch_norm_moves_its_averages_once_per_training_pass(traced):
    # What the model's train step does: inverse, then the log-det of the same input.
    layer = fl.BatchNormalizationLayer(momentum=0.9)
    layer.build(IMAGE)
    x = _data(IMAGE) * 2. + 1.

    def training_pass(x):
        bijector = layer.bijector(FlowContext(training=True))
        return bijector.inverse(x), bijector.inverse_log_det_jacobian(x, event_ndims=3)

    z, _ = (tf.function(training_pass) if traced else training_pass)(x)
    mean, variance = (t.numpy() for t in tf.nn.moments(x, axes=[0, 1, 2]))
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), 0.9 + 0.1 * variance, rtol=1e-5)
    # Batch statistics in training; the running averages otherwise.
    np.testing.assert_allclose(z.numpy().mean(axis=(0, 1, 2)), 0., atol=1e-5)
    z_eval = layer.bijector(FlowContext(training=False)).inverse(x).numpy()
    assert not np.allclose(z_eval.mean(axis=(0, 1, 2)), 0., atol=1e-2)


def test_layer_errors_name_the_layer():
    with pytest.raises(ValueError, match="AffineCouplingLayer.*log_scale.*'nope'"):
        fl.AffineCouplingLayer(_glow_net(4), fb.ChannelSplit(0), log_scale="nope")
    with pytest.raises(ValueError, match="PermutationLayer.*'random'"):
        fl.PermutationLayer("random")
    prior = fl.LearnedPriorLayer(num_classes=3)
    prior.build(IMAGE)
    with pytest.raises(ValueError, match="LearnedPriorLayer.*labels"):
        prior.bijector(FlowContext())


# --- Self-description: what health checks, grouping and initialisation ask of a layer ----------

@pytest.mark.parametrize("name", list(FLOW_LAYERS))
def test_layer_describes_itself_truthfully(name):
    case = FLOW_LAYERS[name]
    layer = case.make()
    layer.build(case.input_shape)
    _perturb(layer)
    event = tuple(case.input_shape[1:])
    assert layer.keeps_event_shape == (tuple(layer.output_event_shape(event)) == event)
    x = _data(case.input_shape)
    labels = None if case.labels is None else tf.constant(case.labels)
    context = FlowContext(training=True, labels=labels)
    z = layer.bijector(context).inverse(x)
    if layer.flow_children():
        # The container's own composition of its children is its bijector.
        composed = layer.apply_children(x, lambda child, v: child.bijector(context).inverse(v))
        np.testing.assert_allclose(composed, z, rtol=1e-5, atol=1e-5)
    if layer.per_example and case.labels is None:
        # Per example: the first example alone maps to what it maps to in the batch.
        alone = layer.bijector(context).inverse(x[:1])
        np.testing.assert_allclose(alone, z[:1], rtol=1e-5, atol=1e-5)
    if layer.needs_data_init:
        assert _holds(layer.non_trainable_weights, layer.initialized)
        assert callable(layer.assign_initial)


def test_batch_norm_is_not_per_example_and_containers_name_their_children():
    assert not fl.BatchNormalizationLayer().per_example
    inner = fl.ChainLayer([fl.SqueezeLayer(), fl.ActNormLayer(), fl.UnsqueezeLayer()],
                          name="inner")
    outer = fl.FactorOutLayer(2, inner, name="outer")
    assert outer.flow_children() == [inner]
    assert [path for path, _ in outer.walk()] == [
        "outer", "outer/inner", "outer/inner/" + inner.flow_layers[0].name,
        "outer/inner/" + inner.flow_layers[1].name, "outer/inner/" + inner.flow_layers[2].name]
    assert [layer.needs_data_init for _, layer in outer.walk()] == [False, False, False, True,
                                                                      False]
    assert not inner.keeps_event_shape  # unbuilt: a squeeze inside may change the shape
    outer.build(IMAGE)
    assert inner.keeps_event_shape  # built: squeeze then unsqueeze keeps [4, 4, 2]
    assert outer.keeps_event_shape
    with pytest.raises(ValueError, match="ActNormLayer: a leaf"):
        fl.ActNormLayer().apply_children(tf.zeros([1, 2]), lambda child, v: v)



# --- Old names: deprecated aliases for one release ---------------------------------------------

DEPRECATED_LAYERS = {
    "PermutationLayer": (lambda: fl.PermutationLayer("shuffle", seed=2), fl.PermuteChannelsLayer),
    "Conv1x1Layer": (lambda: fl.Conv1x1Layer(seed=5), fl.Invertible1x1ConvLayer),
    "LUConv1x1Layer": (lambda: fl.LUConv1x1Layer(seed=3), fl.LUInvertible1x1ConvLayer),
    "LogitLayer": (lambda: fl.LogitLayer(0.1), fl.LogitPreprocessingLayer),
    "BatchNormLayer": (lambda: fl.BatchNormLayer(momentum=0.9), fl.BatchNormalizationLayer),
}


@pytest.mark.parametrize("old", list(DEPRECATED_LAYERS))
def test_old_layer_names_warn_and_still_load_from_saved_configs(old):
    make, new = DEPRECATED_LAYERS[old]
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated.*{new.__name__}"):
        layer = make()
    assert isinstance(layer, new)
    layer.build(IMAGE)
    _perturb(layer)
    config = _json(keras.saving.serialize_keras_object(layer))
    assert config["registered_name"] == f"tfflow>{old}"  # what a .keras file saved before holds
    with pytest.warns(DeprecationWarning):
        loaded = keras.saving.deserialize_keras_object(config)
    assert type(loaded).__name__ == old
    loaded.set_weights(layer.get_weights())
    x = _data(IMAGE)
    for a, b in zip(_bijector_outputs(layer, x, None), _bijector_outputs(loaded, x, None)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("old, new, make", [
    ("ApplyToChannels", fb.FactorOut, lambda cls: cls(fb.ActNorm([0.1, 0.2], [0.3, -0.1]), 2)),
    ("RationalQuadraticSplineCoupling", fb.SplineCoupling,
     lambda cls: cls(lambda x_a: tf.concat([x_a] * 23, -1), num_bins=8)),
])
def test_old_bijector_names_warn_and_compute_the_same(old, new, make):
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated.*{new.__name__}"):
        before = make(getattr(fb, old))
    assert isinstance(before, new)
    x = _data(IMAGE)
    after = make(new)
    np.testing.assert_array_equal(before.inverse(x), after.inverse(x))
    np.testing.assert_array_equal(before.inverse_log_det_jacobian(x, 3),
                                  after.inverse_log_det_jacobian(x, 3))


def test_resnet_conditioner_old_argument_name_warns_and_old_configs_load():
    with pytest.warns(DeprecationWarning, match="`filters` is deprecated.*`hidden_channels`"):
        old = fl.ResNetConditioner(filters=4, out_channels=6, blocks=1)
    assert old.hidden_channels == 4
    new = fl.ResNetConditioner(4, 6, blocks=1)
    assert new.get_config()["hidden_channels"] == 4 and "filters" not in new.get_config()
    saved_before = dict(_json(keras.saving.serialize_keras_object(new)))
    saved_before["config"] = dict(saved_before["config"])
    saved_before["config"]["filters"] = saved_before["config"].pop("hidden_channels")
    with pytest.warns(DeprecationWarning):
        loaded = keras.saving.deserialize_keras_object(saved_before)
    assert loaded.hidden_channels == 4
    with pytest.raises(ValueError, match="ResNetConditioner: expected `hidden_channels` only"):
        fl.ResNetConditioner(4, 6, filters=4)


def test_realnvp_old_argument_name_filters_warns_and_builds_the_same_model():
    with pytest.warns(DeprecationWarning, match="RealNVP: argument `filters` is deprecated"):
        old = tfflow.models.RealNVP((4, 4, 1), scales=1, filters=4, blocks=1)
    new = tfflow.models.RealNVP((4, 4, 1), scales=1, hidden_channels=4, blocks=1)
    assert old.count_params() == new.count_params()
    with pytest.raises(ValueError, match="RealNVP: expected `hidden_channels` only"):
        tfflow.models.RealNVP((4, 4, 1), scales=1, filters=4, hidden_channels=4)


def test_glow_old_argument_names_levels_and_steps_per_level_warn_and_build_the_same_model():
    with pytest.warns(DeprecationWarning, match="Glow: argument `levels` is deprecated.*`scales`"):
        old = tfflow.models.Glow((4, 4, 1), levels=1, scales=None, steps_per_scale=2,
                                 hidden_channels=4)
    with pytest.warns(DeprecationWarning, match="`steps_per_level` is deprecated"):
        also_old = tfflow.models.Glow((4, 4, 1), scales=1, steps_per_level=2, hidden_channels=4)
    new = tfflow.models.Glow((4, 4, 1), scales=1, steps_per_scale=2, hidden_channels=4)
    assert old.count_params() == also_old.count_params() == new.count_params()
    assert [w.path for w in old.weights] == [w.path for w in new.weights]  # saved files load
    with pytest.raises(ValueError, match="Glow: expected `scales` only"):
        tfflow.models.Glow((4, 4, 1), scales=1, levels=1)
    with pytest.raises(ValueError, match="Glow: 3 scale.s. squeeze H and W by 8"):
        tfflow.models.Glow((4, 4, 1), scales=3)
