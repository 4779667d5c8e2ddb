"""Layers against independent oracles: lax.reduce_window (Flax) and Keras."""

import keras
import numpy as np
import pytest
import jax
import jax.numpy as jnp
import flax.linen as nn

from jaxcnn import layers

POOLS = [  # (input H, W), window, strides, padding
    ((26, 26), 2, 2, "VALID"),
    ((13, 13), 2, 2, "VALID"),   # odd size: the last row/column is dropped
    ((13, 13), 2, 2, "SAME"),    # odd size: padded after
    ((17, 15), 3, 2, "VALID"),   # overlapping (AlexNet, ResNet stem)
    ((17, 15), 3, 2, "SAME"),
    ((9, 9), 3, 1, "SAME"),      # stride 1 (Inception, NASNet)
    ((8, 8), (2, 3), (1, 2), "VALID"),
]


@pytest.mark.parametrize("size,window,strides,padding", POOLS)
def test_max_pool_matches_reduce_window_values_and_gradients(size, window, strides, padding):
    x = jax.random.normal(jax.random.key(0), (3, *size, 4))  # continuous: no ties
    win = (window,) * 2 if isinstance(window, int) else window
    st = (strides,) * 2 if isinstance(strides, int) else strides

    def ours(x):
        return layers.max_pool(x, window, strides, padding)

    def reference(x):
        return nn.max_pool(x, win, st, padding)

    np.testing.assert_array_equal(ours(x), reference(x))
    cotangent = jax.random.normal(jax.random.key(1), ours(x).shape)
    g_ours = jax.grad(lambda x: jnp.sum(ours(x) * cotangent))(x)
    g_ref = jax.grad(lambda x: jnp.sum(reference(x) * cotangent))(x)
    np.testing.assert_allclose(g_ours, g_ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("size,window,strides,padding", POOLS)
def test_pooling_matches_keras(size, window, strides, padding):
    x = np.random.default_rng(0).normal(size=(2, *size, 3)).astype(np.float32)
    for ours, theirs in ((layers.max_pool, keras.layers.MaxPooling2D), (layers.avg_pool, keras.layers.AveragePooling2D)):
        expected = np.asarray(theirs(window, strides, padding=padding.lower())(x))
        np.testing.assert_allclose(ours(x, window, strides, padding), expected, rtol=1e-6, atol=1e-6)


def test_global_pooling_matches_keras():
    x = np.random.default_rng(0).normal(size=(2, 5, 7, 3)).astype(np.float32)
    np.testing.assert_allclose(layers.global_avg_pool(x), keras.layers.GlobalAveragePooling2D()(x), rtol=1e-6)
    np.testing.assert_allclose(layers.global_max_pool(x), keras.layers.GlobalMaxPooling2D()(x), rtol=1e-6)


def test_pool_window_larger_than_input_is_an_error():
    with pytest.raises(ValueError, match="larger than the input"):
        layers.max_pool(jnp.zeros((1, 2, 2, 1)), 3)


@pytest.mark.parametrize("name", ["relu", "relu6", "sigmoid", "tanh", "softmax", "swish", "elu", "linear"])
def test_activations_match_keras(name):
    x = np.linspace(-8, 8, 61, dtype=np.float32).reshape(1, -1)
    keras_name = {"swish": "silu"}.get(name, name)
    np.testing.assert_allclose(layers.activation(name)(x), keras.activations.get(keras_name)(x),
                               rtol=1e-5, atol=1e-6)


def test_leaky_relu_defaults_to_keras_layer_slope():
    x = np.linspace(-3, 3, 13, dtype=np.float32)
    np.testing.assert_allclose(layers.activation("leaky_relu")(x), keras.layers.LeakyReLU()(x), rtol=1e-6)
    np.testing.assert_allclose(layers.activation("leaky_relu", negative_slope=0.1)(x),
                               keras.layers.LeakyReLU(negative_slope=0.1)(x), rtol=1e-6)


def test_step_is_heaviside_with_zero_gradient():
    x = jnp.array([-2.0, -0.0, 0.0, 0.5, 3.0])
    np.testing.assert_array_equal(layers.step(x), [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(jax.grad(lambda x: layers.step(x).sum())(x), jnp.zeros(5))


def test_unknown_activation_names_the_known_ones():
    with pytest.raises(ValueError, match="relu"):
        layers.activation("rectifier")
