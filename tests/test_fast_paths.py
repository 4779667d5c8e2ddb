"""The fast paths of jaxcnn.layers give the plain forms' outputs and gradients (their
speed is measured by tools/bench_peers.py, never asserted here)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import layers


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_materialize_is_the_identity_in_value_and_gradient(dtype):
    x = jax.random.normal(jax.random.key(0), (2, 5, 5, 3), dtype)
    kernel = jax.random.normal(jax.random.key(1), (3, 3, 3, 4))
    np.testing.assert_array_equal(np.asarray(jax.jit(layers.materialize)(x, kernel), np.float32),
                                  np.asarray(x, np.float32))
    grad_x, grad_kernel = jax.grad(lambda x, k: jnp.sum(layers.materialize(x, k).astype(jnp.float32) ** 2),
                                   argnums=(0, 1))(x, kernel)
    np.testing.assert_array_equal(np.asarray(grad_x, np.float32), np.asarray(2 * x.astype(jnp.float32), np.float32)
                                  .astype(dtype).astype(np.float32))
    np.testing.assert_array_equal(np.asarray(grad_kernel), 0)


def test_conv2d_matches_the_plain_convolution_in_outputs_and_gradients():
    """A residual chain feeding convolutions (the pattern `materialize` is for)."""
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
    k1 = jax.random.normal(jax.random.key(1), (3, 3, 3, 8)) * 0.3
    k2 = jax.random.normal(jax.random.key(2), (3, 3, 8, 8)) * 0.3
    k3 = jax.random.normal(jax.random.key(3), (1, 1, 8, 5)) * 0.3

    def net(conv, k1, k2, k3, x):
        h = jax.nn.relu(conv(x, k1, 1, [(1, 1), (1, 1)]))
        h = jax.nn.relu(conv(h, k2, 1, [(1, 1), (1, 1)]) + h)
        h = jax.nn.relu(conv(h, k2, 2, "SAME") + h[:, ::2, ::2])
        return jnp.sum(jnp.tanh(conv(h, k3, 1, "VALID")))

    library = lambda x, k, s, p: layers._conv(x, k, s, p, 1, 1, None)  # noqa: E731
    plain = lambda x, k, s, p: layers.jax.lax.conv_general_dilated(  # noqa: E731
        x, k, (s, s), p, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    fast = jax.jit(jax.value_and_grad(lambda *a: net(library, *a), argnums=(0, 1, 2, 3)))
    reference = jax.jit(jax.value_and_grad(lambda *a: net(plain, *a), argnums=(0, 1, 2, 3)))
    (value, grads), (want, want_grads) = fast(k1, k2, k3, x), reference(k1, k2, k3, x)
    np.testing.assert_allclose(value, want, rtol=1e-5)
    for got, expected in zip(grads, want_grads):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_the_pointwise_benchmark_finds_every_1x1_convolution_of_resnet50():
    """tools/bench_pointwise.py times the shapes it finds: ResNet-50 has 16 bottlenecks of two
    1x1 convolutions plus 4 projection shortcuts, 36 in all, 6 of them strided."""
    import bench_pointwise

    shapes = bench_pointwise.pointwise_shapes("resnet50", (64, 64, 3), 2)
    assert sum(shapes.values()) == 36
    assert sum(n for (_, _, strides), n in shapes.items() if strides == (2, 2)) == 6
    assert shapes[((2, 16, 16, 64), 256, (1, 1))] == 4  # stage 1's expansions and its shortcut


def test_the_depthwise_benchmark_finds_every_depthwise_convolution_of_mobilenet_v2():
    """tools/bench_depthwise.py times the shapes it finds: MobileNetV2 has 17 inverted
    residual blocks, one 3x3 depthwise convolution each, 4 of them strided."""
    import bench_depthwise

    shapes = bench_depthwise.depthwise_shapes("mobilenet_v2", (64, 64, 3), 2)
    assert sum(shapes.values()) == 17
    assert sum(n for (_, _, strides, _, _), n in shapes.items() if strides == (2, 2)) == 4
    assert all(kernel[:2] == (3, 3) and kernel[3] == 1 for _, kernel, _, _, _ in shapes)


def test_the_depthwise_benchmark_times_the_same_gradients_in_both_forms():
    import bench_depthwise

    x = jax.random.normal(jax.random.key(0), (2, 9, 8, 4))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, 4, 2))
    for strides, padding in (((1, 1), "same"), ((2, 2), "valid")):
        automatic, ours = (bench_depthwise.gradient_fn(form, strides, padding, (1, 1))(x, kernel)
                           for form in ("automatic", "jaxcnn"))
        for got, expected in zip(ours, automatic):
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_the_taps_benchmark_finds_the_first_convolutions_and_times_the_same_gradients_in_both_forms():
    """tools/bench_taps.py times the convolutions of few input values per window it finds:
    resnet20's 3-channel stem only, simple_cnn's one-channel convolution only."""
    import bench_taps

    shapes = bench_taps.few_input_shapes("resnet20", (32, 32, 3), 2)
    assert list(shapes.items()) == [(((2, 32, 32, 3), (3, 3, 3, 16), (1, 1), ((1, 1), (1, 1)), (1, 1)), 1)]
    (key, count), = bench_taps.few_input_shapes("simple_cnn", (28, 28, 1), 2).items()
    assert key[1] == (3, 3, 1, 32) and count == 1
    x = jax.random.normal(jax.random.key(0), (2, 9, 8, 3))
    kernel, bias = jax.random.normal(jax.random.key(1), (3, 3, 3, 16)), jnp.zeros(16)
    for activation in ("relu", "tanh"):
        convolution, taps = (bench_taps.gradient_fn(form, (2, 2), ((1, 1), (0, 1)), (1, 1), activation, ())(kernel, bias, x)
                             for form in bench_taps.FORMS)
        for got, expected in zip(taps, convolution):
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
