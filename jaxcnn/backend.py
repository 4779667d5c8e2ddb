"""How jaxcnn's own compiled functions (train, evaluation and prediction steps) ask XLA to
compile them: `jit` is `jax.jit` with the compiler options that suit the model.

On CPU, XLA hands convolutions with 32 or more input or output channels to YNNPACK, which
ran each of them on one core of a 2-core machine, where XLA's own (Eigen) convolution uses
every core. 3x3 convolutions to 32 channels on 128x28x28xC, wall ms on YNNPACK -> Eigen
(tools/bench_conv.py): C=1 0.91 -> 2.74, C=2 1.56 -> 3.32, C=3 8.14 -> 3.57, C=8 5.33 ->
3.49, C=16 10.47 -> 5.69. So a model with such a convolution gets its convolutions compiled
for Eigen, YNNPACK keeping the matrix products and reductions (resnet20's train step 491 ->
389 ms), unless its only such convolutions read one or two channels through a window too
large for jaxcnn's sum of taps (`jaxcnn.layers.conv_as_taps`): YNNPACK runs those forward
faster. A convolution jaxcnn sums as taps (the course's CNN: its one 1 -> 32 convolution)
runs no convolution forward, and its kernel gradient, a convolution whose 128 batch rows are
its input channels, took 5.96 ms on YNNPACK against 1.34 ms on Eigen (simple_cnn's;
`tools/bench_conv.py --part kernel_gradient`).
README, Performance.

The option is passed per compiled function, not through XLA_FLAGS, so it needs no setting
before JAX starts and leaves the user's own `jax.jit`s alone. A user's `XLA_FLAGS` that
names `xla_cpu_experimental_ynn_fusion_type` wins: with
`--xla_cpu_experimental_ynn_fusion_type=individual_dot,individual_convolution,reduce` (XLA's
default) jaxcnn compiles as plain `jax.jit` does.

XLA gives a step's temporary buffers one block, allocated and freed on every call. glibc
cannot keep a block over 64 MB in the arena of the thread that allocates it (XLA's client
thread), so it maps it afresh and unmaps it on every call, and the kernel faults in and
zeroes every page again: ResNet-20's train step (192 MB of temporaries at batch 128) took
49,000 page faults per step, ResNet-50's (610 MB at batch 8 on 224x224) 156,000. Where the
largest array of the model's forward pass fits in 28 MB, jaxcnn asks XLA for heaps of at
most 28 MB instead (`xla_multiheap_size_constraint_per_heap`), and glibc to keep them from
one call to the next (`keep_freed_memory`: blocks up to 32 MB from its arenas, whose free
heaps it no longer unmaps). Train step ms, alternating runs of
`tools/bench_train_step.py`, one block -> heaps: resnet20 205 / 205 / 209 -> 180 / 171 / 180
(16 MB heaps; 28 MB measured the same as 16 MB), vgg16 349 / 323 / 336 -> 308 / 315 / 325
(16 MB; 28 MB was 2-6% slower than 16 MB), and later, on a busier machine, vgg16 404 / 389 ->
395 / 370 and resnet50 1,236 / 1,263 -> 1,147 / 1,152 (28 MB heaps); simple_cnn and lenet5 the
same. In a script timing the Trainer's steps (`resource.getrusage`), ResNet-50's faults went
156,000 -> 58,000-68,000 per step with 28 MB heaps, and with 16 MB heaps, in which its 25.7 MB
arrays did not fit, its step was slower instead (1,063 / 1,080 -> 1,172 / 1,196 ms, 2.5 against
1.7 GB resident), so a model with an array larger than a heap keeps the one block (MobileNetV2
at 224x224, 36.8 MB, measured faster with heaps all the same: 258 / 258 / 277 -> 233 / 233 /
240 ms with 16 MB ones).
"""

import ctypes
import functools
import os
import platform
import re

import jax
import numpy as np

from jaxcnn import layers

_YNN_FUSION = "xla_cpu_experimental_ynn_fusion_type"
CONVOLUTIONS_ON_EIGEN = ((_YNN_FUSION, "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"),)
"""YNNPACK keeps matrix products and reductions; XLA runs convolutions itself (with Eigen)."""
TEMPORARY_HEAP_BYTES = 28 << 20
_HEAP_SIZE = "xla_multiheap_size_constraint_per_heap"
TEMPORARIES_IN_HEAPS = ((_HEAP_SIZE, str(TEMPORARY_HEAP_BYTES)),)
"""A step's temporary buffers in heaps of at most TEMPORARY_HEAP_BYTES instead of one block."""
_YNNPACK_CHANNELS = 32  # XLA gives YNNPACK the convolutions with this many input or output channels
_EIGEN_INPUT_CHANNELS = 3  # from this many input channels on, Eigen's convolution is the faster


@functools.lru_cache(maxsize=None)
def _options_apply(options: tuple[tuple[str, str], ...]) -> bool:
    """On CPU, unless XLA_FLAGS sets one of these options itself or this jaxlib does not know
    one of them or its value."""
    flags = os.environ.get("XLA_FLAGS", "")
    if jax.default_backend() != "cpu" or any(name in flags for name, _ in options):
        return False
    try:
        jax.jit(lambda x: x + 1, compiler_options=dict(options)).lower(np.float32(0)).compile()
    except jax.errors.JaxRuntimeError:  # an older or newer jaxlib without this option or value
        return False
    return True


def compiler_options(params, largest_activation: int | None = None) -> tuple[tuple[str, str], ...]:
    """The options for compiling a step of a model with these parameters (arrays or shapes),
    as (name, value) pairs (hashable, to key caches of compiled functions).

    Its convolutions on Eigen when one of its kernels (H, W, in, out), larger than 1x1, has
    `_YNNPACK_CHANNELS` or more channels in or out and either `_EIGEN_INPUT_CHANNELS` or more
    input channels or a window jaxcnn sums as taps (only the gradients are convolutions there).
    (1x1 convolutions are matrix products in jaxcnn.layers. A depthwise kernel (H, W, channels,
    multiplier) counts too: in MobileNetV2 it decides nothing, as its 3-channel stem already
    does, and the step measured the same either way.)

    Its temporaries in heaps of TEMPORARY_HEAP_BYTES when `largest_activation`, the bytes of
    the largest array of the model's forward pass on the step's batch
    (`jaxcnn.models.summary.largest_forward_array`), fits in one (None: not known).
    """
    def wants_eigen(kernel_shape) -> bool:
        return (len(kernel_shape) == 4 and kernel_shape[0] * kernel_shape[1] > 1
                and max(kernel_shape[2:]) >= _YNNPACK_CHANNELS
                and (kernel_shape[2] >= _EIGEN_INPUT_CHANNELS or layers.conv_as_taps(kernel_shape)))
    options = ()
    if any(wants_eigen(np.shape(leaf)) for leaf in jax.tree.leaves(params)) and _options_apply(CONVOLUTIONS_ON_EIGEN):
        options += CONVOLUTIONS_ON_EIGEN
    if (largest_activation is not None and largest_activation <= TEMPORARY_HEAP_BYTES
            and _options_apply(TEMPORARIES_IN_HEAPS)):
        options += TEMPORARIES_IN_HEAPS
    return options


def jit(fun, options: tuple[tuple[str, str], ...], **kwargs):
    """`jax.jit(fun, **kwargs)` compiled with `options` (from `compiler_options`); with
    temporaries in heaps, glibc is asked to keep them (`keep_freed_memory`)."""
    if dict(options).get(_HEAP_SIZE):
        keep_freed_memory()
    return jax.jit(fun, compiler_options=dict(options) or None, **kwargs)


KEPT_BLOCK_BYTES = 32 << 20
"""glibc's largest `M_MMAP_THRESHOLD` on 64-bit (half its 64 MB arena heap): blocks up to this
size come from its arenas, larger ones are mapped and unmapped each time."""
KEPT_TOP_BYTES = 64 << 20
"""`M_TOP_PAD`: free memory a glibc arena keeps at its top (a thread's arena: whole heaps)."""
_M_TOP_PAD, _M_MMAP_THRESHOLD = -2, -3  # mallopt's parameters (glibc's malloc.h)


@functools.lru_cache(maxsize=None)
def keep_freed_memory() -> bool:
    """Asks glibc's malloc, once per process, to keep the memory of a step's freed heaps for the
    next step: blocks up to `KEPT_BLOCK_BYTES` from its arenas (`M_MMAP_THRESHOLD`, where glibc's
    own threshold only gets after a first such block is freed) and `KEPT_TOP_BYTES` of free memory
    at an arena's top (`M_TOP_PAD`), which stops a thread's arena from unmapping a heap once all
    of it is free. True if set; not on another C library, or with `JAXCNN_KEEP_FREED_MEMORY=0`.

    Why: XLA frees every temporary heap at the end of a step. A heap that was the last in use
    in a thread's arena, and whose memory was all freed, was unmapped, and the next step's
    pages faulted in and were zeroed again: ResNet-50's steps (batch 8, 224x224) took 16 to
    162,000 page faults each, and 950 to 1,650 ms, the fewer faults the faster. Per step, 12
    steps after 2 in a standalone script (`resource.getrusage`), without -> with: ResNet-50
    (28 MB heaps) 952-1,646 ms and 16-156,000 faults -> 910-969 ms and 70-7,200 faults,
    ResNet-20 163-203 ms and 0-43,000 -> 166-179 ms and 0-8; VGG-16 309-317 -> 297-314 ms (the
    16,385 faults left are its 64 MB kernel gradient, too large to keep). Setting M_TOP_PAD
    alone made it worse (it fixes glibc's mmap threshold at its 128 KB default: every heap was
    mapped, 145,000 faults a step). Train step ms, alternating runs of `python
    tools/bench_train_step.py --model M ...` with `JAXCNN_KEEP_FREED_MEMORY=0` -> without:
    resnet50 (224x224, batch 8, 3 windows of 2 steps) 1,012 / 994 / 1,033 -> 950 / 920 / 919,
    resnet20 (batch 128) 188 / 189 / 182 -> 172 / 173 / 168; lenet5 5.30 / 5.25 / 5.19 / 5.36
    -> 5.51 / 5.33 / 5.15 / 5.41 and simple_cnn 8.61 / 8.49 -> 7.63 / 8.51, within their noise.
    The cost: the process keeps its peak memory (ResNet-50's peak 2.5 GB, as before). It
    changes the host process' allocator (from the first step `jit` builds with heaps on),
    hence the switch."""
    if os.environ.get("JAXCNN_KEEP_FREED_MEMORY", "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, KEPT_BLOCK_BYTES)) and bool(mallopt(_M_TOP_PAD, KEPT_TOP_BYTES))


def ynnpack_convolutions(compiled_hlo: str) -> int:
    """How many convolutions XLA gave YNNPACK in a compiled module (`.compile().as_text()`):
    those inside the fusions whose kind is `__ynn_fusion`."""
    ynn_computations = set(re.findall(r"calls=(%[^,\s]+)[^\n]*\"kind\":\"__ynn_fusion\"", compiled_hlo))
    bodies = re.split(r"\n(?=%|ENTRY )", compiled_hlo)
    return sum(body.count(" convolution(") for body in bodies if body.split(" ", 1)[0] in ynn_computations)
