"""Layers for vector flows: the MADE network, autoregressive layers, the Gaussian start.

`MADE` is a Keras 3 layer (TFP's `AutoregressiveNetwork` is a tf_keras one);
`MaskedAutoregressiveLayer` / `InverseAutoregressiveLayer` own one and hand
out `tfflow.bijectors.MaskedAutoregressive` / `InverseAutoregressive`.
`StandardizeLayer` and `TriangularAffineLayer` are the data side of tfflow's
vector models: the table's own units in, and a start at the Gaussian fit.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfflow import bijectors as fb
from tfflow.layers.base import FlowContext, FlowLayer, deserialize, serialize
from tfflow.layers.conditioners import check_context
from tfflow.layers.normalization import (ActNormLayer, _InitializingActNorm,
                                         _InitializingNormalization)

__all__ = ["InverseAutoregressiveLayer", "MADE", "MaskedAutoregressiveLayer", "StandardizeLayer",
           "TriangularAffineLayer", "elementwise_transform"]

TRANSFORMS = ("affine", "spline")


def made_masks(dims: int, hidden_units: tuple[int, ...], params_per_dim: int) -> list[np.ndarray]:
    """MADE's connectivity masks, input -> hidden... -> output, as float arrays.

    Input `d` (0-based) has degree `d + 1`; hidden units cycle through the
    degrees `1..D-1`; output `(d, p)` (entry d's p-th parameter) has degree
    `d + 1`. A weight from degree `a` to a hidden unit of degree `b` exists
    when `b >= a`, and to an output of degree `c` when `c > a`, so output `d`
    sees exactly the inputs before it.
    """
    degrees = [np.arange(1, dims + 1)]
    for units in hidden_units:
        degrees.append(np.arange(units) % max(dims - 1, 1) + 1)
    masks = [(later[None, :] >= earlier[:, None]).astype(np.float32)
             for earlier, later in zip(degrees[:-1], degrees[1:])]
    out_degrees = np.repeat(np.arange(1, dims + 1), params_per_dim)
    masks.append((out_degrees[None, :] > degrees[-1][:, None]).astype(np.float32))
    return masks


@keras.saving.register_keras_serializable(package="tfflow")
class MADE(keras.layers.Layer):
    """Masked autoencoder for distribution estimation (Germain et al., 2015).

    A ReLU MLP on [..., D] whose weights are masked so that output entry `d`
    (its `params_per_dim` values, grouped: the output is
    [..., D * params_per_dim], entry-major) depends only on inputs `0..d-1`.
    The output layer starts at zero, so a flow built on it starts as the
    identity.

    With `context_units = C`, `call(x, context)` also takes a context
    [..., C] (broadcast against x's batch), connected without a mask to every
    hidden layer and to the output: every entry's parameters may depend on
    all of it (a conditional MADE, as in conditional MAF/NSF).
    """

    def __init__(self, dims: int, params_per_dim: int, hidden_units=(64, 64),
                 context_units: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.dims = int(dims)
        self.params_per_dim = int(params_per_dim)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.context_units = None if context_units is None else int(context_units)
        if self.context_units is not None and self.context_units < 1:
            raise ValueError(f"MADE: expected context_units >= 1 or None, got {context_units}.")
        if self.dims < 1 or self.params_per_dim < 1 or any(u < 1 for u in self.hidden_units):
            raise ValueError(f"MADE: expected dims >= 1, params_per_dim >= 1 and positive "
                             f"hidden_units, got dims={dims}, params_per_dim={params_per_dim}, "
                             f"hidden_units={hidden_units}.")
        if self.hidden_units and self.dims > 1 and min(self.hidden_units) < self.dims - 1:
            raise ValueError(f"MADE: every hidden layer needs at least dims - 1 = "
                             f"{self.dims - 1} units so that each input can reach the outputs "
                             f"after it, got hidden_units={self.hidden_units}.")

    def build(self, input_shape):
        if input_shape[-1] != self.dims:
            raise ValueError(f"MADE: expected inputs with {self.dims} entries (last axis), got "
                             f"shape {tuple(input_shape)}.")
        self._masks = [tf.constant(m) for m in
                       made_masks(self.dims, self.hidden_units, self.params_per_dim)]
        sizes = (self.dims,) + self.hidden_units + (self.dims * self.params_per_dim,)
        self.kernels, self.biases, self.context_kernels = [], [], []
        for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            last = index == len(sizes) - 2
            init = "zeros" if last else "glorot_uniform"
            self.kernels.append(self.add_weight(name=f"kernel_{index}", shape=(fan_in, fan_out),
                                                initializer=init))
            self.biases.append(self.add_weight(name=f"bias_{index}", shape=(fan_out,),
                                               initializer="zeros"))
            if self.context_units is not None:
                self.context_kernels.append(self.add_weight(
                    name=f"context_kernel_{index}", shape=(self.context_units, fan_out),
                    initializer=init))
        super().build(input_shape)

    def call(self, x, context=None):
        check_context("MADE", self.context_units, context)
        flat = tf.reshape(x, [-1, self.dims])
        h = tf.cast(flat, self.compute_dtype)
        if context is not None:
            context = tf.broadcast_to(tf.cast(context, self.compute_dtype), tf.concat(
                [tf.shape(x)[:-1], [self.context_units]], 0))
            context = tf.reshape(context, [-1, self.context_units])
        last = len(self.kernels) - 1
        for index, (kernel, bias) in enumerate(zip(self.kernels, self.biases)):
            mask = tf.cast(self._masks[index], self.compute_dtype)
            h = tf.matmul(h, tf.cast(kernel, self.compute_dtype) * mask) + \
                tf.cast(bias, self.compute_dtype)
            if context is not None:
                h += tf.matmul(context, tf.cast(self.context_kernels[index], self.compute_dtype))
            if index < last:
                h = tf.nn.relu(h)
        return tf.reshape(h, tf.concat([tf.shape(x)[:-1], [self.dims * self.params_per_dim]],
                                       0))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.dims * self.params_per_dim,)

    def get_config(self):
        return {**super().get_config(), "dims": self.dims, "params_per_dim": self.params_per_dim,
                "hidden_units": list(self.hidden_units), "context_units": self.context_units}


def elementwise_transform(kind: str, *, num_bins: int = 8, bound: float = 5.0,
                          owner: str = "tfflow") -> fb.ElementwiseTransform:
    """The elementwise transform by name: "affine" or "spline"."""
    if kind == "affine":
        return fb.AffineTransform()
    if kind == "spline":
        return fb.SplineTransform(num_bins, bound, owner=owner)
    raise ValueError(f"{owner}: transform must be one of {TRANSFORMS}, got {kind!r}.")


class _AutoregressiveLayer(FlowLayer):
    """Owns a MADE and hands out an autoregressive bijector on [D] vectors."""

    event_ndims = 1
    bijector_class: type = fb.MaskedAutoregressive

    def __init__(self, hidden_units=(64, 64), transform: str = "affine", num_bins: int = 8,
                 bound: float = 5.0, network_dtype=None, made: MADE | dict | None = None,
                 context_units: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.context_units = None if context_units is None else int(context_units)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.transform = str(transform)
        self.num_bins = int(num_bins)
        self.bound = float(bound)
        # Checks the names and values now, not at the first call.
        self._transform = elementwise_transform(self.transform, num_bins=self.num_bins,
                                                bound=self.bound, owner=type(self).__name__)
        self.network_dtype = network_dtype
        self.made = deserialize(made) if isinstance(made, dict) else made

    def build(self, input_shape):
        dims = input_shape[-1]
        if self.made is None:
            self.made = MADE(dims, self._transform.params_per_dim, self.hidden_units,
                             context_units=self.context_units,
                             dtype=self.network_dtype or self.dtype_policy, name="made")
        if not self.made.built:
            self.made.build(tuple(input_shape))
        super().build(input_shape)

    def bijector(self, context=None):
        values = self.context_values(context)
        conditioner = self.made
        if values is not None:
            conditioner = lambda u: self.made(u, values)  # noqa: E731  # fixed context
        return self.bijector_class(conditioner, self._transform, dtype=self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "hidden_units": list(self.hidden_units),
                "transform": self.transform, "num_bins": self.num_bins, "bound": self.bound,
                "made": serialize(self.made), "context_units": self.context_units}


@keras.saving.register_keras_serializable(package="tfflow")
class MaskedAutoregressiveLayer(_AutoregressiveLayer):
    """A MAF layer: `log_prob` in one MADE pass, sampling in D (see `MaskedAutoregressive`).

    `transform="affine"` (MAF) or `"spline"` (autoregressive Neural Spline
    Flow, `num_bins` bins on [-bound, bound], identity outside).
    """

    bijector_class = fb.MaskedAutoregressive


@keras.saving.register_keras_serializable(package="tfflow")
class InverseAutoregressiveLayer(_AutoregressiveLayer):
    """An IAF layer: sampling in one MADE pass, `log_prob` in D (see `InverseAutoregressive`)."""

    bijector_class = fb.InverseAutoregressive


@keras.saving.register_keras_serializable(package="tfflow")
class StandardizeLayer(ActNormLayer):
    """A table's standardisation inside the model: `z = (x - mean) / std`, per column.

    Fixed (not trained): set once from the training data by
    `FlowModel.initialize` (like ActNorm's data-dependent init) and saved with
    the model, so the model takes and returns rows in the data's own units and
    needs nothing else to score or sample them.
    """

    def __init__(self, event_ndims: int = 1, epsilon: float = 1e-6, **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(event_ndims=event_ndims, epsilon=epsilon, **kwargs)

    def bijector(self, context=None):
        # Initialised from float64 moments with the table column rules (no `epsilon`
        # floor: a column at 1e-13 scale is standardised as exactly as one at 1).
        if context is not None and context.init_records is not None:
            return _InitializingStandardize(self, context.init_records)
        return super().bijector(context)


class _InitializingStandardize(_InitializingActNorm):
    """`(mean, log std)` of each column from float64 moments; columns a float32 flow cannot
    model (constant, unresolved by float32, beyond its range) are a ValueError naming them
    (`tfflow.data.table.check_columns`, the one owner of those rules)."""

    def values_from(self, y):
        from tfflow.data.table import check_columns  # pylint: disable=import-outside-toplevel
        owner = (f"StandardizeLayer {self._layer.name!r} (initialised by FlowModel.initialize "
                 f"or fit on {y.shape[0]} rows),")

        # FlowModel's context standardisation (named so by FlowModel) conditions on its
        # columns, it does not model them: a constant context column is allowed.
        context = self._layer.name == "context_standardize"

        def moments(values):
            mean, std = check_columns(owner, values, constant_ok=context)
            return mean.astype(values.dtype), np.log(std).astype(values.dtype)

        if tf.executing_eagerly():
            return tuple(tf.constant(v) for v in moments(np.asarray(y)))
        return tuple(tf.numpy_function(moments, [y], [y.dtype, y.dtype], stateful=False))


class _InitializingTriangularAffine(_InitializingNormalization):
    """The Gaussian fit of the batch it sees, recorded for `TriangularAffineLayer.assign_initial`.

    With a context, the linear-Gaussian regression of the batch on it:
    `(loc, log_diag, lower, context_kernel)`.
    """

    def values_from(self, y):
        values = fb.triangular_affine_parameters(y, context=self._context,
                                                 ridge=self._layer.ridge)
        kernel = values.pop("context_kernel", None)
        return (values["loc"], values["log_diag"], values["lower"]) + \
            (() if kernel is None else (kernel,))

    def bijector_from(self, values):
        loc, log_diag, lower, *kernel = values
        if kernel:
            loc = loc + tf.matmul(tf.cast(self._context, kernel[0].dtype), kernel[0])
        return fb.TriangularAffine(loc=loc, log_diag=log_diag, lower=lower)


@keras.saving.register_keras_serializable(package="tfflow")
class TriangularAffineLayer(FlowLayer):
    """Owns a full affine map `x = loc + L z` (`tfflow.bijectors.TriangularAffine`).

    Initialised from data (`FlowModel.initialize`) to the maximum-likelihood
    Gaussian fit: `loc` the mean, `L` the Cholesky factor of the covariance.
    As the data side of a vector flow whose other layers start as the
    identity, it makes an untrained model exactly that Gaussian fit; training
    then moves away from it only where the data say so. Trainable.

    With `context_units = C` the shift depends linearly on the context,
    `loc + c @ context_kernel`, initialised to the linear-Gaussian regression
    of the data on the context: an untrained conditional model is that fit.
    """

    event_ndims = 1
    needs_data_init = True

    def __init__(self, ridge: float = 1e-6, context_units: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.ridge = float(ridge)
        self.context_units = None if context_units is None else int(context_units)

    def build(self, input_shape):
        dims = input_shape[-1]
        self.loc = self.add_weight(name="loc", shape=(dims,), initializer="zeros")
        self.log_diag = self.add_weight(name="log_diag", shape=(dims,), initializer="zeros")
        self.lower = self.add_weight(name="lower", shape=(dims, dims), initializer="zeros")
        if self.uses_context:
            self.context_kernel = self.add_weight(name="context_kernel",
                                                  shape=(self.context_units, dims),
                                                  initializer="zeros")
        self.add_initialized_flag()
        super().build(input_shape)

    def bijector(self, context=None):
        context = context or FlowContext()
        self.context_values(context)  # a conditional layer needs its context
        if context.init_records is not None:
            return _InitializingTriangularAffine(self, context.init_records,
                                                 context.context if self.uses_context else None)
        loc = tf.convert_to_tensor(self.loc)
        if self.uses_context:
            values = tf.cast(context.context, loc.dtype)
            loc = loc + tf.linalg.matvec(tf.convert_to_tensor(self.context_kernel), values,
                                         transpose_a=True)
        return fb.TriangularAffine(loc, tf.convert_to_tensor(self.log_diag),
                                   tf.convert_to_tensor(self.lower))

    def assign_initial(self, loc, log_diag, lower, context_kernel=None):
        self.loc.assign(tf.cast(loc, self.loc.dtype))
        self.log_diag.assign(tf.cast(log_diag, self.log_diag.dtype))
        self.lower.assign(tf.cast(lower, self.lower.dtype))
        if context_kernel is not None:
            self.context_kernel.assign(tf.cast(context_kernel, self.context_kernel.dtype))
        self.initialized.assign(1.)

    def get_config(self):
        return {**super().get_config(), "ridge": self.ridge, "context_units": self.context_units}
