"""jaxcnn's oneDNN convolutions (jaxcnn/onednn.py, jaxcnn/onednn_ops.cc) against the plain lax
convolution: values, gradients of every order, batching and threads; and which of jaxcnn's
convolutions run on it. Its matrix product against NumPy's, and the dense layers that use it
against Flax's own Dense."""

import platform
import shutil
import sys
import threading

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import config as config_lib, layers, onednn
from jaxcnn.data import Dataset, Split
from jaxcnn.train import Trainer

from conftest import run_python

BUILT_HERE = sys.platform == "linux" and platform.machine() == "x86_64"
needs_onednn = pytest.mark.skipif(not onednn.enabled(), reason="oneDNN convolutions need one x86-64 Linux CPU device")


def test_the_library_is_built_and_used_on_x86_64_linux():
    """An install on x86-64 Linux with a C++ compiler builds the handlers (setup.py) and pip
    brings oneDNN: if this fails there, jaxcnn silently runs XLA's slower convolutions."""
    if not BUILT_HERE or jax.default_backend() != "cpu" or jax.device_count() != 1:
        pytest.skip("oneDNN is built for x86-64 Linux and used on a one-device CPU")
    if not any(shutil.which(compiler) for compiler in ("c++", "g++", "clang++")):
        pytest.skip("no C++ compiler here: jaxcnn was installed without its oneDNN convolutions")
    assert onednn._extension_path() is not None, "jaxcnn/_onednn_ops*.so is missing: reinstall with a C++ compiler"
    assert onednn._library() is not None, "the oneDNN library (pip package onednn-cpu-gomp) did not load"
    assert onednn.enabled()


@needs_onednn
def test_the_first_call_in_a_process_registers_the_handlers():
    result = run_python("import jax.numpy as jnp; from jaxcnn import onednn; "
                        "print(float(onednn.conv(jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4)), (1, 1), "
                        "((1, 1), (1, 1)), (1, 1)).sum()))")
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.split()[-1]) == 2 * 4 * (36 * 27 + 4 * 6 * 18 + 4 * 12)  # corners, edges, interior


def _lax(x, kernel, strides, pads, dilation, groups):
    return jax.lax.conv_general_dilated(x, kernel, strides, pads, rhs_dilation=dilation,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)


def _ours(x, kernel, strides, pads, dilation, groups):
    return onednn.conv(x, kernel, strides, pads, dilation, groups)


GEOMETRIES = [  # batch, (H, W), kernel (KH, KW, C / groups, O), strides, pads, dilation, groups
    (4, (9, 9), (3, 3, 3, 5), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    (3, (10, 11), (5, 5, 6, 16), (1, 1), ((0, 0), (0, 0)), (1, 1), 1),      # LeNet-5's C3 (odd batch)
    (5, (12, 12), (3, 3, 8, 7), (2, 2), ((0, 1), (0, 1)), (1, 1), 1),       # strided 'same' (pad after)
    (2, (13, 10), (3, 3, 4, 6), (1, 1), ((2, 0), (1, 3)), (2, 2), 1),       # dilated, asymmetric pads
    (4, (8, 8), (1, 1, 16, 24), (1, 1), ((0, 0), (0, 0)), (1, 1), 1),       # 1x1
    (4, (9, 8), (1, 1, 16, 8), (2, 2), ((0, 0), (0, 0)), (1, 1), 1),        # strided 1x1
    (4, (9, 9), (3, 3, 1, 8), (1, 1), ((1, 1), (1, 1)), (1, 1), 8),         # depthwise
    (3, (9, 9), (3, 3, 1, 16), (2, 2), ((0, 1), (0, 1)), (1, 1), 8),        # depthwise, multiplier 2, strided
    (2, (7, 7), (3, 3, 2, 8), (1, 1), ((1, 1), (1, 1)), (1, 1), 4),         # grouped
    (1, (9, 9), (3, 3, 4, 4), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),         # one image: an OpenMP team
    (2, (4, 4), (3, 3, 64, 96), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),       # kernel larger than the input
]


def _operands(batch, size, kernel_shape, groups):
    x = jax.random.normal(jax.random.key(0), (batch, *size, kernel_shape[2] * groups))
    kernel = jax.random.normal(jax.random.key(1), kernel_shape) * 0.3
    return x, kernel


@needs_onednn
@pytest.mark.parametrize("batch,size,kernel_shape,strides,pads,dilation,groups", GEOMETRIES)
def test_values_and_gradients_are_the_lax_convolutions(batch, size, kernel_shape, strides, pads, dilation, groups):
    x, kernel = _operands(batch, size, kernel_shape, groups)
    assert onednn.supports(x.shape, kernel.shape, x.dtype, strides, pads, dilation, groups)
    args = (strides, pads, dilation, groups)
    ours = jax.jit(lambda x, k: _ours(x, k, *args))
    jaxpr = str(jax.make_jaxpr(ours)(x, kernel))
    assert "jaxcnn_onednn_conv_forward" in jaxpr and "conv_general_dilated" not in jaxpr
    want = _lax(x, kernel, *args)
    np.testing.assert_allclose(ours(x, kernel), want, rtol=1e-5, atol=1e-5)
    dy = jax.random.normal(jax.random.key(2), want.shape)
    grads = [jax.jit(jax.grad(lambda x, k, f=f: jnp.sum(f(x, k, *args) * dy), (0, 1)))(x, kernel) for f in (_ours, _lax)]
    for got, want in zip(*grads):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@needs_onednn
@pytest.mark.parametrize("batch,size,kernel_shape,strides,pads,dilation,groups", [GEOMETRIES[0], GEOMETRIES[3],
                                                                                  GEOMETRIES[7]])
def test_gradients_of_gradients_are_the_lax_convolutions(batch, size, kernel_shape, strides, pads, dilation, groups):
    """The input and kernel gradients are differentiable too (each made of the other passes):
    a penalty on the input gradient (as in gradient-penalty training), differentiated again."""
    x, kernel = _operands(batch, size, kernel_shape, groups)
    args = (strides, pads, dilation, groups)

    def penalty(f, x, k):
        gx, gk = jax.grad(lambda x, k: jnp.sum(jnp.tanh(f(x, k, *args))), (0, 1))(x, k)
        return jnp.sum(gx ** 2) + jnp.sum(jnp.sin(gk))

    got, want = (jax.jit(jax.grad(lambda x, k, f=f: penalty(f, x, k), (0, 1)))(x, kernel) for f in (_ours, _lax))
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-4)


@needs_onednn
def test_vmap_runs_each_member_as_the_lax_convolution():
    xs = jax.random.normal(jax.random.key(0), (3, 2, 8, 8, 4))
    kernels = jax.random.normal(jax.random.key(1), (3, 3, 3, 4, 5))
    args = ((1, 1), ((1, 1), (1, 1)), (1, 1), 1)
    got = jax.jit(jax.vmap(lambda x, k: _ours(x, k, *args)))(xs, kernels)
    np.testing.assert_allclose(got, jax.vmap(lambda x, k: _lax(x, k, *args))(xs, kernels), rtol=1e-5, atol=1e-5)


@needs_onednn
def test_calls_from_several_threads_at_once_keep_their_results_apart():
    """Each call runs on XLA's threads with per-thread buffers: steps compiled and run from
    several Python threads at once (different shapes share no primitive) stay exact."""
    args = ((1, 1), ((1, 1), (1, 1)), (1, 1), 1)
    step = jax.jit(jax.value_and_grad(lambda x, k: jnp.sum(jnp.tanh(_ours(x, k, *args))), (0, 1)))
    reference = jax.jit(jax.value_and_grad(lambda x, k: jnp.sum(jnp.tanh(_lax(x, k, *args))), (0, 1)))
    cases = [_operands(batch, (12, 12), (3, 3, 8, 8), 1) for batch in (2, 3, 4, 5)]
    wants = [reference(x, k) for x, k in cases]
    failures = []

    def run(i):
        for _ in range(20):
            got = step(*cases[i])
            for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(wants[i])):
                if not np.allclose(a, b, rtol=1e-4, atol=1e-4):
                    failures.append(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_what_onednn_does_not_run_stays_with_xla():
    assert not onednn.supports((2, 8, 8, 4), (3, 3, 4, 4), jnp.bfloat16, (1, 1), ((1, 1), (1, 1)), (1, 1), 1)
    assert not onednn.supports((2, 8, 8, 4), (3, 3, 4, 4), jnp.float32, (1, 1), ((-1, 0), (1, 1)), (1, 1), 1)
    assert not onednn.supports((2, 2, 2, 4), (5, 5, 4, 4), jnp.float32, (1, 1), ((0, 0), (0, 0)), (1, 1), 1)
    with onednn.switched_off():
        assert not onednn.enabled()
        jaxpr = str(jax.make_jaxpr(lambda x, k: layers._conv(x, k, 1, "same", 1, 1, None))(
            jnp.ones((2, 16, 16, 8)), jnp.ones((3, 3, 8, 8))))
        assert "jaxcnn_onednn" not in jaxpr


@needs_onednn
@pytest.mark.parametrize("size,kernel_shape,groups,on_onednn", [
    ((32, 32), (3, 3, 16, 16), 1, True),     # ResNet-20's first stage
    ((28, 28), (3, 3, 1, 32), 1, True),      # the course's CNN (else a sum of taps)
    ((14, 14), (1, 1, 64, 32), 1, True),     # 1x1 (else a matrix product)
    ((14, 14), (3, 3, 1, 32), 32, True),     # depthwise (else a sum of shifted slices)
    ((4, 4), (3, 3, 32, 32), 1, False),      # 16 output pixels: XLA's convolution
    ((2, 2), (3, 3, 32, 32), 1, False),      # 4: the product of patches
    ((5, 5), (5, 5, 16, 120), 1, False),     # LeNet-5's C5, one pixel: a Dense product
    ((7, 7), (3, 3, 16, 16), 1, True),       # 49
])
def test_which_convolutions_of_jaxcnn_run_on_onednn(size, kernel_shape, groups, on_onednn):
    x = jnp.ones((2, *size, kernel_shape[2] * groups))
    kernel = jnp.ones(kernel_shape)
    pads = "same" if kernel_shape[0] > 1 and kernel_shape != (5, 5, 16, 120) else "valid"
    if groups > 1 and groups == kernel_shape[3]:
        jaxpr = jax.make_jaxpr(lambda x, k: layers._depthwise(x, k.reshape(3, 3, groups, 1), 1, pads, 1, None))(
            x, kernel)
    else:
        jaxpr = jax.make_jaxpr(lambda x, k: layers._conv(x, k, 1, pads, 1, groups, None))(x, kernel)
    assert ("jaxcnn_onednn_conv_forward" in str(jaxpr)) == on_onednn


@needs_onednn
def test_a_train_step_is_the_same_with_xla_convolutions():
    """A ResNet-20 train step from the same state: loss, accuracy and parameters after the update
    agree with the step compiled with XLA's convolutions (BatchNorm statistics included)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(16, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=16).astype(np.int32)
    dataset = Dataset("random", Split(images, labels), None, Split(images, labels), [str(i) for i in range(10)], 255.0)
    config = config_lib.apply_overrides(config_lib.get_config(), {
        "model": "resnet20", "batch_size": "8", "optimizer": "sgd", "learning_rate": "0.1", "verbose": "0"})
    results = []
    for off in (False, True):
        trainer = Trainer(config, dataset=dataset)
        batch = next(iter(trainer.train_data.batches(trainer.shuffle_rng, 0)))
        if off:
            with onednn.switched_off():
                compiled = trainer._train_step.lower(trainer.state, batch, trainer.dropout_rng).compile()
        else:
            compiled = trainer._train_step.lower(trainer.state, batch, trainer.dropout_rng).compile()
        assert ("jaxcnn_onednn_conv" in compiled.as_text()) == (not off)
        results.append(compiled(trainer.state, batch, trainer.dropout_rng))
    (ours, our_metrics), (xla, xla_metrics) = results
    for a, b in zip(jax.tree.leaves((ours.params, ours.batch_stats, our_metrics)),
                    jax.tree.leaves((xla.params, xla.batch_stats, xla_metrics))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@needs_onednn
@pytest.mark.parametrize("m,k,n", [
    (3, 40, 1000),   # columns split over the threads, the last chunk shorter
    (1, 7, 5),       # fewer columns than a cache line: one chunk
    (32, 64, 33),
    (17, 1, 48),
])
def test_matmul_is_the_matrix_product(m, k, n):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(m, k)).astype(np.float32), rng.normal(size=(k, n)).astype(np.float32)
    want = a.astype(np.float64) @ b.astype(np.float64)
    for product in (onednn.matmul, jax.jit(onednn.matmul)):
        got = product(jnp.asarray(a), jnp.asarray(b))
        assert got.shape == (m, n) and got.dtype == jnp.float32
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def _dense_pair(features):
    """Flax's Dense and the same layer with jaxcnn's product (as jaxcnn's models build it)."""
    return nn.Dense(features), nn.Dense(features, dot_general=layers.dense_product)


@needs_onednn
@pytest.mark.parametrize("shape", [(6, 40), (2, 3, 40)])  # a batch of vectors, or of sequences of them
def test_a_dense_layer_with_a_large_kernel_runs_forward_on_onednn_as_flax_dense(shape, monkeypatch):
    monkeypatch.setattr(layers, "ONEDNN_MIN_DENSE_KERNEL", 40 * 24)
    plain, ours = _dense_pair(24)
    x = jax.random.normal(jax.random.key(0), shape)
    variables = plain.init(jax.random.key(1), x)
    assert "jaxcnn_onednn_matmul" in str(jax.make_jaxpr(ours.apply)(variables, x))
    np.testing.assert_allclose(ours.apply(variables, x), plain.apply(variables, x), rtol=1e-5, atol=1e-5)

    def loss(layer):
        return lambda v, x: jnp.sum(jnp.sin(layer.apply(v, x)))
    for grad in (jax.grad, lambda f: jax.grad(lambda v, x: jnp.sum(jax.grad(f, 1)(v, x) ** 2))):  # and of order 2
        got, want = grad(loss(ours))(variables, x), grad(loss(plain))(variables, x)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_dense_layers_with_small_kernels_or_without_onednn_keep_xlas_product(monkeypatch):
    _, ours = _dense_pair(24)
    x = jnp.ones((6, 40))
    variables = ours.init(jax.random.key(1), x)
    monkeypatch.setattr(layers, "ONEDNN_MIN_DENSE_KERNEL", 40 * 24 + 1)
    assert "jaxcnn_onednn" not in str(jax.make_jaxpr(ours.apply)(variables, x))
    monkeypatch.setattr(layers, "ONEDNN_MIN_DENSE_KERNEL", 1)
    with onednn.switched_off():
        assert "jaxcnn_onednn" not in str(jax.make_jaxpr(ours.apply)(variables, x))
    in_bfloat16 = nn.Dense(24, dtype=jnp.bfloat16, dot_general=layers.dense_product)
    assert "jaxcnn_onednn" not in str(jax.make_jaxpr(in_bfloat16.apply)(variables, x))


@needs_onednn
def test_models_dense_layers_take_jaxcnns_product(monkeypatch):
    from jaxcnn import models
    monkeypatch.setattr(layers, "ONEDNN_MIN_DENSE_KERNEL", 28 * 28 * 100)  # the MLP's hidden layer, not its head
    model = models.create("mlp")
    x = jnp.ones((2, 28, 28, 1))
    variables = model.init(jax.random.key(0), x)
    assert str(jax.make_jaxpr(model.apply)(variables, x)).count("jaxcnn_onednn_matmul") == 1
