"""Each model's lifecycle: build, initialise, fit, gradients, exact log-dets, sampling, saving.

One registry, `MODELS`, `{name: Case(build, data)}`: every lifecycle test is
parametrised over it, so a new model joins all of them by one line; `VARIANTS`
adds architecture options to the checks that need no `fit` (exact log-dets,
gradients). Every model is tiny (at most a few thousand weights). What costs time
is tracing (`fit`'s train step, the autodiff Jacobians), so the fitted model is
shared by the tests that only read it (`fitted`, module scope), and only the
`traced_fit` cases trace the train step.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfflow
from tfflow import bijectors as fb
from tfflow.layers import ActNormLayer, GlowStepsLayer, LearnedPriorLayer
from tfflow.testing import check_bijector

tfb = tfp.bijectors

BATCH = 32
NUM_EXAMPLES = 128  # 4 batches: one epoch = 4 training steps.


# --- Data ----------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _digits(count: int = NUM_EXAMPLES):
    """`count` dequantised 8x8x1 digits in [0, 1) and their labels, always the same ones."""
    ds = tfflow.data.load("digits", "train", batch_size=count, shuffle=False, with_labels=True)
    x, labels = next(iter(ds))
    return x.numpy(), labels.numpy()


def _digits_images():
    return _digits()[0], None


def _digits_3_classes():
    x, labels = _digits()
    return x, (labels % 3).astype(np.int32)


def _digits_4x4x2():
    """Digits squeezed to [4, 4, 4], first two channels: a tiny image with structure."""
    x, _ = _digits()
    return tf.nn.space_to_depth(x, 2).numpy()[..., :2], None


@functools.lru_cache(maxsize=None)
def _two_moons():
    ds = tfflow.data.load("two_moons", "train", batch_size=NUM_EXAMPLES, shuffle=False,
                          num_examples=NUM_EXAMPLES)
    return next(iter(ds)).numpy(), None


# --- The registry ----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Case:
    """`build(dtype) -> FlowModel` and `data() -> (x, labels or None)`, numpy arrays.

    `traced_fit`: fit through Keras' traced train step (what users run). Tracing the
    step with its gradient and Adam update costs several seconds even for these tiny
    models, so the other cases fit eagerly (`run_eagerly=True`, the same `train_step`).
    """

    build: Callable[[str], tfflow.FlowModel]
    data: Callable[[], tuple]
    traced_fit: bool = False


MODELS = {
    "glow": Case(lambda dtype: tfflow.models.Glow(
        (8, 8, 1), scales=2, steps_per_scale=1, hidden_channels=8, num_levels=17, dtype=dtype),
        _digits_images, traced_fit=True),
    "glow_conditional": Case(lambda dtype: tfflow.models.Glow(
        (8, 8, 1), scales=2, steps_per_scale=1, hidden_channels=8, num_classes=3,
        num_levels=17, dtype=dtype), _digits_3_classes, traced_fit=True),
    "realnvp_image": Case(lambda dtype: tfflow.models.RealNVP(
        (8, 8, 1), scales=2, filters=8, blocks=1, num_levels=17, dtype=dtype), _digits_images),
    "realnvp_vector": Case(lambda dtype: tfflow.models.RealNVP(
        (2,), num_couplings=2, hidden_units=(8, 8), dtype=dtype), _two_moons,
        traced_fit=True),
    "nice_vector": Case(lambda dtype: tfflow.models.NICE(
        (2,), num_couplings=4, hidden_units=(16, 16), dtype=dtype), _two_moons),
    "nice_image": Case(lambda dtype: tfflow.models.NICE(
        (8, 8, 1), num_couplings=4, hidden_units=(16,), num_levels=17, dtype=dtype),
        _digits_images),
}

# Architecture options checked only where it is cheap (no `fit`): exact log-dets, gradients.
VARIANTS = {
    **MODELS,
    "glow_additive_shuffle": Case(lambda dtype: tfflow.models.Glow(
        (4, 4, 2), scales=1, steps_per_scale=2, hidden_channels=8, coupling="additive",
        permutation="shuffle", learn_top=False, num_levels=17, dtype=dtype), _digits_4x4x2),
    "glow_conv_glow_scale": Case(lambda dtype: tfflow.models.Glow(
        (4, 4, 2), scales=1, steps_per_scale=2, hidden_channels=8, permutation="conv",
        log_scale="glow", num_levels=17, dtype=dtype), _digits_4x4x2),
    "glow_reverse_3_levels": Case(lambda dtype: tfflow.models.Glow(
        (8, 8, 1), scales=3, steps_per_scale=1, hidden_channels=4, permutation="reverse",
        num_levels=17, dtype=dtype), _digits_images),
    "glow_spline": Case(lambda dtype: tfflow.models.Glow(
        (4, 4, 2), scales=1, steps_per_scale=1, hidden_channels=8, coupling="spline",
        num_bins=4, num_levels=17, dtype=dtype), _digits_4x4x2),
    "realnvp_vector_spline": Case(lambda dtype: tfflow.models.RealNVP(
        (2,), num_couplings=2, hidden_units=(8,), coupling="spline", num_bins=4,
        dtype=dtype), _two_moons),
}


def _batches(x, labels, batch_size: int = BATCH) -> tf.data.Dataset:
    """A fixed (unshuffled) dataset of `x` or `(x, labels)`."""
    return tf.data.Dataset.from_tensor_slices(x if labels is None else (x, labels)) \
        .batch(batch_size)


def _compile(model, run_eagerly: bool = False):
    # No warm-up and a brisk rate, so that one tiny epoch measurably lowers the loss.
    model.compile(learning_rate=3e-3, warmup_steps=0, run_eagerly=run_eagerly)


def _actnorm_count(model):
    """ActNorms in the model: one per ActNormLayer, K per GlowStepsLayer (stacked steps)."""
    return sum(1 if isinstance(l, ActNormLayer) else l.num_steps
               for _, l in model.flow.walk() if isinstance(l, (ActNormLayer, GlowStepsLayer)))


def _perturb(model, scale: float = 0.05, seed: int = 0):
    """Moves every trainable weight a little, so no coupling or prior is the identity."""
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:
        v.assign(v.numpy() + scale * rng.normal(size=v.shape).astype(v.dtype))


@dataclasses.dataclass
class Fitted:
    name: str
    model: tfflow.FlowModel
    x: np.ndarray
    labels: np.ndarray | None
    loss_before: float
    loss_after: float
    history: dict


@pytest.fixture(scope="module", params=list(MODELS))
def fitted(request) -> Fitted:
    """A model initialised on its data, evaluated, fitted one epoch, evaluated again."""
    case = MODELS[request.param]
    x, labels = case.data()
    model = case.build("float32")
    model.initialize(x, labels)
    _compile(model, run_eagerly=not case.traced_fit)
    data = _batches(x, labels)
    whole = _batches(x, labels, len(x))  # evaluate in one batch: cheaper eagerly
    before = model.evaluate(whole, verbose=0, return_dict=True)["loss"]
    history = model.fit(data, epochs=1, verbose=0).history
    after = model.evaluate(whole, verbose=0, return_dict=True)["loss"]
    return Fitted(request.param, model, x, labels, before, after, history)


# --- Initialisation ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(MODELS))
def test_initialize_standardises_every_actnorm(name, monkeypatch):
    case = MODELS[name]
    x, labels = case.data()
    model = case.build("float32")
    actnorms = _actnorm_count(model)
    data_initialized = [l for _, l in model.flow.walk() if l.needs_data_init]  # ActNorm, BN
    assert model.is_initialized == (not data_initialized)
    assert model.initialize(x, labels) == bool(data_initialized)
    assert model.is_initialized
    # A second call is a no-op that says so.
    weights = [w.numpy() for w in model.weights]
    assert model.initialize(x[:7], None if labels is None else labels[:7]) is False
    for before, w in zip(weights, model.weights):
        np.testing.assert_array_equal(before, w.numpy())

    # With the assigned weights, every ActNorm's output (data -> latent) has mean 0 and
    # std 1 per channel on that batch: record the outputs of the ordinary bijectors.
    outputs = []
    # Instrumented at the hook every ActNorm direction runs through (no public tap).
    original = fb.ActNorm._inverse_and_log_det

    def recording(self, y):
        z, ildj = original(self, y)
        outputs.append(z.numpy())
        return z, ildj

    monkeypatch.setattr(fb.ActNorm, "_inverse_and_log_det", recording)
    model.bijector_for(None if labels is None else tf.constant(labels)).inverse(tf.constant(x))
    assert len(outputs) == actnorms
    for z in outputs:
        axes = tuple(range(z.ndim - 1))
        np.testing.assert_allclose(z.mean(axis=axes), 0., atol=1e-4)
        np.testing.assert_allclose(z.std(axis=axes), 1., atol=1e-3)


# --- Training ----------------------------------------------------------------------------------

def test_fit_logs_loss_and_bits_per_dim(fitted):
    assert set(fitted.history) >= {"loss", "bits_per_dim"}
    assert np.isfinite(fitted.history["loss"]).all()
    model = fitted.model
    assert int(model.optimizer.iterations.numpy()) == math.ceil(len(fitted.x) / BATCH)
    # bits/dim is the loss (nats/dim) plus the dequantisation offset, in bits.
    offset = math.log(model.num_levels) if model.num_levels else 0.
    np.testing.assert_allclose(fitted.history["bits_per_dim"][0],
                               (fitted.history["loss"][0] + offset) / math.log(2.), rtol=1e-5)


def test_fit_lowers_the_evaluated_loss(fitted):
    # RealNVP's batch norm evaluates with running averages; they start at the moments of
    # the initialisation batch (not mean 0 / variance 1), so a short fit lowers this too.
    assert fitted.loss_after < fitted.loss_before


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_trainable_weight_gets_a_gradient(name):
    case = VARIANTS[name]
    x, labels = case.data()
    model = case.build("float32")
    model.initialize(x, labels)
    labels = None if labels is None else tf.constant(labels)

    def gradients():
        with tf.GradientTape() as tape:
            # fit's loss from public parts: the training-mode bijector over the base.
            flow = tfp.distributions.TransformedDistribution(
                model.base_distribution(), model.bijector_for(labels, training=True))
            loss = -tf.reduce_mean(flow.log_prob(tf.constant(x)))
        return loss, tape.gradient(loss, model.trainable_variables)

    _, grads = gradients()
    for v, g in zip(model.trainable_variables, grads):
        assert g is not None, f"{v.path}: no gradient"
        # (The class embedding's gradient comes from a gather: IndexedSlices.)
        assert np.isfinite(tf.convert_to_tensor(g).numpy()).all(), \
            f"{v.path}: non-finite gradient"
    # Each coupling's last layer starts at zero (the flow starts as the identity), so on
    # the first step the layers before it, and its output gain, get exactly zero
    # gradient. One optimizer step makes that layer non-zero; then every weight counts.
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    _, grads = gradients()
    for v, g in zip(model.trainable_variables, grads):
        g = tf.convert_to_tensor(g).numpy()
        assert np.isfinite(g).all(), f"{v.path}: non-finite gradient"
        assert np.any(g != 0.), f"{v.path}: all-zero gradient after one step"


@pytest.mark.parametrize("name", list(MODELS))
def test_float64_end_to_end(name):
    case = MODELS[name]
    x, labels = case.data()
    model = case.build("float64")
    assert all(w.dtype == "float64" for w in model.trainable_weights)
    assert model.is_initialized == (not any(l.needs_data_init for _, l in model.flow.walk()))
    _compile(model, run_eagerly=True)  # one step: tracing would cost more than it runs
    # One training step; `fit` runs the ActNorm initialisation first by itself.
    history = model.fit(_batches(x[:BATCH], None if labels is None else labels[:BATCH]),
                        epochs=1, verbose=0).history
    assert model.is_initialized
    assert np.isfinite(history["loss"]).all()
    log_prob = model.log_prob(x[:4], None if labels is None else labels[:4])
    assert log_prob.dtype == tf.float64 and log_prob.shape == [4]
    assert np.isfinite(log_prob.numpy()).all()


# --- Exact log-densities -------------------------------------------------------------------------

def _leaves(bijector, z):
    """(leaf bijector, its input in the latent -> data direction) for every part of a chain."""
    # A `tfb.Chain` of non-composite bijectors is TFP's private `_Chain`: test the base.
    if isinstance(bijector, tfb.Composition):
        for part in reversed(bijector.bijectors):  # Chain's forward applies the last first.
            yield from _leaves(part, z)
            z = part.forward(z)
    elif isinstance(bijector, fb.FactorOut):
        k = bijector.parameters["channels"]
        yield bijector, z
        yield from _leaves(bijector.bijector, z[..., :k])
    else:
        yield bijector, z


# Kinds of chain parts already checked on their own in this session (see below).
_CHECKED_PARTS: set = set()


@pytest.mark.parametrize("name", list(VARIANTS))
def test_log_det_against_autodiff_jacobian_float64(name):
    case = VARIANTS[name]
    x, labels = case.data()
    model = case.build("float64")
    x, labels = x[:3].astype(np.float64), None if labels is None else labels[:3]
    model.initialize(x, labels)
    _perturb(model)
    bijector = model.bijector_for(None if labels is None else tf.constant(labels))
    z = bijector.inverse(tf.constant(x))
    chain = bijector
    if model.latent_shape != model.event_shape:
        # `check_bijector` takes one event rank for both directions: reshape the data
        # back to the latent's shape (log-det 0) for a NICE on images.
        chain = tfb.Chain([tfb.Reshape(model.latent_shape, model.event_shape), bijector])
    check_bijector(chain, z, event_ndims=len(model.latent_shape))
    # Then each part on its own, at the points the chain hands it. Each check costs about
    # a second (the autodiff Jacobian), so each kind of part (class, partition, scale
    # function) is checked once per session, in the first model that has it. TFP's
    # `Reshape` (log-det 0) is left to the whole-chain check, for the reason above.
    parts = 0
    for part, z_part in _leaves(bijector, z):
        parts += 1
        kind = (type(part).__name__, repr(getattr(part, "partition", None)),
                getattr(part.parameters.get("log_scale_fn"), "__name__", None))
        if kind in _CHECKED_PARTS or \
                part.forward_min_event_ndims != part.inverse_min_event_ndims:
            continue
        check_bijector(part, z_part, event_ndims=z_part.shape.rank - 1)
        _CHECKED_PARTS.add(kind)
    assert parts > 1


# --- The model as a distribution -----------------------------------------------------------------

def _labels(fitted, n):
    return None if fitted.labels is None else fitted.labels[:n]


def test_log_prob_matches_the_tfp_distribution(fitted):
    model, x, labels = fitted.model, fitted.x[:16], _labels(fitted, 16)
    got = model.log_prob(x, labels)
    assert got.shape == [16] and np.isfinite(got.numpy()).all()
    distribution = model.distribution if labels is None else \
        model.conditional_distribution(tf.constant(labels))
    want = distribution.log_prob(x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4 * model.num_dims ** 0.5)
    # Calling the model (Keras' `call`) gives log_prob too, and bits/dim follows from it.
    if labels is None:
        np.testing.assert_allclose(model(x), got, rtol=1e-5, atol=1e-4)
    bits = model.bits_per_dim(x, labels)
    offset = math.log(model.num_levels) if model.num_levels else 0.
    np.testing.assert_allclose(bits, (-got / model.num_dims + offset) / math.log(2.), rtol=1e-5)


def test_sample_encode_decode_interpolate(fitted):
    # Every call uses batches of 2, so each traced function is traced once.
    model = fitted.model
    label = None if fitted.labels is None else 1
    for temperature in (0.7, 1.0):
        s = model.sample(2, temperature=temperature, seed=3, labels=label)
        assert s.shape == [2] + list(model.event_shape)
        assert np.isfinite(s.numpy()).all()
    np.testing.assert_array_equal(model.sample(2, seed=[1, 2], labels=label),
                                  model.sample(2, seed=[1, 2], labels=label))
    assert not np.allclose(model.sample(2, seed=1, labels=label),
                           model.sample(2, seed=2, labels=label))
    x, labels = fitted.x[:2], None if label is None else np.full([2], label, np.int32)
    z = model.encode(x, labels)
    assert z.shape == [2] + list(model.latent_shape)
    np.testing.assert_allclose(model.decode(z, labels), x, atol=1e-4)
    # The straight latent line from x[0] to x[1] starts and ends at them.
    line = model.interpolate(x[0], x[1], steps=2, labels=label)
    assert line.shape == [2] + list(model.event_shape)
    np.testing.assert_allclose(line, x, atol=1e-4)


# --- Saving --------------------------------------------------------------------------------------

def test_keras_save_load_round_trip(fitted, tmp_path, monkeypatch):
    model, x, labels = fitted.model, fitted.x[:16], _labels(fitted, 16)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, tfflow.FlowModel)
    np.testing.assert_allclose(loaded.log_prob(x, labels), model.log_prob(x, labels),
                               rtol=1e-6, atol=1e-6)
    assert loaded.is_initialized
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    steps = int(model.optimizer.iterations.numpy())
    assert steps > 0 and int(loaded.optimizer.iterations.numpy()) == steps
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    # Resuming never re-initialises ActNorm and continues the optimizer's count.
    def no_reinit(*args, **kwargs):
        raise AssertionError("fit re-ran the ActNorm initialisation after a reload")

    monkeypatch.setattr(loaded, "initialize", no_reinit)
    loaded.run_eagerly = True  # one step: cheaper than tracing the train step again
    loaded.fit(_batches(fitted.x[:BATCH], _labels(fitted, BATCH)), epochs=1, verbose=0)
    assert int(loaded.optimizer.iterations.numpy()) == steps + 1


# --- Readability ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(MODELS))
def test_summary_names_the_layers(name):
    model = MODELS[name].build("float32")
    lines = []
    model.summary(line_length=160, print_fn=lambda line, **kwargs: lines.append(line))
    text = "\n".join(lines)
    assert model.flow.name in text
    # Every flow layer is listed, nested ones too, not just the top-level chain.
    names = [layer.name for _, layer in model.flow.walk()][1:]  # below the chain itself
    assert len(names) > 1 and all(n in text for n in names), text


# --- Class-conditional Glow ----------------------------------------------------------------------

def test_class_conditional_glow_needs_and_uses_labels():
    case = MODELS["glow_conditional"]
    x, labels = case.data()
    model = case.build("float32")
    model.initialize(x, labels)
    with pytest.raises(ValueError, match="class-conditional"):
        model.log_prob(x[:4])
    with pytest.raises(ValueError, match="class-conditional"):
        model.sample(2)
    # The class embedding starts at zero (labels do not matter yet); move it.
    prior = [l for _, l in model.flow.walk() if isinstance(l, LearnedPriorLayer)]
    assert len(prior) == 1
    prior[0].class_embedding.assign(
        np.random.default_rng(0).normal(size=prior[0].class_embedding.shape) * 0.3)
    by_label = [model.log_prob(x[:4], np.full([4], k, np.int32)).numpy() for k in range(3)]
    assert not np.allclose(by_label[0], by_label[1])
    assert not np.allclose(by_label[1], by_label[2])
    # A scalar label applies to every sample; per-sample labels work too.
    assert model.sample(3, labels=2, seed=0).shape == [3, 8, 8, 1]
    assert model.sample(3, labels=[0, 1, 2], seed=0).shape == [3, 8, 8, 1]
    # Samples of one label decode from the same latent as with that label per sample.
    np.testing.assert_allclose(model.sample(3, labels=2, seed=0),
                               model.sample(3, labels=[2, 2, 2], seed=0), atol=1e-6)
    # Training data without labels is refused.
    _compile(model)
    with pytest.raises(ValueError, match="labels"):
        model.fit(_batches(x[:BATCH], None), epochs=1, verbose=0)


def test_fit_on_arrays_initialises_with_the_labels_given_as_y():
    # `fit(x, y)` with arrays: the automatic ActNorm initialisation needs `y` too, since the
    # class-conditional prior sits at the end of the chain it runs.
    x, labels = _digits_3_classes()
    model = tfflow.models.Glow((8, 8, 1), scales=1, steps_per_scale=1, hidden_channels=4,
                               num_classes=3, num_levels=17)
    _compile(model, run_eagerly=True)
    assert not model.is_initialized
    model.fit(x[:BATCH], labels[:BATCH], batch_size=BATCH, epochs=1, verbose=0)
    assert model.is_initialized and int(model.optimizer.iterations.numpy()) == 1


# --- Bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(4, 8, 8), (4, 8, 8, 1, 1), (4, 4, 4, 1), (4, 8, 8, 3)])
def test_log_prob_rejects_wrong_image_shapes(shape):
    model = MODELS["glow"].build("float32")
    with pytest.raises(ValueError, match=r"FlowModel.*\[batch, 8, 8, 1\]"):
        model.log_prob(np.zeros(shape, np.float32))
    with pytest.raises(ValueError, match=r"FlowModel.*\[batch, 8, 8, 1\]"):
        model.encode(np.zeros(shape, np.float32))


def test_decode_rejects_wrong_latent_shapes():
    model = MODELS["nice_image"].build("float32")  # latent [64], data [8, 8, 1]
    with pytest.raises(ValueError, match=r"FlowModel.*z of shape \[batch, 64\]"):
        model.decode(np.zeros([4, 8, 8, 1], np.float32))


@pytest.mark.parametrize("shape", [(4,), (4, 3), (4, 2, 1)])
def test_log_prob_rejects_wrong_vector_shapes(shape):
    model = MODELS["nice_vector"].build("float32")
    with pytest.raises(ValueError, match=r"FlowModel.*\[batch, 2\]"):
        model.log_prob(np.zeros(shape, np.float32))


def test_log_prob_rejects_integer_data():
    model = MODELS["nice_vector"].build("float32")
    with pytest.raises(ValueError, match="FlowModel.*floating"):
        model.log_prob(np.zeros([4, 2], np.int32))


def test_glow_rejects_too_many_scales():
    with pytest.raises(ValueError, match=r"Glow: 4 scale.*\(8, 8, 1\)"):
        tfflow.models.Glow((8, 8, 1), scales=4, steps_per_scale=1, hidden_channels=4)


def test_build_by_name():
    model = tfflow.models.build("nice", (2,), num_couplings=2, hidden_units=(4,))
    assert isinstance(model, tfflow.FlowModel) and model.event_shape == (2,)
    with pytest.raises(ValueError, match="unknown model 'nope'.*glow"):
        tfflow.models.build("nope", (2,))
