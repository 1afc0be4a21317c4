"""Every tfflow bijector, with parameters and inputs for the shared checks.

One line per entry: `name: factory(dtype) -> (bijector, x)` where `x` is a
batch in the forward (latent) domain. Adding a bijector here runs it through
every test in test_bijectors.py.
"""

import numpy as np
import tensorflow as tf
from tensorflow_probability import bijectors as tfb

from tfflow import bijectors as fb

BATCH = 3
IMAGE = (4, 4, 4)
VECTOR = (5,)


def _rng(seed=0):
    return np.random.default_rng(seed)


def _normal(shape, dtype, seed=0, scale=1.0):
    return tf.constant(_rng(seed).normal(size=shape) * scale, dtype)


def _channels_net(out_channels, dtype, seed=1):
    """A fixed non-linear 'network' from C_in channels to out_channels (any rank)."""
    cache = {}

    def net(x):
        c_in = x.shape[-1]
        if c_in not in cache:
            cache[c_in] = _normal([c_in, out_channels], dtype, seed, scale=0.7)
        flat = tf.reshape(x, [-1, c_in])
        out = tf.tanh(tf.matmul(flat, cache[c_in])) + 0.3 * tf.sin(flat[:, :1] * 2.)
        return tf.reshape(out, tf.concat([tf.shape(x)[:-1], [out_channels]], 0))
    return net


def _spatial_net(out_channels, dtype, seed=2):
    """A conditioner that mixes neighbouring pixels (a fixed 3x3 conv), for checkerboards."""
    kernel = {}

    def net(x):
        c_in = x.shape[-1]
        if c_in not in kernel:
            kernel[c_in] = _normal([3, 3, c_in, out_channels], dtype, seed, scale=0.3)
        flat = tf.reshape(x, tf.concat([[-1], tf.shape(x)[-3:]], 0))
        out = tf.tanh(tf.nn.conv2d(flat, kernel[c_in], 1, "SAME"))
        return tf.reshape(out, tf.concat([tf.shape(x)[:-1], [out_channels]], 0))
    return net


def actnorm(dtype, event=IMAGE):
    c = event[-1]
    return (fb.ActNorm(_normal([c], dtype, 3), _normal([c], dtype, 4, 0.5),
                       event_ndims=len(event)),
            _normal((BATCH,) + event, dtype))


def batch_norm(dtype, event=IMAGE):
    c = event[-1]
    variance = tf.constant(_rng(5).uniform(0.2, 3., size=[c]), dtype)
    return (fb.BatchNormalization(_normal([c], dtype, 3), variance, _normal([c], dtype, 6, 0.3),
                                  _normal([c], dtype, 7), event_ndims=len(event)),
            _normal((BATCH,) + event, dtype))


def _random_matrix(c, dtype):
    return _normal([c, c], dtype, 8) + 2. * tf.eye(c, dtype=dtype)


def conv_full(dtype, event=IMAGE):
    return (fb.Invertible1x1Conv(_random_matrix(event[-1], dtype), event_ndims=len(event)),
            _normal((BATCH,) + event, dtype))


def conv_lu(dtype, event=IMAGE):
    params = fb.lu_parameters(_random_matrix(event[-1], dtype))
    return (fb.LUInvertible1x1Conv(**params, event_ndims=len(event)),
            _normal((BATCH,) + event, dtype))


def coupling(cls, partition, dtype, event=IMAGE, spatial=False, **kwargs):
    c = event[-1]
    per_channel = 3 * kwargs["num_bins"] - 1 if "num_bins" in kwargs else cls.params_per_channel
    out = per_channel * partition.transformed_channels(c)
    net = (_spatial_net if spatial else _channels_net)(out, dtype)
    return (cls(net, partition, event_ndims=len(event), dtype=dtype, **kwargs),
            _normal((BATCH,) + event, dtype))


def _made(per_dim, dtype, dims=VECTOR[0], seed=11):
    """A MADE with every weight random (its output layer starts at zero in a model)."""
    from tfflow import layers as fl  # pylint: disable=import-outside-toplevel
    made = fl.MADE(dims, per_dim, hidden_units=(8, 8), dtype=tf.as_dtype(dtype).name)
    made.build((None, dims))
    rng = _rng(seed)
    for weight in made.weights:
        weight.assign(rng.normal(size=weight.shape) * 0.5)
    return made


def autoregressive(cls, transform, dtype):
    return (cls(_made(transform.params_per_dim, dtype), transform, dtype=dtype),
            _normal((BATCH,) + VECTOR, dtype))


def triangular_affine(dtype):
    lower = _normal(VECTOR * 2, dtype, 12, 0.5)
    return (fb.TriangularAffine(_normal(VECTOR, dtype, 13), _normal(VECTOR, dtype, 14, 0.3),
                                lower),
            _normal((BATCH,) + VECTOR, dtype))


def squeeze(dtype):
    return fb.Squeeze(), _normal((BATCH, 2, 2, 16), dtype)


def inverted_squeeze(dtype):
    return tfb.Invert(fb.Squeeze()), _normal((BATCH, 4, 4, 2), dtype)


def permute(dtype, kind, event=IMAGE):
    make = fb.PermuteChannels.reverse if kind == "reverse" else \
        (lambda c, **kw: fb.PermuteChannels.shuffle(c, seed=3, **kw))
    return make(event[-1], event_ndims=len(event)), _normal((BATCH,) + event, dtype)


def logit(dtype):
    return fb.LogitPreprocessing(0.05), _normal((BATCH,) + IMAGE, dtype, scale=2.)


def glow_step(dtype):
    """ActNorm -> 1x1 conv -> affine coupling, in TFP's Chain (last applied first)."""
    an, x = actnorm(dtype)
    conv, _ = conv_lu(dtype)
    cpl, _ = coupling(fb.AffineCoupling, fb.ChannelSplit(), dtype)
    return tfb.Chain([an, conv, cpl]), x


def reversible_glow_step(dtype, event=IMAGE):
    """The Glow step as a ReversibleChain (parts as factories; the checkerboard's spatial net too)."""
    an, x = actnorm(dtype, event)
    conv, _ = conv_lu(dtype, event)
    cpl, _ = coupling(fb.AffineCoupling, fb.ChannelSplit(), dtype, event)
    parts = [an, conv, cpl]
    if len(event) == 3:
        parts.append(coupling(fb.AdditiveCoupling, fb.Checkerboard(1), dtype, spatial=True)[0])
    return fb.ReversibleChain(
        [(fb.BijectorProgram(lambda params, p=p: p, len(event), compile=False), [])
         for p in parts], event_ndims=len(event)), x


def program_actnorm(dtype, event=IMAGE):
    """ActNorm through a shared traced program, its parameters passed in explicitly."""
    an, x = actnorm(dtype, event)
    program = fb.BijectorProgram(
        lambda params: fb.ActNorm(params[0], params[1], event_ndims=len(event)), len(event))
    return fb.ProgramBijector(program, [an.loc, an.log_scale]), x


def program_chain_repeated_step(dtype, event=IMAGE):
    """ActNorm -> coupling twice as a ProgramChain: the repeat becomes one shared program.

    Each program builds its part inside its own trace, as tfflow's layers do.
    (Without the test 1x1 conv: twice through it, float32 round trips drift to 2e-4.)
    """
    parts = (actnorm, lambda d, e: coupling(fb.AffineCoupling, fb.ChannelSplit(), d, e))
    programs = [fb.BijectorProgram(lambda params, make=make: make(dtype, event)[0], len(event))
                for make in parts]
    return (fb.ProgramChain([(program, []) for program in programs * 2], event_ndims=len(event)),
            _normal((BATCH,) + event, dtype))


def glow_steps(dtype, *, coupling="affine", permutation="lu", memory_saving=False,
               unroll=None, event=IMAGE, num_steps=3, context_units=None):
    """K=3 stacked Glow steps, every parameter non-trivial (random, LU from a random matrix).

    With `context_units`, conditional steps for one fixed random context row
    (broadcast over any batch, static or None).
    """
    specs = fb.glow_steps_parameters(event[-1], 5, coupling=coupling, permutation=permutation,
                                     num_bins=4, context_units=context_units)
    params = {}
    for index, (name, spec) in enumerate(sorted(specs.items())):
        shape = (num_steps,) + spec.shape
        if spec.integer:
            rng = _rng(index)
            params[name] = tf.constant(np.stack([rng.permutation(spec.shape[0])
                                                 for _ in range(num_steps)]), tf.int32)
        elif name == "sign_s":
            params[name] = tf.constant(np.where(_rng(index).normal(size=shape) > 0, 1., -1.),
                                       dtype)
        elif name in ("lower", "upper", "kernel"):
            # Well conditioned, so that float32 round trips through 3 steps stay tight.
            eye = tf.eye(event[-1], dtype=dtype) if name == "kernel" else 0.
            params[name] = eye + _normal(shape, dtype, 20 + index, scale=0.2)
        else:
            params[name] = _normal(shape, dtype, 20 + index, scale=0.2)
    context = None if context_units is None else _normal((context_units,), dtype, 40)
    return (fb.GlowSteps(params, coupling=coupling, permutation=permutation, num_bins=4,
                         memory_saving=memory_saving, unroll=unroll, context=context),
            _normal((BATCH,) + event, dtype))


def apply_to_channels(dtype):
    # Squeeze, permute, unsqueeze: shape-preserving, as a multi-scale level is.
    inner = tfb.Chain([fb.Squeeze(), fb.PermuteChannels.reverse(8), tfb.Invert(fb.Squeeze())])
    cpl, _ = coupling(fb.AffineCoupling, fb.ChannelSplit(), dtype, event=(4, 4, 2))
    return (fb.FactorOut(tfb.Chain([inner, cpl]), 2),
            _normal((BATCH,) + IMAGE, dtype))


def elementwise_affine(dtype):
    return (fb.ElementwiseAffine(_normal((BATCH, 1, 1, 4), dtype, 9), _normal(IMAGE, dtype, 10, .3)),
            _normal((BATCH,) + IMAGE, dtype))


REGISTRY = {
    "actnorm_image": actnorm,
    "actnorm_vector": lambda d: actnorm(d, VECTOR),
    "batch_norm_image": batch_norm,
    "batch_norm_vector": lambda d: batch_norm(d, VECTOR),
    "conv_full_image": conv_full,
    "conv_full_vector": lambda d: conv_full(d, VECTOR),
    "conv_lu_image": conv_lu,
    "conv_lu_vector": lambda d: conv_lu(d, VECTOR),
    "additive_channel_image": lambda d: coupling(fb.AdditiveCoupling, fb.ChannelSplit(), d),
    "additive_checkerboard": lambda d: coupling(fb.AdditiveCoupling, fb.Checkerboard(1), d,
                                                spatial=True),
    "additive_alternating_vector": lambda d: coupling(fb.AdditiveCoupling,
                                                      fb.AlternatingMask(0), d, VECTOR),
    "affine_channel_image": lambda d: coupling(fb.AffineCoupling, fb.ChannelSplit(), d),
    "affine_channel_glow_scale": lambda d: coupling(fb.AffineCoupling, fb.ChannelSplit(1), d,
                                                    log_scale_fn=fb.glow_log_scale),
    "affine_checkerboard": lambda d: coupling(fb.AffineCoupling, fb.Checkerboard(0), d,
                                              spatial=True),
    "affine_alternating_vector": lambda d: coupling(fb.AffineCoupling, fb.AlternatingMask(1),
                                                    d, VECTOR),
    "affine_half_vector": lambda d: coupling(fb.AffineCoupling, fb.ChannelSplit(1), d, VECTOR),
    "spline_channel_image": lambda d: coupling(fb.SplineCoupling,
                                               fb.ChannelSplit(), d, num_bins=4),
    "spline_alternating_vector": lambda d: coupling(fb.SplineCoupling,
                                                    fb.AlternatingMask(0), d, VECTOR,
                                                    num_bins=5, bound=2.),
    "maf_affine": lambda d: autoregressive(fb.MaskedAutoregressive, fb.AffineTransform(), d),
    "maf_spline": lambda d: autoregressive(fb.MaskedAutoregressive,
                                           fb.SplineTransform(5, 2.), d),
    "iaf_affine": lambda d: autoregressive(fb.InverseAutoregressive, fb.AffineTransform(), d),
    "iaf_spline": lambda d: autoregressive(fb.InverseAutoregressive,
                                           fb.SplineTransform(4, 1.5), d),
    "triangular_affine": triangular_affine,
    "squeeze": squeeze,
    "inverted_squeeze": inverted_squeeze,
    "permute_reverse_image": lambda d: permute(d, "reverse"),
    "permute_shuffle_vector": lambda d: permute(d, "shuffle", VECTOR),
    "logit_preprocessing": logit,
    "glow_step_chain": glow_step,
    "reversible_glow_step_image": reversible_glow_step,
    "program_actnorm_image": program_actnorm,
    "program_chain_repeated_step": program_chain_repeated_step,
    # Unrolled eagerly and under XLA, a tf.while_loop in tf.function: both paths checked.
    "glow_steps_affine_lu": glow_steps,
    "glow_steps_additive_shuffle_memory_saving": lambda d: glow_steps(
        d, coupling="additive", permutation="shuffle", memory_saving=True),
    "glow_steps_spline_conv": lambda d: glow_steps(d, coupling="spline", permutation="conv"),
    "glow_steps_affine_reverse_memory_saving": lambda d: glow_steps(
        d, permutation="reverse", memory_saving=True),
    "glow_steps_conditional_memory_saving": lambda d: glow_steps(
        d, memory_saving=True, context_units=2),
    "apply_to_channels": apply_to_channels,
    "elementwise_affine_batched": elementwise_affine,
}
