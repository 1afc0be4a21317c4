"""A stride-1 'same' convolution whose gradients XLA runs fast inside a loop.

XLA on the CPU runs the builtin kernel gradient (`Conv2DBackpropFilter`) of a
convolution inside a `tf.while_loop` body on a slow path: Glow digits K=8,
looped steps, 100 of a 130 ms train step went to it (2 ms a call), where the
same gradients unrolled took 12 ms; a 3x3, 64 -> 64 kernel gradient on a
4x4 batch of 64 was 50x slower in a loop than unrolled (benchmarks/README.md,
issue 13). Written as dots, it runs the same in a loop as unrolled.

For `y = conv(x, W)`, stride 1, 'same' padding, an odd kernel [kh, kw, I, O]:

    dW[i, j] = sum_{n,h,w} x_pad[n, h + i, w + j, :]^T dy[n, h, w, :]   (one dot per tap)
    dx       = conv(dy, W') with W'[i, j] = W[kh-1-i, kw-1-j]^T          (a plain convolution)
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["builtin_gradients", "conv2d_same_dot_gradients", "dot_gradients"]


def conv2d_same_dot_gradients(x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """`tf.nn.conv2d(x, kernel, 1, "SAME")` for an odd kernel, with its gradients as dots.

    Args:
      x: [N, H, W, I] images.
      kernel: [kh, kw, I, O], kh and kw odd and static.

    Returns:
      [N, H, W, O], equal to `tf.nn.conv2d(x, kernel, 1, "SAME")`; its
      gradient with respect to `kernel` is one [I, O] dot per kernel tap and
      with respect to `x` a convolution with the flipped, transposed kernel
      (module docstring).
    """
    kh, kw = kernel.shape[0], kernel.shape[1]
    if kh is None or kw is None or kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"conv2d_same_dot_gradients: expected an odd static kernel size, got "
                         f"{kernel.shape[:2]}.")

    @tf.custom_gradient
    def conv(x, kernel):
        return tf.nn.conv2d(x, kernel, 1, "SAME"), lambda dy: dot_gradients(x, kernel, dy)

    return conv(x, kernel)


def dot_gradients(x: tf.Tensor, kernel: tf.Tensor, dy: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """`(dx, dkernel)` of `y = conv(x, kernel)` (stride 1, 'same', odd kernel) given `dy`: dots.

    The input gradient is a convolution with the flipped, transposed kernel,
    the kernel gradient one [I, O] dot per tap (module docstring).
    """
    kh, kw = kernel.shape[0], kernel.shape[1]
    flipped = tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2])
    dx = tf.nn.conv2d(dy, flipped, 1, "SAME")
    padded = tf.pad(x, [[0, 0], [kh // 2, kh // 2], [kw // 2, kw // 2], [0, 0]])
    height, width = tf.shape(x)[1], tf.shape(x)[2]
    taps = [[tf.einsum("nhwi,nhwo->io", padded[:, i:i + height, j:j + width, :], dy)
             for j in range(kw)] for i in range(kh)]
    return dx, tf.stack([tf.stack(row) for row in taps])


def builtin_gradients(x: tf.Tensor, kernel: tf.Tensor, dy: tf.Tensor
                      ) -> tuple[tf.Tensor, tf.Tensor]:
    """`(dx, dkernel)` as autodiff of `tf.nn.conv2d(x, kernel, 1, "SAME")` computes them.

    TensorFlow's own kernels (`Conv2DBackpropInput`, `Conv2DBackpropFilter`),
    the fast ones outside XLA.
    """
    strides = [1, 1, 1, 1]
    dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=kernel, out_backprop=dy,
                                        strides=strides, padding="SAME")
    dkernel = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=tf.shape(kernel),
                                              out_backprop=dy, strides=strides, padding="SAME")
    return dx, dkernel
