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
most 28 MB instead (`xla_multiheap_size_constraint_per_heap`); glibc keeps blocks up to 32 MB
in its arenas, from one call to the next. Train step ms, alternating runs of
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

import functools
import os
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
    """`jax.jit(fun, **kwargs)` compiled with `options` (from `compiler_options`)."""
    return jax.jit(fun, compiler_options=dict(options) or None, **kwargs)


def ynnpack_convolutions(compiled_hlo: str) -> int:
    """How many convolutions XLA gave YNNPACK in a compiled module (`.compile().as_text()`):
    those inside the fusions whose kind is `__ynn_fusion`."""
    ynn_computations = set(re.findall(r"calls=(%[^,\s]+)[^\n]*\"kind\":\"__ynn_fusion\"", compiled_hlo))
    bodies = re.split(r"\n(?=%|ENTRY )", compiled_hlo)
    return sum(body.count(" convolution(") for body in bodies if body.split(" ", 1)[0] in ynn_computations)
