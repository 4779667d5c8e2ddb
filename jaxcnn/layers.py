"""Building blocks shared by every model: activations and pooling.

Pooling is written as an elementwise max (or sum) over strided slices rather than
`lax.reduce_window`: on XLA CPU the gradient of a reduce_window max pooling
(`select_and_scatter`) is ~40x slower than the gradient of slices and maxima
(40.8 ms vs 0.97 ms for a 2x2 pool of 128x26x26x32, forward+backward), and the two
agree exactly on outputs and, away from ties, on gradients (tests/test_layers.py).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

Padding = str | int | Sequence[tuple[int, int]]


# --- activations --------------------------------------------------------------

def step(x):
    """Heaviside step: 1 where x > 0, else 0. Its gradient is zero everywhere, so a
    network built on it cannot learn by gradient descent (the perceptron's rule)."""
    return jnp.where(x > 0, 1.0, 0.0).astype(x.dtype)


def leaky_relu(x, negative_slope: float = 0.3):
    """LeakyReLU with Keras' default slope (keras.layers.LeakyReLU: 0.3)."""
    return jnp.where(x >= 0, x, negative_slope * x)


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

def _pads(sizes, window, strides, padding: Padding) -> list[tuple[int, int]]:
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            return [(0, 0)] * len(sizes)
        if mode == "SAME":  # TF/Keras: output ceil(n / s), extra padding after
            pads = []
            for n, k, s in zip(sizes, window, strides):
                total = max((-(-n // s) - 1) * s + k - n, 0)
                pads.append((total // 2, total - total // 2))
            return pads
        raise ValueError(f"padding must be 'SAME', 'VALID' or explicit pairs, got {padding!r}")
    if isinstance(padding, int):
        return [(padding, padding)] * len(sizes)
    return [tuple(p) for p in padding]


def _pool(x, window, strides, padding, pad_value, combine):
    """Combines the window's strided slices of the padded input (NHWC or N...C)."""
    spatial = x.ndim - 2
    window = (window,) * spatial if isinstance(window, int) else tuple(window)
    strides = window if strides is None else ((strides,) * spatial if isinstance(strides, int) else tuple(strides))
    pads = _pads(x.shape[1:-1], window, strides, padding)
    if any(p != (0, 0) for p in pads):
        x = jnp.pad(x, [(0, 0), *pads, (0, 0)], constant_values=pad_value)
    out = [(n - k) // s + 1 for n, k, s in zip(x.shape[1:-1], window, strides)]
    if min(out) < 1:
        raise ValueError(f"pooling window {window} is larger than the input {x.shape[1:-1]}")
    result = None
    for offsets in itertools.product(*(range(k) for k in window)):
        limit = (x.shape[0], *(o + s * (m - 1) + 1 for o, s, m in zip(offsets, strides, out)), x.shape[-1])
        piece = jax.lax.slice(x, (0, *offsets, 0), limit, (1, *strides, 1))
        result = piece if result is None else combine(result, piece)
    return result, pads, window, strides


def max_pool(x, window=2, strides=None, padding: Padding = "VALID"):
    """Max pooling (strides default to the window, as in Keras' MaxPooling2D)."""
    return _pool(x, window, strides, padding, -jnp.inf, jnp.maximum)[0]


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
