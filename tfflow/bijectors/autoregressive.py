"""Autoregressive bijectors on vectors: MAF (fast density) and IAF (fast sampling).

An autoregressive map transforms entry `i` of a [D] vector with an
elementwise monotone map (`tfflow.bijectors.AffineTransform` or
`SplineTransform`) whose parameters depend only on the entries before it:

    v_i = tau(u_i; theta_i(u_1, ..., u_{i-1}))

`theta` comes from one pass of an autoregressive network (a MADE:
`tfflow.layers.MADE`, or any callable with that dependency structure), so the
map `u -> v` takes one network pass and its Jacobian is triangular:
`log|det dv/du| = sum_i log tau'(u_i)`. Its inverse needs the entries one
after the other: D passes, each fixing at least one more entry.

MAF puts the one-pass direction on the data side (density evaluation, i.e.
`inverse` and `log_prob`, is one pass; sampling takes D), IAF on the latent
side (sampling, `forward`, is one pass; `log_prob` takes D).
"""

from __future__ import annotations

import tensorflow as tf

from tfflow.bijectors import _validation
from tfflow.bijectors._base import ConditionedBijector, Conditioner
from tfflow.bijectors.elementwise import ElementwiseTransform

__all__ = ["InverseAutoregressive", "MaskedAutoregressive"]

#: Event sizes up to this many entries (+1) invert with unrolled passes, larger ones in a loop.
UNROLL_LIMIT = 31


class _Autoregressive(ConditionedBijector):
    """The shared machinery: a one-pass map and its D-pass inverse."""

    def __init__(self, conditioner: Conditioner, transform: ElementwiseTransform, *,
                 validate_args: bool, parameters: dict, dtype, name: str):
        if not isinstance(transform, ElementwiseTransform):
            raise ValueError(f"{type(self).__name__}: transform must be a tfflow.bijectors."
                             f"ElementwiseTransform (AffineTransform, SplineTransform), got "
                             f"{transform!r}.")
        self._transform = transform
        with tf.name_scope(name) as name:
            super().__init__(conditioner, forward_min_event_ndims=1, is_constant_jacobian=False,
                             validate_args=validate_args, dtype=dtype,
                             parameters=parameters, name=name)

    @property
    def transform(self) -> ElementwiseTransform:
        return self._transform

    def _validate_input(self, x, *, inverse):
        x = super()._validate_input(x, inverse=inverse)
        if x.shape[-1] is None:
            raise ValueError(f"{type(self).__name__}: the event size (last axis) must be known "
                             f"when the graph is built, got shape {x.shape.as_list()}.")
        return x

    def _params(self, u):
        """The network's parameters for every entry, [..., D, params_per_dim]."""
        h = self._conditioner(u)
        dims, per_dim = u.shape[-1], self._transform.params_per_dim
        _validation.check_conditioner_output(type(self).__name__, h, dims * per_dim,
                                             f"values ({per_dim} per entry for {dims} entries)")
        h = tf.cast(h, u.dtype)
        return tf.reshape(h, tf.concat([tf.shape(h)[:-1], [dims, per_dim]], 0))

    def _one_pass(self, u):
        """`v = tau(u; theta(u))` and `log|det dv/du|`, one network pass."""
        v, log_deriv = self._transform.apply(u, self._params(u))
        return v, tf.reduce_sum(log_deriv, axis=-1)

    def _recursive(self, v):
        """The `u` with `tau(u; theta(u)) = v`, and `log|det du/dv|`, in D passes.

        Pass k gets entries 1..k right (entry k's parameters depend only on
        entries before it, which the earlier passes fixed), so after D passes
        `u` is exact. Up to `UNROLL_LIMIT` entries the passes are unrolled
        (XLA runs unrolled passes many times faster than a loop on CPU, and
        TF's vectorised Jacobians cannot compile the gradient of a loop under
        XLA); above it a `tf.while_loop` keeps the graph one pass long.
        """
        dims = v.shape[-1]
        u = tf.zeros_like(v)
        if dims - 1 <= UNROLL_LIMIT:
            for _ in range(dims - 1):
                u = self._transform.invert(v, self._params(u))[0]
        else:
            def step(i, u):
                return i + 1, self._transform.invert(v, self._params(u))[0]

            _, u = tf.while_loop(lambda i, u: i < dims - 1, step, (tf.constant(0), u),
                                 maximum_iterations=dims - 1)
        # The last pass also gives the log-det, at the parameters of the exact `u`.
        u, log_deriv = self._transform.invert(v, self._params(u))
        return u, tf.reduce_sum(log_deriv, axis=-1)


class MaskedAutoregressive(_Autoregressive):
    """Masked autoregressive flow (MAF): one network pass for the density.

    With `theta = conditioner(x)`, autoregressive (entry i of the output
    depends only on `x_1..x_{i-1}`), and `tau` an elementwise transform:

    Inverse (data x -> latent z):  `z_i = tau(x_i; theta_i(x_<i))`, one pass
    Forward (latent z -> data x):  `x_i = tau^{-1}(z_i; theta_i(x_<i))`, D passes
    Log-det:  `inverse_log_det_jacobian = sum_i log tau'(x_i; theta_i)`.

    With an `AffineTransform` this is Papamakarios et al.'s MAF (there written
    `x_i = z_i exp(alpha_i) + mu_i`, the same map); with a `SplineTransform`
    it is the autoregressive Neural Spline Flow.

    #### Examples

    ```python
    made = tfflow.layers.MADE(dims=3, params_per_dim=2, hidden_units=(16,))
    maf = tfflow.bijectors.MaskedAutoregressive(made, tfflow.bijectors.AffineTransform())
    z = maf.inverse(x)            # [batch, 3], one pass of `made`
    ```

    #### References

    [1] Papamakarios, Pavlakou & Murray. Masked Autoregressive Flow for Density
        Estimation. NeurIPS 2017. https://arxiv.org/abs/1705.07057
    [2] Durkan, Bekasov, Murray & Papamakarios. Neural Spline Flows. NeurIPS
        2019. https://arxiv.org/abs/1906.04032
    """

    def __init__(self, conditioner: Conditioner, transform: ElementwiseTransform, *,
                 dtype=tf.float32, validate_args: bool = False,
                 name: str = "masked_autoregressive"):
        """Builds the bijector.

        Args:
          conditioner: callable [..., D] -> [..., D * transform.params_per_dim],
            autoregressive in the natural order (a `tfflow.layers.MADE`).
          transform: the elementwise map (`AffineTransform()`, `SplineTransform(...)`).
          dtype: dtype of the inputs.
          validate_args: check inputs for NaN/Inf at run time.
          name: name scope.
        """
        parameters = dict(locals())
        super().__init__(conditioner, transform, validate_args=validate_args,
                         parameters=parameters, dtype=dtype, name=name)

    def _inverse_and_log_det(self, y):
        return self._one_pass(y)

    def _forward_and_log_det(self, x):
        return self._recursive(x)


class InverseAutoregressive(_Autoregressive):
    """Inverse autoregressive flow (IAF): one network pass to sample.

    With `theta = conditioner(z)` autoregressive in `z`:

    Forward (latent z -> data x):  `x_i = tau(z_i; theta_i(z_<i))`, one pass
    Inverse (data x -> latent z):  `z_i = tau^{-1}(x_i; theta_i(z_<i))`, D passes
    Log-det:  `forward_log_det_jacobian = sum_i log tau'(z_i; theta_i)`.

    Use it where samples (or their densities, e.g. a variational posterior)
    are what is needed fast; training by maximum likelihood on data runs the
    D-pass direction.

    #### References

    [1] Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling. Improved
        Variational Inference with Inverse Autoregressive Flow. NeurIPS 2016.
        https://arxiv.org/abs/1606.04934
    """

    def __init__(self, conditioner: Conditioner, transform: ElementwiseTransform, *,
                 dtype=tf.float32, validate_args: bool = False,
                 name: str = "inverse_autoregressive"):
        """Builds the bijector; the arguments are `MaskedAutoregressive`'s, in `z`."""
        parameters = dict(locals())
        super().__init__(conditioner, transform, validate_args=validate_args,
                         parameters=parameters, dtype=dtype, name=name)

    def _forward_and_log_det(self, x):
        return self._one_pass(x)

    def _inverse_and_log_det(self, y):
        return self._recursive(y)
