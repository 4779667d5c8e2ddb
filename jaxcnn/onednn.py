"""Convolutions and large matrix products run by oneDNN on CPU: the kernels TensorFlow (Keras)
and PyTorch run there, called from XLA through its FFI (`jaxcnn/onednn_ops.cc`, built when
jaxcnn is installed, and Intel's `onednn-cpu-gomp` library from PyPI).

Why: XLA's own CPU convolutions are far slower than oneDNN's on this kind of machine, most of
all for their gradients. At batch 128, forward / input gradient / kernel gradient in ms, XLA ->
oneDNN (`python tools/bench_onednn.py`): ResNet-20's 3x3 16x16x32 -> 32 3.26 / 3.01 / 8.11 ->
1.88 / 1.83 / 1.88; LeNet-5's 5x5 14x14x6 -> 16 2.08 / 2.75 / 1.82 -> 0.45 / 1.05 / 0.47
(README, Performance). XLA's product of a few rows with a large dense kernel ran on one thread:
VGG-16's fc2 forward, 32x4096 @ 4096x4096, 11.45 ms against oneDNN's 5.94
(`jaxcnn.layers.ONEDNN_MIN_DENSE_KERNEL`).

`conv(x, kernel, ...)` is differentiable to any order in reverse mode: the convolution, its
input gradient and its kernel gradient are the three partial derivatives of one trilinear
form <conv(x, kernel), dy>, so each one's gradient is made of the others. `matmul(a, b)` is
not differentiable itself (`jaxcnn.layers.dense_product` gives it XLA's gradients).
`enabled()` says whether the calls can be used (a CPU backend with one device, the library
loaded, and `JAXCNN_ONEDNN` not set to 0); `supports(...)` whether oneDNN runs a given
convolution. (oneDNN's inner product, tried first for dense layers, was no faster: 128x5408 @
5408x128 forward / input / kernel gradient 1.73 / 2.17 / 3.99 ms against XLA's 1.53 / 1.38 /
1.47.)
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import functools
import importlib.machinery
import os
from importlib import metadata

import jax
import numpy as np

_TARGETS = tuple(f"jaxcnn_onednn_conv_{p}" for p in ("forward", "backward_data", "backward_weights"))
_MATMUL_TARGET = "jaxcnn_onednn_matmul"
_DNNL_SONAME = "libdnnl.so.3"


def _extension_path() -> str | None:
    """The compiled handlers (`jaxcnn/_onednn_ops*.so`, built by setup.py), if present."""
    here = os.path.dirname(os.path.abspath(__file__))
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(here, "_onednn_ops" + suffix)
        if os.path.exists(path):
            return path
    return None


def _load_dnnl() -> None:
    """Loads oneDNN globally, so that the handlers' dependency on it resolves: from the loader's
    path, else from where pip put the `onednn-cpu-gomp` wheel's library (the environment's lib/)."""
    candidates = [_DNNL_SONAME]
    try:
        files = metadata.files("onednn-cpu-gomp") or []
        candidates += [str(f.locate()) for f in files if f.name == _DNNL_SONAME]
    except metadata.PackageNotFoundError:
        pass
    errors = []
    for candidate in candidates:
        try:
            ctypes.CDLL(candidate, mode=ctypes.RTLD_GLOBAL)
            return
        except OSError as error:
            errors.append(str(error))
    raise OSError("; ".join(errors))


@functools.lru_cache(maxsize=None)
def _library():
    """The handlers' library, registered with XLA; None when it is absent or switched off."""
    if os.environ.get("JAXCNN_ONEDNN", "1") == "0":
        return None
    path = _extension_path()
    if path is None:
        return None
    try:
        _load_dnnl()
        library = ctypes.CDLL(path)
    except OSError:
        return None
    for name in (*_TARGETS, _MATMUL_TARGET):
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(library, name)), platform="cpu")
    library.jaxcnn_onednn_conv_supported.argtypes = [ctypes.POINTER(ctypes.c_int64)]
    library.jaxcnn_onednn_conv_supported.restype = ctypes.c_int
    return library


_switched_off = contextvars.ContextVar("jaxcnn_onednn_switched_off", default=False)


@contextlib.contextmanager
def switched_off():
    """Within this block, functions traced (jitted) use XLA's convolutions, not oneDNN's: for
    comparisons (tools/bench_train_step.py --compare-xla-convolutions) and tests of XLA's own path."""
    token = _switched_off.set(True)
    try:
        yield
    finally:
        _switched_off.reset(token)


def enabled() -> bool:
    """Whether jaxcnn's convolutions may run on oneDNN here: the default backend is the CPU with
    a single device (a custom call has no rule for splitting it over devices: a mesh of several
    keeps XLA's convolutions), the library is available and not switched off."""
    return (not _switched_off.get() and jax.default_backend() == "cpu" and jax.device_count() == 1
            and _library() is not None)


def output_size(size: int, window: int, stride: int, pads: tuple[int, int], dilation: int) -> int:
    return (size + pads[0] + pads[1] - ((window - 1) * dilation + 1)) // stride + 1


@functools.lru_cache(maxsize=None)
def supports(x_shape, kernel_shape, dtype, strides, pads, dilation, groups) -> bool:
    """Whether oneDNN runs this convolution (NHWC input, HWIO kernel, explicit (lo, hi) pads):
    float32, non-negative padding, and oneDNN builds all three passes for it."""
    if _library() is None or np.dtype(dtype) != np.float32 or len(x_shape) != 4 or len(kernel_shape) != 4:
        return False
    if any(p < 0 for pair in pads for p in pair) or x_shape[3] != kernel_shape[2] * groups:
        return False
    out = [output_size(x_shape[i + 1], kernel_shape[i], strides[i], pads[i], dilation[i]) for i in range(2)]
    if min(out) < 1 or min(x_shape) < 1 or kernel_shape[3] % groups:
        return False
    geometry = (*x_shape, kernel_shape[3], *kernel_shape[:2], *out, groups, *strides, *dilation,
                pads[0][0], pads[1][0], pads[0][1], pads[1][1])
    return bool(_library().jaxcnn_onednn_conv_supported((ctypes.c_int64 * len(geometry))(*geometry)))


def _require_library() -> None:
    if _library() is None:  # also registers the handlers on first use
        raise RuntimeError("jaxcnn's oneDNN kernels are not available here (see jaxcnn.onednn.enabled)")


def _call(target, out_shape, dtype, a, b, geometry):
    _require_library()
    strides, pads, dilation, groups = geometry
    return jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(out_shape, dtype), vmap_method="sequential")(
        a, b, strides=np.asarray(strides, np.int64), padding_lo=np.asarray([p[0] for p in pads], np.int64),
        padding_hi=np.asarray([p[1] for p in pads], np.int64), dilation=np.asarray(dilation, np.int64),
        groups=np.int64(groups))


def _pass(target, gradients):
    """One pass as a differentiable function (a, b, out_shape, geometry): the handler `target`
    on operands a and b; `gradients(a, b, g, geometry)` gives the cotangents of a and b for the
    output's cotangent g, as other passes."""
    @functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
    def run(a, b, out_shape, geometry):
        return _call(target, out_shape, a.dtype, a, b, geometry)

    def run_fwd(a, b, out_shape, geometry):
        return run(a, b, out_shape, geometry), (a, b)

    def run_bwd(out_shape, geometry, residuals, g):
        return gradients(*residuals, g, geometry)

    run.defvjp(run_fwd, run_bwd)
    return run


def _passes(targets):
    """The convolution, its input gradient and its kernel gradient: the partial derivatives of
    <conv(x, kernel), dy>, so each one's gradient is made of the others. Returns the first."""
    def forward_gradients(x, kernel, g, geometry):
        return input_gradient(g, kernel, x.shape, geometry), kernel_gradient(x, g, kernel.shape, geometry)

    def input_gradients(dy, kernel, g, geometry):
        return forward(g, kernel, dy.shape, geometry), kernel_gradient(g, dy, kernel.shape, geometry)

    def kernel_gradients(x, dy, g, geometry):
        return input_gradient(dy, g, x.shape, geometry), forward(x, g, dy.shape, geometry)

    forward = _pass(targets[0], forward_gradients)
    input_gradient = _pass(targets[1], input_gradients)
    kernel_gradient = _pass(targets[2], kernel_gradients)
    return forward


_conv_forward = _passes(_TARGETS)


def conv(x, kernel, strides, pads, dilation, groups=1):
    """The convolution of x (N, H, W, C) with kernel (KH, KW, C / groups, O), as
    `jax.lax.conv_general_dilated(x, kernel, strides, pads, rhs_dilation=dilation,
    dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)`; `pads` are (lo, hi)
    pairs. Differentiable in reverse mode to any order."""
    out = [output_size(x.shape[i + 1], kernel.shape[i], strides[i], pads[i], dilation[i]) for i in range(2)]
    return _conv_forward(x, kernel, (x.shape[0], *out, kernel.shape[3]),
                         (tuple(strides), tuple(map(tuple, pads)), tuple(dilation), groups))


def matmul(a, b):
    """a @ b for float32 matrices a (m, k) and b (k, n) on oneDNN (its matmul, the kernels
    PyTorch runs on CPU), c's columns split over XLA's threads so that each reads its own part
    of b. Not differentiable itself (`jaxcnn.layers.dense_product` gives it XLA's gradients)."""
    _require_library()
    return jax.ffi.ffi_call(_MATMUL_TARGET, jax.ShapeDtypeStruct((a.shape[0], b.shape[1]), a.dtype),
                            vmap_method="sequential")(a, b)
