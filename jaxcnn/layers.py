"""Building blocks shared by every model: activations, pooling, dropout, convolutions
(plain, grouped, depthwise, depthwise-separable) with Keras' options and weight layouts,
batch normalization, local response normalization, input normalization and the max-norm
constraint.

Pooling is written as an elementwise max (or sum) over strided slices rather than
`lax.reduce_window`: on XLA CPU the gradient of a reduce_window max pooling
(`select_and_scatter`) is ~40x slower than the gradient of slices and maxima
(40.8 ms vs 0.97 ms for a 2x2 pool of 128x26x26x32, forward+backward), and the two
agree exactly on outputs and gradients, ties included (tests/test_layers.py).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxcnn import onednn

Padding = str | int | Sequence[tuple[int, int]]


# --- activations --------------------------------------------------------------

def step(x):
    """Heaviside step: 1 where x > 0, else 0. Its gradient is zero everywhere, so a
    network built on it cannot learn by gradient descent (the perceptron's rule)."""
    return jnp.where(x > 0, 1.0, 0.0).astype(x.dtype)


def leaky_relu(x, negative_slope: float = 0.3, *, alpha: float | None = None):
    """LeakyReLU with Keras' default slope (keras.layers.LeakyReLU: 0.3); `alpha` is
    the slope's name in Keras 2 and in the course."""
    slope = negative_slope if alpha is None else alpha
    return jnp.where(x >= 0, x, slope * x)


def linear(x):
    return x


ACTIVATIONS: dict[str, Callable] = {
    "linear": linear,
    "step": step,
    "relu": jax.nn.relu,
    "relu6": jax.nn.relu6,
    "leaky_relu": leaky_relu,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "swish": jax.nn.swish,
    "gelu": jax.nn.gelu,
    "elu": jax.nn.elu,
    "softmax": jax.nn.softmax,
}


def activation(name: str | Callable, **kwargs) -> Callable:
    """Looks an activation up by name (a callable is returned as is)."""
    if callable(name):
        return name
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")
    fn = ACTIVATIONS[name]
    return functools.partial(fn, **kwargs) if kwargs else fn


# --- pooling -------------------------------------------------------------------

def same_padding(sizes: Sequence[int], window: Sequence[int], strides: Sequence[int]) -> list[tuple[int, int]]:
    """TensorFlow's (and Keras') 'same' padding: the output has ceil(n / stride) cells,
    the odd extra cell of padding goes after (Keras' `correct_pad` for odd kernels)."""
    pads = []
    for n, k, s in zip(sizes, window, strides):
        total = max((-(-n // s) - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    return pads


def _pads(sizes, window, strides, padding: Padding) -> list[tuple[int, int]]:
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            return [(0, 0)] * len(sizes)
        if mode == "SAME":
            return same_padding(sizes, window, strides)
        raise ValueError(f"padding must be 'SAME', 'VALID' or explicit pairs, got {padding!r}")
    if isinstance(padding, int):
        return [(padding, padding)] * len(sizes)
    return [tuple(p) for p in padding]


def _window_slices(x, window, strides, dilation=None):
    """The strided slices of `x` (N...C, already padded), one per offset of the window
    (row-major over the window), each the size of the output."""
    dilation = dilation or (1,) * len(window)
    span = [(k - 1) * d + 1 for k, d in zip(window, dilation)]
    out = [(n - k) // s + 1 for n, k, s in zip(x.shape[1:-1], span, strides)]
    if min(out) < 1:
        raise ValueError(f"window {tuple(window)} is larger than the input {x.shape[1:-1]}")
    for offsets in itertools.product(*(range(0, k * d, d) for k, d in zip(window, dilation))):
        limit = (x.shape[0], *(o + s * (m - 1) + 1 for o, s, m in zip(offsets, strides, out)), x.shape[-1])
        yield jax.lax.slice(x, (0, *offsets, 0), limit, (1, *strides, 1))


def _pool_input(x, window, strides, padding, pad_value):
    """The padded input (NHWC or N...C) and the pooling's pads, window and strides as tuples."""
    spatial = x.ndim - 2
    window = (window,) * spatial if isinstance(window, int) else tuple(window)
    strides = window if strides is None else ((strides,) * spatial if isinstance(strides, int) else tuple(strides))
    pads = _pads(x.shape[1:-1], window, strides, padding)
    if any(p != (0, 0) for p in pads):
        x = jnp.pad(x, [(0, 0), *pads, (0, 0)], constant_values=pad_value)
    return x, pads, window, strides


def _pool(x, window, strides, padding, pad_value, combine):
    """Combines the window's strided slices of the padded input (NHWC or N...C)."""
    x, pads, window, strides = _pool_input(x, window, strides, padding, pad_value)
    return functools.reduce(combine, _window_slices(x, window, strides)), pads, window, strides


def max_pool(x, window=2, strides=None, padding: Padding = "VALID"):
    """Max pooling (strides default to the window, as in Keras' MaxPooling2D). The gradient
    goes to each window's first maximum, as XLA's reduce_window, TensorFlow and PyTorch route
    it."""
    x, _, window, strides = _pool_input(x, window, strides, padding, -jnp.inf)
    return _max_pool(x, window, strides, x.shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x, window, strides, shape):
    """The maximum over each window of the padded x.

    Why a gradient rule of its own: differentiated automatically, the chain of `jnp.maximum`
    is recomputed, comparisons and tie splits included, inside each of the window's padded
    terms of the input gradient: ResNet-50's stem pooling (3x3, stride 2, 8x114x114x64, with
    the BatchNorm and ReLU before it) took 78 ms of its train step. Here the forward pass
    writes which tap won (`_max_pool_fwd`), and the gradient reads only that and dy."""
    return functools.reduce(jnp.maximum, _window_slices(x, window, strides))


def _max_pool_fwd(x, window, strides, shape):
    # The winning taps: for windows that tile the input, int8, which the gradient's one select
    # reads; for overlapping windows, float32 written once (`_written_once`), else XLA recomputed
    # them inside each of the gradient's terms: ResNet-50's stem pooling (3x3, stride 2,
    # 8x112x112x64 after a scale, shift and ReLU), forward and backward 25-27 ms with int8 taps,
    # 8.6-9.7 ms so; a 2x2 pool of 128x26x26x32, 0.58-0.62 ms with int8 taps, 1.38 with float32.
    tiled = _tiles(window, strides) and math.prod(window) <= 127
    result, winner = None, None
    for tap, piece in enumerate(_window_slices(x, window, strides)):
        if result is None:
            result, winner = piece, jnp.zeros(piece.shape, jnp.int8 if tiled else jnp.float32)
        else:  # strictly greater: the first maximum wins
            winner = jnp.where(piece > result, jnp.asarray(tap, winner.dtype), winner)
            result = jnp.maximum(result, piece)
    return result, winner if tiled else _written_once(winner)


def _tiles(window, strides) -> bool:
    """Whether the windows tile the input (strides equal to the window: no overlap, no gap)."""
    return tuple(strides) == tuple(window)


def _max_pool_bwd(window, strides, shape, winner, dy):
    if _tiles(window, strides):
        return (_tiled_max_pool_gradient(window, shape, winner, dy),)
    # Overlapping windows: dy to each window's winning tap, then the transpose of taking the
    # slices (pads and sums).
    slices = jax.linear_transpose(lambda x: list(_window_slices(x, window, strides)),
                                  jax.ShapeDtypeStruct(shape, dy.dtype))
    return slices([jnp.where(winner == tap, dy, 0).astype(dy.dtype) for tap in range(math.prod(window))])


def _tiled_max_pool_gradient(window, shape, winner, dy):
    """Windows that tile the input (strides == window): each input cell belongs to one window,
    so its gradient is one select of dy, written in a single pass (dy and the winning tap
    broadcast over the window's own axes, then reshaped to the input's layout; cells past
    the last whole window get 0). A 2x2 pool of 128x26x26x32, forward and backward: 0.58 ms,
    where the differentiated chain of maxima took 1.02 ms and, after a bias and ReLU, 2.54 ms
    against 1.16 ms."""
    out = winner.shape[1:-1]
    spread = [winner.shape[0]] + [a for o in out for a in (o, 1)] + [winner.shape[-1]]
    taps_shape = [1] + [a for k in window for a in (1, k)] + [1]
    taps = jnp.arange(math.prod(window), dtype=winner.dtype).reshape(taps_shape)
    grad = jnp.where(winner.reshape(spread) == taps, dy.reshape(spread), 0).astype(dy.dtype)
    grad = grad.reshape(winner.shape[0], *(o * k for o, k in zip(out, window)), winner.shape[-1])
    cut = [(0, 0)] + [(0, n - o * k) for n, o, k in zip(shape[1:-1], out, window)] + [(0, 0)]
    return jnp.pad(grad, cut) if any(hi for _, hi in cut) else grad


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def avg_pool(x, window=2, strides=None, padding: Padding = "VALID", count_include_pad: bool = False):
    """Average pooling; with 'SAME' padding the padded cells are not counted (as Keras)."""
    total, pads, window, strides = _pool(x, window, strides, padding, 0, jnp.add)
    if count_include_pad or all(p == (0, 0) for p in pads):
        size = 1
        for k in window:
            size *= k
        return total / size
    ones = jnp.ones((1, *x.shape[1:-1], 1), x.dtype)
    counts = _pool(ones, window, strides, pads, 0, jnp.add)[0]
    return total / counts


def global_avg_pool(x, keepdims: bool = False):
    return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)), keepdims=keepdims)


def global_max_pool(x, keepdims: bool = False):
    return jnp.max(x, axis=tuple(range(1, x.ndim - 1)), keepdims=keepdims)


def flatten(x):
    """Flattens all but the batch axis in NHWC order (Keras' Flatten order)."""
    return x.reshape(x.shape[0], -1)


# --- dropout ------------------------------------------------------------------

_DROPOUT_BROADCAST = {"unit": (), "channel": (1, 2), "example": (1, 2, 3)}


def dropout(x, rate: float, train: bool, per: str = "unit"):
    """Dropout (Srivastava et al. 2014), active only when `train`; call it inside a Flax
    module (its noise comes from the 'dropout' RNG stream). `per` says what is dropped
    together: 'unit' each value (Keras' Dropout), 'channel' whole feature maps (Keras'
    SpatialDropout2D), 'example' a whole example's tensor (stochastic depth: dropping a
    residual branch, Keras' Dropout with noise_shape=(None, 1, 1, 1)). Kept values are
    scaled by 1 / (1 - rate), so evaluation needs no rescaling."""
    if per not in _DROPOUT_BROADCAST:
        raise ValueError(f"per must be one of {', '.join(_DROPOUT_BROADCAST)}, got {per!r}")
    if not rate:
        return x
    return nn.Dropout(rate, broadcast_dims=_DROPOUT_BROADCAST[per], deterministic=not train)(x)


# --- convolutions --------------------------------------------------------------
# Kernels are stored in Keras' layouts (Conv2D: HWIO; DepthwiseConv2D: H, W, in,
# multiplier; SeparableConv2D: both), so Keras weights load without reshaping.

def _pair(value, what: str) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    if len(value) == 2 and all(isinstance(v, int) for v in value):
        return tuple(value)
    raise ValueError(f"{what} must be an int or a pair of ints, got {value!r}")


def conv_padding(padding: Padding) -> str | list[tuple[int, int]]:
    """Keras' 'same'/'valid' (any case), an int, (pad_h, pad_w) or ((top, bottom), (left, right))."""
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ValueError(f"padding must be 'same', 'valid' or explicit, got {padding!r}")
        return padding.upper()
    if isinstance(padding, int):
        return [(padding, padding)] * 2
    if len(padding) == 2 and all(isinstance(p, int) for p in padding):
        return [(p, p) for p in padding]
    if len(padding) == 2 and all(len(p) == 2 for p in padding):
        return [tuple(p) for p in padding]
    raise ValueError(f"padding must be 'same', 'valid', an int, (h, w) or ((top, bottom), (left, right)); "
                     f"got {padding!r}")


def _conv_geometry(sizes, window, strides, padding: Padding, dilation):
    """A convolution's strides and dilation as pairs, its dilated window's extent (span), and
    its padding as explicit (before, after) pairs over `sizes` (H, W), as lax resolves 'same'
    (the odd cell after)."""
    strides, dilation = _pair(strides, "strides"), _pair(dilation, "dilation_rate")
    span = tuple((k - 1) * d + 1 for k, d in zip(window, dilation))
    return strides, dilation, span, tuple(_pads(sizes, span, strides, conv_padding(padding)))


def materialize(x, runtime_one_from):
    """`x` itself (bit for bit, value and gradient), divided by a 1 that XLA cannot fold
    (computed from `runtime_one_from`'s first element), so that x is written to memory
    once instead of being recomputed inside every consumer.

    Why: XLA CPU duplicates cheap elementwise producers into each consumer fusion, and a
    convolution's kernel gradient reads its input through a (C, H, W, N) transposed copy.
    In a residual network the input is relu(BatchNorm(conv) + shortcut) of every block
    before, so that transposed copy recomputed the whole chain per element, with strided
    reads (resnet20, batch 128: 1.2 s of a 2.4 s step). A division is an expensive op that
    XLA will not duplicate, which ends the chain at each convolution (the step's CPU time
    fell by a quarter). `lax.optimization_barrier` would say this directly, but XLA CPU
    removes it before fusion. A NaN or infinite first element (a diverged model) makes x
    NaN."""
    one = 1 + 0 * jax.lax.stop_gradient(runtime_one_from.reshape(-1)[0]).astype(x.dtype)
    return x / one


def _written_once(x):
    """x divided by an array of ones that XLA cannot fold (0 * x is not 0 for every float): XLA
    does not duplicate a division into its consumers, so x is computed once and written to
    memory. For forward passes of custom_vjp functions (their gradient rules are their own),
    where `materialize`'s division by a scalar became a product that XLA did duplicate. An
    infinite x becomes NaN."""
    return x / (1 + 0 * x)


def _conv(x, kernel, strides, padding, dilation, groups, dtype):
    """The convolution of x (NHWC) with kernel (HWIO): on oneDNN where it runs it (`on_onednn`),
    else in the form XLA computes fastest (1x1 as a matrix product, a window larger than the
    input or one output pixel as a product of patches, a first layer as a sum of taps)."""
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=dtype)
    padding = conv_padding(padding)
    strides, dilation, span, pads = _conv_geometry(x.shape[1:3], kernel.shape[:2], strides, padding, dilation)
    if on_onednn(x, kernel.shape, strides, pads, dilation, groups):
        return onednn.conv(x, kernel, strides, pads, dilation, groups)
    x = materialize(x, kernel)
    if groups == 1 and span == (1, 1) and padding in ("SAME", "VALID", [(0, 0), (0, 0)]):
        return _pointwise_conv(x, kernel, strides)
    one_window = all(0 <= n + lo + hi - k < s for n, (lo, hi), k, s in zip(x.shape[1:3], pads, span, strides))
    if groups == 1 and (one_window or any(n < k for n, k in zip(x.shape[1:3], span))):
        return _conv_as_patches(x, kernel, strides, pads, dilation, span, one_window)
    if groups == 1 and conv_as_taps(kernel.shape):
        return _conv_as_taps(x, kernel, strides, pads, dilation)
    if groups == 1 and kernel.size >= PATCHES_INPUT_GRADIENT_MIN_KERNEL_RATIO * x.size:
        return _conv_patches_input_gradient(x, kernel, strides, tuple(map(tuple, pads)), dilation, span)
    return _lax_conv(x, kernel, strides, padding, dilation, groups)


PATCHES_INPUT_GRADIENT_MIN_KERNEL_RATIO = 4
"""A convolution XLA runs whose kernel has at least this many times the entries of its input
takes its input gradient as the product of patches' (`_conv_patches_input_gradient`). 3x3
convolutions, input gradient ms, XLA's -> the product of patches' (`python
tools/bench_onednn.py --shapes ...`, XLA column, and the same through `_conv_as_patches`):
kernel 9x the input, 512 -> 512 on 32x4x4 (VGG-16's fourth stage on CIFAR-10) 11.59 -> 8.21,
256 -> 512 on 32x4x4 6.50 -> 4.41, 512 -> 512 on 8x7x7 10.09 -> 6.58; 8x 256 -> 256 on 32x3x3
2.11 -> 1.44; 72x 1024 -> 1024 on 8x4x4 69.7 -> 8.8; but 1.5x 256 -> 256 on 8x14x14 6.93 ->
7.16, 0.36x 128 -> 128 on 128x5x5 3.68 -> 4.29, 0.28x 64 -> 64 on 128x4x4 0.94 -> 0.99. The
forward and kernel gradient stay XLA's, which were as fast or faster."""


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv_patches_input_gradient(x, kernel, strides, pads, dilation, span):
    """XLA's convolution (explicit pads) and its kernel gradient, with the input gradient of
    the product of patches (`_conv_as_patches`): dy @ kernel^T, a product that reads the
    kernel as it is stored, then each window's share added back to its pixels. XLA's
    input-gradient convolution first writes a flipped, transposed copy of the kernel, which
    for a kernel larger than the input costs more than the convolution; in VGG-16's train
    step on CIFAR-10 XLA ran those copies (9.4 MB kernels, 5-12 ms each) on its dispatching
    thread beside the first layers' convolutions, a third busy thread on two cores. Train step
    on CIFAR-10 at batch 32: 327 -> 312 ms, faster in 10 of 10 alternating windows of the two
    compiled steps in one process (a standalone script)."""
    return _lax_conv(x, kernel, strides, pads, dilation)


def _conv_patches_input_gradient_fwd(x, kernel, strides, pads, dilation, span):
    return _lax_conv(x, kernel, strides, pads, dilation), (x, kernel)


def _conv_patches_input_gradient_bwd(strides, pads, dilation, span, residuals, g):
    x, kernel = residuals
    dx = jax.vjp(lambda x: _conv_as_patches(x, kernel, strides, pads, dilation, span, False), x)[1](g)[0]
    dk = jax.vjp(lambda k: _lax_conv(x, k, strides, pads, dilation), kernel)[1](g)[0]
    return dx, dk


_conv_patches_input_gradient.defvjp(_conv_patches_input_gradient_fwd, _conv_patches_input_gradient_bwd)


ONEDNN_MIN_OUTPUT_PIXELS = 32
"""Convolutions with fewer output pixels per image than this stay XLA's (or jaxcnn's product of
patches): with so few pixels oneDNN was the slower. 3x3 convolutions, forward / input / kernel
gradient ms, XLA -> oneDNN (`python tools/bench_onednn.py --shapes ...`): VGG-16's 512 -> 512 at
batch 32 on 2x2 maps (patches) 2.83 / 2.83 / 2.63 -> 6.87 / 7.06 / 9.33, on 4x4 maps 9.29 /
11.22 / 8.41 -> 12.10 / 12.07 / 14.85; 256 -> 256 on 8x8 maps 8.27 / 8.85 / 9.59 -> 6.93 / 7.04 /
8.80; 64 -> 64 at batch 128 on 6x6 maps 1.92 / 1.65 / 2.50 -> 0.91 / 0.93 / 1.19."""


def on_onednn(x, kernel_shape, strides, pads, dilation, groups) -> bool:
    """Whether jaxcnn runs this convolution (explicit pads) on oneDNN (`jaxcnn.onednn`): on a
    one-device CPU, float32, at least `ONEDNN_MIN_OUTPUT_PIXELS` output pixels per image."""
    if not onednn.enabled():
        return False
    out = [onednn.output_size(x.shape[i + 1], kernel_shape[i], strides[i], pads[i], dilation[i]) for i in range(2)]
    return (out[0] * out[1] >= ONEDNN_MIN_OUTPUT_PIXELS
            and onednn.supports(tuple(x.shape), tuple(kernel_shape), x.dtype, tuple(strides), tuple(map(tuple, pads)),
                                tuple(dilation), groups))


ONEDNN_MIN_DENSE_KERNEL = 4_000_000
"""Dense layers whose kernel has at least this many entries (16 MB in float32) run their
forward product on oneDNN (`dense_product`). Forward ms, XLA's -> oneDNN's (`python
tools/bench_onednn.py`, dense rows): 32x4096 @ 4096x4096 (VGG-16's fc2) 11.45 -> 5.94, 32x9216
@ 9216x4096 (AlexNet's fc6) 31.34 -> 17.62, 32x2048 @ 2048x2048 2.23 -> 1.26, 32x4096 @
4096x1000 1.90 -> 1.06. VGG-16's eval step on CIFAR-10 at batch 32 took 91.6 -> 86.0 ms, its
train step 308 -> 307 ms (faster in 9 and 6 of 10 windows; a standalone script timing the two
compiled steps in alternating windows in one process). Smaller products were faster alone too
(128x5408 @ 5408x128, the course's CNN, 0.95 -> 0.68), but not in a train step: with every
dense layer on oneDNN LeNet-5's step took 4.6 -> 4.7 ms (slower in 9 of 10 windows) and the
course's CNN's 7.8 -> 7.5 ms (faster in 4 of 10)."""


def dense_product(x, kernel, dimension_numbers, precision=None, preferred_element_type=None):
    """`jax.lax.dot_general` as `flax.linen.Dense` calls it (its `dot_general`): x (..., k) @
    kernel (k, n), forward on oneDNN (`jaxcnn.onednn.matmul`, through `_product_on_onednn`)
    where the kernel has at least `ONEDNN_MIN_DENSE_KERNEL` entries, both are float32 and
    oneDNN runs here (a one-device CPU); else XLA's product."""
    (lhs, rhs), batch = dimension_numbers
    if (kernel.ndim == 2 and kernel.size >= ONEDNN_MIN_DENSE_KERNEL and tuple(lhs) == (x.ndim - 1,)
            and tuple(rhs) == (0,) and not batch[0] and x.dtype == kernel.dtype == jnp.float32
            and preferred_element_type in (None, jnp.float32) and onednn.enabled()):
        y = _product_on_onednn(x.reshape(-1, x.shape[-1]), kernel)
        return y.reshape(*x.shape[:-1], kernel.shape[1])
    return jax.lax.dot_general(x, kernel, dimension_numbers, precision=precision,
                               preferred_element_type=preferred_element_type)


@jax.custom_vjp
def _product_on_onednn(x, kernel):
    """x @ kernel on oneDNN, its gradients XLA's products: in VGG-16's train step (profile)
    XLA ran fc2's input and kernel gradients side by side, one per thread, in 13 ms; oneDNN's,
    each on both threads, took 7 and 16.5 ms one after the other."""
    return onednn.matmul(x, kernel)


def _product_on_onednn_fwd(x, kernel):
    return _product_on_onednn(x, kernel), (x, kernel)  # itself: differentiable again, to any order


def _product_on_onednn_bwd(residuals, g):
    x, kernel = residuals
    return jnp.dot(g, kernel.T), jnp.dot(x.T, g)


_product_on_onednn.defvjp(_product_on_onednn_fwd, _product_on_onednn_bwd)


def _lax_conv(x, kernel, strides, padding, dilation, groups=1):
    return jax.lax.conv_general_dilated(x, kernel, window_strides=strides, padding=padding, rhs_dilation=dilation,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)


MAX_TAP_TERMS = 27
"""A convolution whose window holds at most this many input values (taps x input channels:
3x3 on RGB images, 5x5 on one channel) is a sum of taps in jaxcnn (`conv_as_taps`)."""
_TAPS_MIN_FILTERS = 16  # one AVX-512 vector of float32


def few_input_values(kernel_shape) -> bool:
    """Whether a convolution with this (H, W, in, out) kernel has a window larger than 1x1
    holding at most `MAX_TAP_TERMS` input values."""
    return kernel_shape[0] * kernel_shape[1] > 1 and math.prod(kernel_shape[:3]) <= MAX_TAP_TERMS


def conv_as_taps(kernel_shape) -> bool:
    """Whether jaxcnn computes a convolution with this (H, W, in, out) kernel as a sum of
    taps (`_conv_as_taps`): few input values per window (`few_input_values`) and 16 or more
    filters. (With fewer, XLA CPU left the sum unvectorized when a tanh
    followed it: LeNet-5's C1, 5x5 to 6 filters, tanh: 14.2 ms of CPU as taps against 11.2 ms
    as a convolution for its forward and kernel gradient; with ReLU 3.6 against 10.4 ms;
    tools/bench_taps.py.)"""
    return few_input_values(kernel_shape) and kernel_shape[3] >= _TAPS_MIN_FILTERS


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_as_taps(x, kernel, strides, pads, dilation):
    """The convolution as a sum, over the window's taps and the input channels, of each
    channel's shifted (strided) slice of the padded input times that tap's row of the kernel
    (accumulated in float32), written to memory once; its gradients are the convolution's own.

    Why: a first layer (1 or 3 input channels) is little arithmetic per output, and XLA CPU's
    convolutions run it far below their speed on wider layers, while the sum is one
    elementwise pass. Its forward and kernel gradient, CPU ms as XLA's convolution -> as taps
    (`python tools/bench_taps.py --model M`, compiled with the model's options):
    simple_cnn's 128x28x28x1 -> 32 12.9 -> 4.7, resnet20's 128x32x32x3 -> 16 13.5 -> 6.5,
    VGG-16's 32x32x32x3 -> 64 8.3 -> 5.3, MobileNetV2's 8x224x224x3 -> 32 (stride 2) 15.2 ->
    10.9. The gradients stay XLA's convolutions (a first layer's input gradient is never
    computed); differentiated automatically, the sum's kernel gradient is one reduction per
    term (simple_cnn's step 3x slower)."""
    return _conv_as_taps_plain(x, kernel, strides, pads, dilation)


def _conv_as_taps_plain(x, kernel, strides, pads, dilation):
    accumulate = jnp.promote_types(x.dtype, jnp.float32)
    window = kernel.shape[:2]
    rows = kernel.astype(accumulate).reshape(window[0] * window[1], x.shape[-1], kernel.shape[-1])
    out = sum(_sum_of_taps_plain(x[..., c:c + 1].astype(accumulate), rows[:, c], window, strides, dilation, pads)
              for c in range(x.shape[-1]))
    # Written once: left to XLA, the sum was recomputed inside each consumer (simple_cnn: in
    # the ReLU, in each of the max pooling's four taps and in the ReLU's gradient).
    return _written_once(out.astype(x.dtype))


def _conv_as_taps_fwd(x, kernel, strides, pads, dilation):
    return _conv_as_taps_plain(x, kernel, strides, pads, dilation), (x, kernel)


def _conv_as_taps_bwd(strides, pads, dilation, residuals, dy):
    x, kernel = residuals
    return jax.vjp(lambda x, kernel: _lax_conv(x, kernel, strides, pads, dilation), x, kernel)[1](dy)


_conv_as_taps.defvjp(_conv_as_taps_fwd, _conv_as_taps_bwd)


def _tap_weight_gradient(x, dy, window, strides, dilation, padding):
    """(taps, C): for each offset of the window, the padded input's slice times dy, summed
    over the pixels."""
    pieces = _window_slices(jnp.pad(x, [(0, 0), *padding, (0, 0)]), window, strides, dilation)
    return _sums_over_pixels([piece * dy for piece in pieces])


def _sums_over_pixels(products):
    """Each (N, H, W, C) product summed over its pixels: (len(products), C), in one variadic
    reduction (one pass over the operands the products read, where one reduction per product
    re-reads them and copies every slice), over height and width, then batch (XLA splits the
    batch over threads: 2x faster than reducing all three at once at 8x112x112x32). Sums of
    ~10^5 products accumulate in float32 under bfloat16."""
    accumulate = jnp.promote_types(products[0].dtype, jnp.float32)
    sums = jax.lax.reduce(tuple(p.astype(accumulate) for p in products), (jnp.zeros((), accumulate),) * len(products),
                          lambda a, b: tuple(u + v for u, v in zip(a, b)), (1, 2))
    return jnp.stack(sums).sum(axis=1)


def _pointwise_conv(x, kernel, strides):
    """A 1x1 convolution (no padding: 'same' pads nothing for a 1x1 window) as the matrix
    product of the (strided) pixels and the kernel.

    Why: XLA CPU's convolution path is slower than its matrix product for these, most of all
    for their gradients: every 1x1 convolution of ResNet-50 and MobileNetV2 at batch 8,
    224x224, forward and both gradients, took 0.31-0.98x the CPU time as a product
    (tools/bench_pointwise.py; ResNet-50's train step: 4.7 -> 3.4 s of CPU). Equal to the
    convolution in value and derivatives (tests/test_layers.py)."""
    if strides != (1, 1):
        x = x[:, ::strides[0], ::strides[1]]
    return _pixels_times_kernel(x, kernel[0, 0])


@jax.custom_vjp
def _pixels_times_kernel(x, kernel):
    return jnp.dot(x, kernel)


def _pixels_times_kernel_fwd(x, kernel):
    return jnp.dot(x, kernel), (x, kernel)


def _pixels_times_kernel_bwd(residuals, dy):
    """The gradients of pixels @ kernel. The kernel gradient is a product over the pixels,
    which needs one operand transposed: here the one with fewer channels, written to memory
    once (`materialize`). Left to autodiff, XLA transposed dy inside the fusion that computes
    it, recomputing the BatchNorm and activation gradients before it with strided writes
    (MobileNetV2's 8x112x112x96 expansion: 36 ms for that copy); MobileNetV2's train step at
    batch 8 fell from 616-677 to 519-538 ms, ResNet-50's stayed within noise."""
    x, kernel = residuals
    dx = jnp.dot(dy, kernel.T)
    pixels, grads = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])
    if pixels.shape[1] <= grads.shape[1]:
        dk = jnp.dot(materialize(pixels.T, kernel), grads)
    else:
        dk = jnp.dot(materialize(grads.T, kernel), pixels).T
    return dx, dk


_pixels_times_kernel.defvjp(_pixels_times_kernel_fwd, _pixels_times_kernel_bwd)


def _conv_as_patches(x, kernel, strides, pads, dilation, span, one_window: bool):
    """The convolution as one matrix product: (every window's pixels, in the kernel's (H, W,
    in) order) @ kernel. With one window (one output pixel) the patches are the padded input's
    window itself, flattened: the Dense layer such a convolution is (LeNet-5's C5, a 5x5 kernel
    on 5x5 maps).

    Why: when the input is smaller than the window (VGG-16's last stage on 32x32 CIFAR
    images: 2x2 maps, 3x3 kernels, 'same' padding), XLA CPU rewrites the convolution and its
    gradients into forms that its fast convolution path does not take, ~300 ms each for
    one 512-channel layer at batch 32 against a few ms as a product. With one output pixel its
    gradients took 2.8 ms for LeNet-5's C5 at batch 128 (16 -> 120 channels), against 0.3 ms
    as a product (forward and backward: 3.0 ms, 0.4 ms with the window flattened, 0.6-0.8 ms
    with it concatenated from its slices). Equal to the convolution in value and derivatives
    (tests/test_layers.py)."""
    x = jnp.pad(x, [(0, 0), *pads, (0, 0)])
    if one_window:
        patches = x[:, :span[0]:dilation[0], :span[1]:dilation[1]].reshape(x.shape[0], 1, 1, -1)
    else:
        patches = jnp.concatenate(list(_window_slices(x, kernel.shape[:2], strides, dilation)), axis=-1)
    return jnp.dot(patches, kernel.reshape(-1, kernel.shape[-1]))


he_normal = nn.initializers.variance_scaling(2.0, "fan_out", "truncated_normal")
"""He initialization over the fan-out, the default of the zoo's convolutions (He et al.
2015; Keras' EfficientNet, torchvision's ResNet and MobileNet)."""


MONOTONE_ACTIVATIONS = frozenset({"linear", "step", "relu", "relu6", "leaky_relu", "sigmoid", "tanh", "elu"})
"""The named activations that never decrease: max pooling commutes with them (and with adding a
per-channel bias), max(f(a + b), f(c + b)) = f(max(a, c) + b)."""


class Conv2D(nn.Module):
    """Keras' Conv2D: `filters`, `kernel_size`, `strides`, `padding` ('same', 'valid' or
    explicit), `activation`, `use_bias`, `groups` (grouped convolution, as in AlexNet's
    two-GPU model) and `dilation_rate`. Parameters: `kernel` (H, W, in/groups, filters),
    `bias`.

    `pool_size` (with `pool_strides`, default the window, and `pool_padding`) closes the
    layer with Keras' MaxPooling2D of its activation. For a monotone activation
    (`MONOTONE_ACTIVATIONS`) the layer pools the convolution's output first and adds the
    bias and applies the activation to the pooled map: the same values, and the bias, the
    activation and their gradients touch a quarter of the cells (2x2 pools). The gradient of
    a window then goes to the maximum of the convolution's outputs, which is the maximum of
    the activations unless the activation ties them (ReLU's zeros, whose gradient is zero
    anyway). simple_cnn's train step (batch 128, 28x28x1): 7.2 -> 6.3 ms. `unpooled(x)` is the
    activation before the pooling (the feature map a model sows)."""
    filters: int
    kernel_size: int | tuple[int, int] = 3
    strides: int | tuple[int, int] = 1
    padding: Padding = "valid"
    activation: str | Callable | None = None
    use_bias: bool = True
    groups: int = 1
    dilation_rate: int | tuple[int, int] = 1
    kernel_init: Callable = nn.initializers.glorot_uniform()
    bias_init: Callable = nn.initializers.zeros
    dtype: Any = None
    param_dtype: Any = jnp.float32
    pool_size: int | tuple[int, int] | None = None
    pool_strides: int | tuple[int, int] | None = None
    pool_padding: Padding = "valid"

    @nn.compact
    def __call__(self, x, *, add_bias: bool = True):
        """The layer's output; with `add_bias` False (no activation, no pooling), the
        convolution without its bias, for a BatchNorm to take the bias as its `shift`."""
        channels = x.shape[-1]
        if channels % self.groups or self.filters % self.groups:
            raise ValueError(f"groups={self.groups} must divide the input channels ({channels}) "
                             f"and the filters ({self.filters})")
        self.param("kernel", self.kernel_init,
                   (*_pair(self.kernel_size, "kernel_size"), channels // self.groups, self.filters), self.param_dtype)
        if self.use_bias:
            self.param("bias", self.bias_init, (self.filters,), self.param_dtype)
        if not add_bias:
            if self.activation is not None or self.pool_size is not None:
                raise ValueError("add_bias=False is for a layer with neither an activation nor a pooling")
            return self._convolve(x)
        if self.pool_size is None:
            return self.unpooled(x)
        if self.activation is None or self.activation in MONOTONE_ACTIVATIONS:
            return self._activate(self._pool(self._convolve(x)))
        return self._pool(self.unpooled(x))

    def unpooled(self, x):
        """The activation of the convolution, before the layer's pooling (if any)."""
        return self._activate(self._convolve(x))

    def _convolve(self, x):
        kernel = self.get_variable("params", "kernel")
        return _conv(x, kernel, self.strides, self.padding, self.dilation_rate, self.groups, self.dtype)

    def _activate(self, y):
        if self.use_bias:
            y = y + self.get_variable("params", "bias").astype(y.dtype)
        return y if self.activation is None else activation(self.activation)(y)

    def _pool(self, y):
        return max_pool(y, self.pool_size, self.pool_strides, self.pool_padding)


def _depthwise(x, depthwise_kernel, strides, padding, dilation, dtype):
    """Convolves each input channel with its own `multiplier` filters (output channel
    c * multiplier + m, as TensorFlow orders them).

    On oneDNN where it runs it (`on_onednn`: a grouped convolution with one group per channel;
    MobileNetV2's train step at batch 8, 224x224: 482 -> 286 ms). Else written as a sum over
    the window of shifted input slices times the per-channel weights, not as a grouped
    `conv_general_dilated`: XLA CPU runs grouped convolutions with one channel per group far
    from its fast path (MobileNetV2's 3x3 depthwise layer on 8x56x56x144: 162 ms forward, and
    the kernel gradient as a dense 144x144 convolution), while the sum is a few elementwise
    fusions; its kernel gradient is one reduction over all taps (`_sum_of_taps_bwd`). Equal to
    the grouped convolution in value and derivatives (tests/test_layers.py,
    tests/test_onednn.py)."""
    x, depthwise_kernel = nn.dtypes.promote_dtype(x, depthwise_kernel, dtype=dtype)
    kh, kw, channels, multiplier = depthwise_kernel.shape
    grouped = (kh, kw, 1, channels * multiplier)  # output channel c * multiplier + m reads channel c
    pair_strides, pair_dilation, _, pads = _conv_geometry(x.shape[1:3], (kh, kw), strides, padding, dilation)
    if on_onednn(x, grouped, pair_strides, pads, pair_dilation, channels):
        return onednn.conv(x, depthwise_kernel.reshape(grouped), pair_strides, pads, pair_dilation, channels)
    return _sum_of_taps(*_depthwise_operands(x, depthwise_kernel, strides, padding, dilation, dtype))


def _depthwise_operands(x, depthwise_kernel, strides, padding, dilation, dtype):
    """`_sum_of_taps`' arguments for a depthwise convolution: the input (each channel
    repeated `multiplier` times), the weights as taps x channels, the window, strides,
    dilation and explicit padding pairs (as lax resolves 'same': the odd cell after)."""
    x, depthwise_kernel = nn.dtypes.promote_dtype(x, depthwise_kernel, dtype=dtype)
    kh, kw, channels, multiplier = depthwise_kernel.shape
    strides, dilation, _, pads = _conv_geometry(x.shape[1:3], (kh, kw), strides, padding, dilation)
    if multiplier > 1:  # output channel c * multiplier + m reads input channel c
        x = jnp.repeat(x, multiplier, axis=-1)
    return x, depthwise_kernel.reshape(kh * kw, channels * multiplier), (kh, kw), strides, dilation, pads


def _sum_of_taps_plain(x, weights, window, strides, dilation, padding):
    """Each output is the sum over the window of the padded input's shifted (strided) slice
    times that tap's per-channel weights (`weights`: taps x channels)."""
    out = None
    pieces = _window_slices(jnp.pad(x, [(0, 0), *padding, (0, 0)]), window, strides, dilation)
    for tap, piece in enumerate(pieces):
        term = piece * weights[tap]
        out = term if out is None else out + term
    return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _sum_of_taps(x, weights, window, strides, dilation, padding):
    return _sum_of_taps_plain(x, weights, window, strides, dilation, padding)


def _sum_of_taps_fwd(x, weights, window, strides, dilation, padding):
    return _sum_of_taps_plain(x, weights, window, strides, dilation, padding), (x, weights)


def _sum_of_taps_bwd(window, strides, dilation, padding, residuals, dy):
    """The input gradient as automatic differentiation gives it; the weight gradient as one
    variadic reduction that reads the input and dy once for all taps. Differentiated
    automatically, that gradient is one reduction per tap, each fed by a copy of its slice:
    MobileNetV2's 8x56x56x144 layer took 82 ms forward + backward, 22 ms with this."""
    x, weights = residuals
    _, input_grad = jax.vjp(lambda x: _sum_of_taps_plain(x, weights, window, strides, dilation, padding), x)
    return input_grad(dy)[0], _tap_weight_gradient(x, dy, window, strides, dilation, padding).astype(weights.dtype)


_sum_of_taps.defvjp(_sum_of_taps_fwd, _sum_of_taps_bwd)


class DepthwiseConv2D(nn.Module):
    """Keras' DepthwiseConv2D: one `kernel_size` filter per input channel (times
    `depth_multiplier`). Parameters: `kernel` (H, W, in, depth_multiplier), `bias`."""
    kernel_size: int | tuple[int, int] = 3
    strides: int | tuple[int, int] = 1
    padding: Padding = "valid"
    depth_multiplier: int = 1
    activation: str | Callable | None = None
    use_bias: bool = True
    dilation_rate: int | tuple[int, int] = 1
    kernel_init: Callable = nn.initializers.glorot_uniform()
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        channels = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init,
                            (*_pair(self.kernel_size, "kernel_size"), channels, self.depth_multiplier),
                            self.param_dtype)
        y = _depthwise(x, kernel, self.strides, self.padding, self.dilation_rate, self.dtype)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (channels * self.depth_multiplier,),
                               self.param_dtype).astype(y.dtype)
        return y if self.activation is None else activation(self.activation)(y)


class SeparableConv2D(nn.Module):
    """Keras' SeparableConv2D (depthwise-separable convolution, Xception/MobileNet): a
    depthwise `kernel_size` convolution per channel, then a 1x1 convolution to `filters`.
    Parameters: `depthwise_kernel` (H, W, in, depth_multiplier), `pointwise_kernel`
    (1, 1, in * depth_multiplier, filters), `bias`."""
    filters: int
    kernel_size: int | tuple[int, int] = 3
    strides: int | tuple[int, int] = 1
    padding: Padding = "valid"
    depth_multiplier: int = 1
    activation: str | Callable | None = None
    use_bias: bool = True
    dilation_rate: int | tuple[int, int] = 1
    kernel_init: Callable = nn.initializers.glorot_uniform()
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        channels = x.shape[-1]
        depthwise = self.param("depthwise_kernel", self.kernel_init,
                               (*_pair(self.kernel_size, "kernel_size"), channels, self.depth_multiplier),
                               self.param_dtype)
        pointwise = self.param("pointwise_kernel", self.kernel_init,
                               (1, 1, channels * self.depth_multiplier, self.filters), self.param_dtype)
        y = _depthwise(x, depthwise, self.strides, self.padding, self.dilation_rate, self.dtype)
        y = _conv(y, pointwise, 1, "VALID", 1, 1, self.dtype)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.filters,), self.param_dtype).astype(y.dtype)
        return y if self.activation is None else activation(self.activation)(y)


def zero_pad(x, padding: Padding):
    """Keras' ZeroPadding2D: an int, (pad_h, pad_w) or ((top, bottom), (left, right))."""
    pads = conv_padding(padding)
    if isinstance(pads, str):
        raise ValueError("zero_pad takes explicit padding, not 'same'/'valid'")
    return jnp.pad(x, [(0, 0), *pads, (0, 0)])


# --- normalization and constraints ---------------------------------------------

def shifted(x, shift):
    """x + shift (per feature), or x when shift is None: what a BatchNorm given a `shift`
    normalizes."""
    return x if shift is None else x + shift.astype(x.dtype)


class BatchNorm(nn.BatchNorm):
    """`flax.linen.BatchNorm` (same attributes, variables, initializers and results), whose
    training-mode normalization over the batch is one function with its own gradient
    (`batch_norm`) when it normalizes the last axis over all the others on one program (no
    `axis_name` or `mask`) with Flax's default statistics. Anything else is Flax's own.

    Why: differentiated automatically, Flax's normalization writes x - mean to memory for the
    backward pass and reduces its gradient in several passes; the custom gradient keeps x,
    reads it and dy in one pair of sums and one elementwise pass. BatchNorm + ReLU6 forward
    and backward alone, 8x112x112x96: 51 -> 24 ms; 128x32x32x16: 3.2 -> 1.5 ms. Train steps:
    MobileNetV2 (batch 8, 224x224) 564 -> 479 ms, resnet20 (batch 128) 433 -> 389 ms
    (README, Performance)."""

    @nn.compact
    def __call__(self, x, use_running_average: bool | None = None, *, mask=None, shift=None):
        """BatchNorm of x, or with `shift` (per feature: a convolution's bias) of x + shift. In
        training the shift only moves the batch mean, so it is never added to x: the result
        is (x - mean(x)) normalized, which is what x + shift normalizes to (up to rounding), and
        the batch statistics are those of x + shift. (ResNet-50's Keras convolutions have a
        bias before each BatchNorm; adding it wrote every convolution's output once more:
        `broadcast_add_fusion`, 133 ms of op time per step.)"""
        running = nn.merge_param("use_running_average", self.use_running_average, use_running_average)
        if (running or mask is not None or self.axis_name is not None or not self.use_fast_variance
                or not self.force_float32_reductions or self.axis not in (-1, x.ndim - 1)):
            return super().__call__(shifted(x, shift), use_running_average, mask=mask)
        features = (x.shape[-1],)
        ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), features)
        ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), features)
        # Created in Flax's order, with its initializers and dtypes.
        scale = self.param("scale", self.scale_init, features, self.param_dtype) if self.use_scale else None
        bias = self.param("bias", self.bias_init, features, self.param_dtype) if self.use_bias else None
        stat_dtype = jnp.promote_types(x.dtype, jnp.float32)
        y, mean, var = batch_norm(x, jnp.ones(features, stat_dtype) if scale is None else scale,
                                  jnp.zeros(features, stat_dtype) if bias is None else bias, self.epsilon)
        if shift is not None:
            mean = mean + shift.astype(mean.dtype)
        if not self.is_initializing():
            ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
            ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        return jnp.asarray(y, nn.dtypes.canonicalize_dtype(*(a for a in (x, scale, bias) if a is not None),
                                                            dtype=self.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm(x, scale, bias, epsilon: float):
    """Training-mode batch normalization of x (..., C) over all axes but the last, as Flax
    computes it: (y, mean, var), the statistics in float32 (at least), var = E[x^2] - E[x]^2
    (not negative), y = (x - mean) * rsqrt(var + epsilon) * scale + bias."""
    return _batch_norm_fwd(x, scale, bias, epsilon)[0]


def _batch_norm_fwd(x, scale, bias, epsilon):
    x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    count = x.size // x.shape[-1]
    sums = _sums_per_feature(x32, x32 * x32)
    mean, mean_square = sums[0] / count, sums[1] / count
    var = jnp.maximum(0.0, mean_square - mean * mean)
    inv = jax.lax.rsqrt(var + epsilon)
    y = (x32 - mean) * (inv * scale) + bias
    return (y, mean, var), (x, mean, inv, scale, bias)


def _batch_norm_bwd(epsilon, residuals, cotangents):
    """With xhat = (x - mean) * inv: dbias = sum(dy), dscale = sum(dy * xhat) (from sum(dy)
    and sum(dy * x), one pass), dx = scale * inv * (dy - mean(dy) - xhat * mean(dy *
    xhat)), plus the statistics' own cotangents (zero when only y is used)."""
    x, mean, inv, scale, bias = residuals
    dy, dmean, dvar = cotangents
    x32 = x.astype(mean.dtype)
    count = x.size // x.shape[-1]
    dy = dy.astype(mean.dtype)
    sums = _sums_per_feature(dy, dy * x32)
    dbias = sums[0]
    dscale = inv * (sums[1] - mean * sums[0])
    a = scale * inv
    offset = (a * dbias - dmean) / count
    slope = (a * inv * dscale - 2 * dvar) / count
    dx = a * dy - offset - (x32 - mean) * slope
    return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(bias.dtype)


batch_norm.defvjp(_batch_norm_fwd, _batch_norm_bwd)


def _sums_per_feature(*arrays):
    """Each (..., C) array summed over all axes but the last. (Separate sums, which XLA gives
    YNNPACK: BatchNorm + ReLU6 forward and backward at 8x112x112x96 took 24 ms so, 68 ms with
    the variadic reduction of `_sums_over_pixels`.)"""
    return [a.sum(tuple(range(a.ndim - 1))) for a in arrays]


def local_response_normalization(x, depth_radius: int = 2, bias: float = 2.0, alpha: float = 1e-4,
                                 beta: float = 0.75):
    """AlexNet's local response normalization across channels (Krizhevsky et al. 2012,
    section 3.3): x / (bias + alpha * sum of x^2 over the 2 * depth_radius + 1 nearest
    channels) ** beta. The defaults are the paper's (n = 5, k = 2, alpha = 1e-4,
    beta = 0.75); the formula is tf.nn.local_response_normalization's (alpha is not
    divided by n, unlike Caffe's and PyTorch's LocalResponseNorm)."""
    squares = jnp.square(x.astype(jnp.float32))
    padded = jnp.pad(squares, [(0, 0)] * (x.ndim - 1) + [(depth_radius, depth_radius)])
    channels = x.shape[-1]
    window_sum = sum(jax.lax.slice_in_dim(padded, i, i + channels, axis=-1) for i in range(2 * depth_radius + 1))
    return (x / (bias + alpha * window_sum) ** beta).astype(x.dtype)


def max_norm(kernel, max_value: float = 2.0, axis: int | Sequence[int] | None = None):
    """Keras' MaxNorm constraint: rescales each unit's incoming weight vector to an L2
    norm of at most `max_value` (Srivastava et al. 2014). `axis` None is every axis but
    the last: per output unit of a Dense kernel (Keras axis=0) and per filter of a Conv2D
    kernel (Keras axis=[0, 1, 2])."""
    if axis is None:
        axis = tuple(range(kernel.ndim - 1))
    norms = jnp.sqrt(jnp.sum(jnp.square(kernel), axis=axis, keepdims=True))
    return kernel * (jnp.clip(norms, 0, max_value) / (1e-7 + norms))


def max_norm_constraint(max_value: float = 2.0, include: Callable[[str], bool] | None = None
                        ) -> optax.GradientTransformation:
    """The max-norm constraint as the last link of an optax chain: the updated kernels
    (every parameter named `kernel`, or those whose '/'-joined path `include` accepts)
    satisfy `max_norm`, as Keras applies `kernel_constraint` after each optimizer step.

        tx = optax.chain(optax.sgd(0.1, momentum=0.9), layers.max_norm_constraint(3.0))
    """
    def selected(path) -> bool:
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        return include(name) if include is not None else name.endswith("kernel")

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("max_norm_constraint needs the parameters: tx.update(grads, state, params)")
        projected = jax.tree_util.tree_map_with_path(
            lambda path, u, p: max_norm(p + u, max_value) - p if selected(path) else u, updates, params)
        return projected, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


class Normalization(nn.Module):
    """Keras' Normalization layer: (x - mean) / max(sqrt(variance), 1e-7) per channel.

    Its statistics are not trained: `mean`, `variance` and `count` (of the examples they
    were computed from; float32 here, an integer in Keras) live in the `batch_stats`
    collection with BatchNorm's. They start as the identity (0, 1, 0), until set from
    data or pretrained weights (Keras' EfficientNet stores ImageNet's there).
    """

    @nn.compact
    def __call__(self, x):
        channels = x.shape[-1]
        mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((channels,), jnp.float32))
        variance = self.variable("batch_stats", "variance", lambda: jnp.ones((channels,), jnp.float32))
        self.variable("batch_stats", "count", lambda: jnp.zeros((), jnp.float32))
        scale = jnp.maximum(jnp.sqrt(variance.value), 1e-7)
        return ((x - mean.value) / scale).astype(x.dtype)
