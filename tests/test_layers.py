"""Layers against independent oracles: lax.reduce_window (Flax) and Keras."""

import math

import keras
import numpy as np
import pytest
import jax
import jax.numpy as jnp
import flax.linen as nn
import optax

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


@pytest.mark.parametrize("window,strides,padding", [(2, 2, "VALID"), (2, 2, "SAME"), ((2, 3), (2, 3), "VALID"),
                                                      (3, 2, "VALID"), (3, 2, "SAME"), (3, 1, "SAME"),
                                                      ((2, 3), (1, 2), "VALID")])
def test_max_pool_routes_ties_to_the_first_maximum_as_reduce_window(window, strides, padding):
    x = jax.random.randint(jax.random.key(0), (2, 9, 9, 3), 0, 3).astype(jnp.float32)  # many ties
    win = (window,) * 2 if isinstance(window, int) else window
    st = (strides,) * 2 if isinstance(strides, int) else strides
    cotangent = jax.random.normal(jax.random.key(1), nn.max_pool(x, win, st, padding).shape)
    g_ours = jax.grad(lambda x: jnp.sum(layers.max_pool(x, window, strides, padding) * cotangent))(x)
    g_ref = jax.grad(lambda x: jnp.sum(nn.max_pool(x, win, st, padding) * cotangent))(x)
    np.testing.assert_array_equal(g_ours, g_ref)
    assert "custom_vjp" in str(jax.make_jaxpr(lambda x: layers.max_pool(x, window, strides, padding))(x))


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


# --- convolutions: Keras' layers with the same weights ------------------------------

def _keras_outputs(layer, x, weights):
    layer.build(x.shape)
    layer.set_weights(weights)
    return np.asarray(layer(x))


def _ours(module, x):
    variables = module.init(jax.random.key(0), x)
    return module, variables


CONVS = [  # options of both, our padding, Keras' padding (explicit padding: Keras pads first)
    (dict(filters=6, kernel_size=3), "valid", "valid"),
    (dict(filters=6, kernel_size=3, strides=2), "same", "same"),
    (dict(filters=6, kernel_size=(1, 7)), "same", "same"),
    (dict(filters=4, kernel_size=5, strides=2), "same", "same"),
    (dict(filters=6, kernel_size=3, groups=2), "same", "same"),
    (dict(filters=6, kernel_size=3, dilation_rate=2), "same", "same"),
    (dict(filters=6, kernel_size=3, strides=2), ((1, 2), (0, 1)), "valid"),
]


@pytest.mark.parametrize("options,padding,keras_padding", CONVS)
def test_conv2d_matches_keras(options, padding, keras_padding):
    x = np.random.default_rng(0).normal(size=(2, 11, 10, 4)).astype(np.float32)
    module, variables = _ours(layers.Conv2D(padding=padding, activation="relu", **options), x)
    kernel, bias = variables["params"]["kernel"], variables["params"]["bias"] + 0.1
    keras_x = x if isinstance(padding, str) else np.pad(x, [(0, 0), *padding, (0, 0)])
    expected = _keras_outputs(keras.layers.Conv2D(padding=keras_padding, activation="relu", **options), keras_x,
                              [np.asarray(kernel), np.asarray(bias)])
    out = module.apply({"params": {"kernel": kernel, "bias": bias}}, x)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


POOLED_CONVS = [  # Conv2D options, pool_size, pool_strides, pool_padding
    (dict(filters=6, kernel_size=3), 2, None, "valid"),
    (dict(filters=6, kernel_size=3, padding="same"), 2, None, "same"),  # 11x10 maps: the pool pads
    (dict(filters=4, kernel_size=3, strides=2, groups=2), 3, 2, "valid"),  # overlapping windows (AlexNet)
]


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "leaky_relu", "elu", "swish", None])
@pytest.mark.parametrize("options,pool_size,pool_strides,pool_padding", POOLED_CONVS)
def test_conv2d_with_pooling_is_keras_conv_then_max_pooling(options, pool_size, pool_strides, pool_padding, activation):
    """Values against Keras' Conv2D -> MaxPooling2D, gradients against the same layer without
    its pooling followed by max_pool: pooling before the bias and activation (monotone ones)
    changes neither."""
    x = np.random.default_rng(0).normal(size=(2, 11, 10, 4)).astype(np.float32)
    pooled = layers.Conv2D(activation=activation, pool_size=pool_size, pool_strides=pool_strides,
                           pool_padding=pool_padding, **options)
    module, variables = _ours(pooled, x)
    params = {"kernel": variables["params"]["kernel"], "bias": variables["params"]["bias"] + 0.1}
    # Keras' "leaky_relu" string slopes 0.2; its LeakyReLU layer, as ours, 0.3
    keras_activation = keras.layers.LeakyReLU(negative_slope=0.3) if activation == "leaky_relu" else activation
    keras_conv = keras.layers.Conv2D(activation=keras_activation, **options)
    keras_conv.build(x.shape)
    keras_conv.set_weights([np.asarray(params["kernel"]), np.asarray(params["bias"])])
    expected = keras.layers.MaxPooling2D(pool_size, pool_strides, padding=pool_padding)(keras_conv(x))
    out = module.apply({"params": params}, x)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)

    plain = layers.Conv2D(activation=activation, **options)

    def loss(module, params, x, pool):
        y = module.apply({"params": params}, x)
        y = layers.max_pool(y, pool_size, pool_strides, pool_padding) if pool else y
        return jnp.sum(y * jnp.cos(jnp.arange(y.size).reshape(y.shape)))

    grads = jax.grad(loss, argnums=(1, 2))(module, params, x, False)
    reference = jax.grad(loss, argnums=(1, 2))(plain, params, x, True)
    for ours, theirs in zip(jax.tree.leaves(grads), jax.tree.leaves(reference)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    unpooled = module.apply({"params": params}, x, method="unpooled")
    np.testing.assert_allclose(unpooled, plain.apply({"params": params}, x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("strides,padding,multiplier", [(1, "same", 1), (2, "same", 2), (2, "valid", 1)])
def test_depthwise_and_separable_convs_match_keras(strides, padding, multiplier):
    x = np.random.default_rng(0).normal(size=(2, 10, 9, 3)).astype(np.float32)
    depthwise, variables = _ours(layers.DepthwiseConv2D(3, strides, padding, depth_multiplier=multiplier), x)
    weights = [np.asarray(variables["params"]["kernel"]), np.full(3 * multiplier, 0.1, np.float32)]
    expected = _keras_outputs(keras.layers.DepthwiseConv2D(3, strides, padding, depth_multiplier=multiplier),
                              x, weights)
    out = depthwise.apply({"params": {"kernel": weights[0], "bias": weights[1]}}, x)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)

    separable, variables = _ours(layers.SeparableConv2D(5, 3, strides, padding, depth_multiplier=multiplier), x)
    params = {**variables["params"], "bias": np.full(5, 0.1, np.float32)}
    expected = _keras_outputs(keras.layers.SeparableConv2D(5, 3, strides, padding, depth_multiplier=multiplier), x,
                              [np.asarray(params[k]) for k in ("depthwise_kernel", "pointwise_kernel", "bias")])
    np.testing.assert_allclose(separable.apply({"params": params}, x), expected, rtol=1e-5, atol=1e-5)


# --- the fast forms of convolutions: the plain lax convolution is the oracle ------------
# These are the forms jaxcnn gives XLA where oneDNN does not run a convolution: the tests
# that take the `xla_convolutions` fixture (conftest.py) switch oneDNN off.


def _lax_conv(x, kernel, strides, padding, dilation, groups=1):
    return jax.lax.conv_general_dilated(x, kernel, strides, layers.conv_padding(padding), rhs_dilation=dilation,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)


def _same_values_and_gradients(ours, reference, x, kernel):
    np.testing.assert_allclose(ours(x, kernel), reference(x, kernel), rtol=1e-5, atol=1e-5)
    cotangent = jax.random.normal(jax.random.key(2), reference(x, kernel).shape)
    grads = [jax.grad(lambda x, k, f=f: jnp.sum(f(x, k) * cotangent), (0, 1))(x, kernel) for f in (ours, reference)]
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size,kernel_shape,strides,padding,dilation", [
    ((2, 2), (3, 3, 8, 5), (1, 1), "same", (1, 1)),              # VGG-16's last stage on 32x32 inputs
    ((1, 1), (3, 3, 8, 5), (1, 1), "same", (1, 1)),
    ((2, 3), (3, 3, 4, 4), (2, 2), "same", (1, 1)),
    ((3, 3), (3, 3, 4, 4), (1, 1), ((2, 1), (0, 3)), (2, 2)),    # dilated window of 5 on 3 pixels
    ((2, 5), (3, 1, 4, 4), (1, 1), "same", (1, 1)),
])
def test_convolution_of_an_input_smaller_than_its_window_is_the_lax_convolution(
        size, kernel_shape, strides, padding, dilation, xla_convolutions):
    x = jax.random.normal(jax.random.key(0), (3, *size, kernel_shape[2]))
    kernel = jax.random.normal(jax.random.key(1), kernel_shape)
    _same_values_and_gradients(lambda x, k: layers._conv(x, k, strides, padding, dilation, 1, None),
                               lambda x, k: _lax_conv(x, k, strides, padding, dilation), x, kernel)


@pytest.mark.parametrize("size,kernel_shape,strides,padding,dilation", [
    ((5, 5), (5, 5, 6, 7), (1, 1), "valid", (1, 1)),             # LeNet-5's C5
    ((6, 7), (5, 5, 3, 4), (2, 3), "valid", (1, 1)),             # the stride leaves one window
    ((3, 3), (5, 5, 3, 4), (1, 1), 1, (1, 1)),                   # padded up to the window
    ((5, 6), (3, 3, 2, 4), (1, 2), "valid", (2, 2)),             # a dilated window
    ((1, 1), (3, 3, 8, 5), (1, 1), "same", (1, 1)),              # VGG-16's last stage on 16x16 inputs
])
def test_convolution_with_one_output_pixel_is_the_lax_convolution(
        size, kernel_shape, strides, padding, dilation, xla_convolutions):
    x = jax.random.normal(jax.random.key(0), (3, *size, kernel_shape[2]))
    kernel = jax.random.normal(jax.random.key(1), kernel_shape)
    ours = lambda x, k: layers._conv(x, k, strides, padding, dilation, 1, None)
    assert "conv_general_dilated" not in str(jax.make_jaxpr(ours)(x, kernel))  # the product form ran
    _same_values_and_gradients(ours, lambda x, k: _lax_conv(x, k, strides, padding, dilation), x, kernel)


@pytest.mark.parametrize("size,strides,padding", [
    ((7, 7), (1, 1), "same"),           # ResNet's and MobileNet's 1x1 convolutions
    ((7, 8), (2, 2), "valid"),          # ResNet-50's strided 1x1 (odd size: ceil(7 / 2) rows)
    ((7, 7), (2, 1), "same"),
    ((5, 6), (1, 1), 0),                # explicit zero padding
])
@pytest.mark.parametrize("channels", [(6, 5), (4, 9)])  # the kernel gradient transposes the narrower side
def test_pointwise_convolution_is_the_lax_convolution(size, strides, padding, channels, xla_convolutions):
    x = jax.random.normal(jax.random.key(0), (3, *size, channels[0]))
    kernel = jax.random.normal(jax.random.key(1), (1, 1, *channels))
    ours = lambda x, k: layers._conv(x, k, strides, padding, (1, 1), 1, None)
    assert "conv_general_dilated" not in str(jax.make_jaxpr(ours)(x, kernel))  # the product form ran
    _same_values_and_gradients(ours, lambda x, k: _lax_conv(x, k, strides, padding, (1, 1)), x, kernel)


@pytest.mark.parametrize("size,kernel_shape,strides,padding,dilation", [
    ((12, 12), (3, 3, 1, 32), (1, 1), "valid", (1, 1)),          # the course's CNN
    ((10, 9), (3, 3, 3, 16), (2, 2), "same", (1, 1)),            # an RGB stem, strided
    ((12, 12), (5, 5, 1, 16), (1, 1), "valid", (1, 1)),
    ((9, 9), (3, 3, 2, 16), (1, 2), ((2, 1), (0, 3)), (2, 1)),   # explicit padding, dilated
])
def test_convolution_of_few_input_values_is_the_lax_convolution(
        size, kernel_shape, strides, padding, dilation, xla_convolutions):
    x = jax.random.normal(jax.random.key(0), (3, *size, kernel_shape[2]))
    kernel = jax.random.normal(jax.random.key(1), kernel_shape)
    ours = lambda x, k: layers._conv(x, k, strides, padding, dilation, 1, None)
    jaxpr = str(jax.make_jaxpr(ours)(x, kernel))
    assert "custom_vjp" in jaxpr and "conv_general_dilated" not in jaxpr  # the sum of taps ran forward
    _same_values_and_gradients(ours, lambda x, k: _lax_conv(x, k, strides, padding, dilation), x, kernel)


@pytest.mark.parametrize("size,kernel_shape,strides,padding,dilation", [
    ((4, 4), (3, 3, 8, 16), (1, 1), "same", (1, 1)),             # VGG-16's fourth stage on 32x32 inputs
    ((5, 4), (3, 3, 8, 32), (2, 1), "same", (1, 1)),
    ((5, 5), (3, 3, 6, 24), (1, 1), ((2, 1), (0, 3)), (2, 1)),   # explicit padding, dilated
])
def test_convolution_with_a_kernel_larger_than_its_input_takes_the_patches_input_gradient(
        size, kernel_shape, strides, padding, dilation, xla_convolutions):
    x = jax.random.normal(jax.random.key(0), (2, *size, kernel_shape[2]))
    kernel = jax.random.normal(jax.random.key(1), kernel_shape)
    assert math.prod(kernel_shape) >= layers.PATCHES_INPUT_GRADIENT_MIN_KERNEL_RATIO * x.size
    ours = lambda x, k: layers._conv(x, k, strides, padding, dilation, 1, None)
    assert "custom_vjp" in str(jax.make_jaxpr(ours)(x, kernel))
    # XLA's input-gradient convolution is gone: the kernel is read as it is, by a product.
    input_gradient = jax.jit(lambda x, k, g: jax.vjp(lambda x: ours(x, k), x)[1](g)[0])
    g = jnp.ones(ours(x, kernel).shape)
    assert " convolution(" not in input_gradient.lower(x, kernel, g).as_text(dialect="hlo")
    reference = lambda x, k: _lax_conv(x, k, strides, padding, dilation)
    _same_values_and_gradients(ours, reference, x, kernel)
    # reverse over reverse: the gradients' own gradients are the convolution's
    second = [jax.grad(lambda x, k, f=f: jnp.sum(jax.grad(lambda x, k: jnp.sum(jnp.sin(f(x, k))), 0)(x, k) ** 2),
                       (0, 1))(x, kernel) for f in (ours, reference)]
    for a, b in zip(*second):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_convolution_with_a_kernel_not_much_larger_than_its_input_is_xlas(xla_convolutions):
    x, kernel = jnp.ones((2, 5, 5, 8)), jnp.ones((3, 3, 8, 16))  # a kernel 2.9x the input
    jaxpr = str(jax.make_jaxpr(lambda x, k: layers._conv(x, k, 1, "same", 1, 1, None))(x, kernel))
    assert "custom_vjp" not in jaxpr and "conv_general_dilated" in jaxpr


def test_convolution_of_few_input_values_in_bfloat16_accumulates_in_float32(xla_convolutions):
    x = jax.random.normal(jax.random.key(0), (2, 10, 10, 3), jnp.bfloat16)
    kernel = jax.random.normal(jax.random.key(1), (3, 3, 3, 16), jnp.bfloat16)
    ours = layers._conv(x, kernel, 1, "same", 1, 1, None)
    exact = _lax_conv(x.astype(jnp.float32), kernel.astype(jnp.float32), (1, 1), "SAME", (1, 1))
    assert ours.dtype == jnp.bfloat16
    np.testing.assert_allclose(ours.astype(jnp.float32), exact, rtol=1e-2, atol=1e-2)  # bfloat16's rounding only


def test_which_convolutions_are_sums_of_taps():
    assert layers.conv_as_taps((3, 3, 1, 32)) and layers.conv_as_taps((3, 3, 3, 16))
    assert layers.conv_as_taps((5, 5, 1, 16))                # 25 input values
    assert not layers.conv_as_taps((5, 5, 1, 6))            # LeNet-5's C1: fewer than 16 filters
    assert not layers.conv_as_taps((7, 7, 3, 64))           # ResNet-50's stem: 147 input values
    assert not layers.conv_as_taps((3, 3, 4, 32))           # 36 input values
    assert not layers.conv_as_taps((1, 1, 3, 32))           # 1x1: a matrix product


@pytest.mark.parametrize("size,kernel_shape,strides,padding,dilation", [
    ((9, 9), (3, 3, 6, 1), (1, 1), "same", (1, 1)),
    ((10, 9), (3, 3, 6, 1), (2, 2), "same", (1, 1)),             # MobileNet's strided blocks
    ((9, 9), (5, 5, 3, 2), (2, 1), "valid", (1, 1)),             # depth multiplier 2
    ((9, 9), (3, 3, 4, 3), (1, 1), ((2, 1), (0, 3)), (2, 2)),
    ((2, 2), (3, 3, 4, 1), (1, 1), "same", (1, 1)),
])
def test_depthwise_convolution_is_the_grouped_lax_convolution(
        size, kernel_shape, strides, padding, dilation, xla_convolutions):
    kh, kw, channels, multiplier = kernel_shape
    x = jax.random.normal(jax.random.key(0), (3, *size, channels))
    kernel = jax.random.normal(jax.random.key(1), kernel_shape)
    _same_values_and_gradients(
        lambda x, k: layers._depthwise(x, k, strides, padding, dilation, None),
        lambda x, k: _lax_conv(x, k.reshape(kh, kw, 1, channels * multiplier), strides, padding, dilation, channels),
        x, kernel)


def test_conv_rejects_unknown_padding_and_indivisible_groups():
    x = jnp.zeros((1, 8, 8, 3))
    with pytest.raises(ValueError, match="padding"):
        layers.Conv2D(4, padding="full").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="groups=2"):
        layers.Conv2D(4, groups=2).init(jax.random.key(0), x)


def test_zero_padding_and_normalization_match_keras():
    x = np.random.default_rng(0).normal(size=(2, 5, 6, 3)).astype(np.float32)
    np.testing.assert_array_equal(layers.zero_pad(x, ((1, 2), (0, 1))),
                                  keras.layers.ZeroPadding2D(((1, 2), (0, 1)))(x))
    mean, variance = np.array([0.1, -0.2, 0.3], np.float32), np.array([0.5, 2.0, 1.5], np.float32)
    module = layers.Normalization()
    variables = module.init(jax.random.key(0), x)
    assert set(variables) == {"batch_stats"}  # statistics, never trained
    np.testing.assert_array_equal(module.apply(variables, x), x)  # the identity until set
    variables = {"batch_stats": {"mean": mean, "variance": variance, "count": np.float32(10)}}
    np.testing.assert_allclose(module.apply(variables, x),
                               keras.layers.Normalization(mean=mean, variance=variance)(x), rtol=1e-5, atol=1e-6)


# --- BatchNorm: Flax's own is the oracle ---------------------------------------------

def _batch_norm_run(module_class, x, cotangent, **options):
    """Initial variables, then one training-mode apply from perturbed ones: the output, the
    updated statistics, and the gradients of sum(y * cotangent) for the parameters and x."""
    module = module_class(use_running_average=False, momentum=0.9, epsilon=1e-3, **options)
    variables = module.init(jax.random.key(0), x)
    perturbed = jax.tree.map(lambda v: v + jax.random.uniform(jax.random.key(3), v.shape, v.dtype, 0.5, 1.5),
                             variables)

    def loss(params, x):
        y, updates = module.apply({**perturbed, "params": params}, x, mutable=["batch_stats"])
        return jnp.sum(y.astype(jnp.float32) * cotangent), (y, updates)

    (_, (y, updates)), grads = jax.value_and_grad(loss, (0, 1), has_aux=True)(perturbed.get("params", {}), x)
    return variables, y, updates, grads


@pytest.mark.parametrize("shape,dtype,options", [
    ((4, 6, 5, 7), jnp.float32, {}),
    ((4, 6, 5, 7), jnp.float32, {"use_scale": False}),           # InceptionV3's Keras layout
    ((4, 6, 5, 7), jnp.float32, {"use_bias": False}),
    ((16, 9), jnp.float32, {}),                                  # after a Dense layer
    ((4, 6, 5, 7), jnp.bfloat16, {"dtype": jnp.bfloat16}),
])
def test_batch_norm_is_flax_batch_norm(shape, dtype, options):
    # An offset mean, as after a convolution, for the E[x^2] - E[x]^2 variance.
    x = (1.5 + 2 * jax.random.normal(jax.random.key(0), shape)).astype(dtype)
    cotangent = jax.random.normal(jax.random.key(1), shape)
    ours, flax_ = (_batch_norm_run(cls, x, cotangent, **options) for cls in (layers.BatchNorm, nn.BatchNorm))
    assert jax.tree.map(np.shape, ours[0]) == jax.tree.map(np.shape, flax_[0])  # the same variables, so
    jax.tree.map(np.testing.assert_array_equal, ours[0], flax_[0])               # checkpoints and imports fit
    assert ours[1].dtype == flax_[1].dtype
    tolerance = 2e-2 if dtype == jnp.bfloat16 else 1e-5
    for a, b in zip(jax.tree.leaves(ours[1:]), jax.tree.leaves(flax_[1:])):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=tolerance, atol=tolerance)
    with jax.disable_jit():  # the fused form ran, with its own gradient
        assert "custom_vjp" in str(jax.make_jaxpr(lambda x: _batch_norm_run(layers.BatchNorm, x, cotangent, **options))(x))


def test_batch_norm_statistics_have_their_own_gradients():
    """The mean and variance `batch_norm` returns differentiate as Flax's formula does (the
    layer only uses them for the running averages, but the function stands alone)."""
    x = 1.5 + 2 * jax.random.normal(jax.random.key(0), (3, 4, 5, 6))
    scale, bias = jax.random.uniform(jax.random.key(1), (6,), minval=0.5, maxval=1.5), jax.random.normal(jax.random.key(2), (6,))
    weights = [jax.random.normal(jax.random.key(k), s) for k, s in ((3, x.shape), (4, (6,)), (5, (6,)))]

    def plain(x, scale, bias):
        mean, mean_square = x.mean((0, 1, 2)), jnp.square(x).mean((0, 1, 2))
        var = jnp.maximum(0.0, mean_square - jnp.square(mean))
        return (x - mean) * jax.lax.rsqrt(var + 1e-3) * scale + bias, mean, var

    def loss(f):
        return lambda *args: sum(jnp.sum(out * w) for out, w in zip(f(*args), weights))

    ours = jax.grad(loss(lambda *a: layers.batch_norm(*a, 1e-3)), (0, 1, 2))(x, scale, bias)
    for a, b in zip(ours, jax.grad(loss(plain), (0, 1, 2))(x, scale, bias)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("train", [True, False])
def test_batch_norm_with_a_shift_is_flax_batch_norm_of_the_shifted_input(train):
    """shift (a convolution's bias, which ResNet-50's Keras layout hands to its BatchNorm) gives
    Flax's BatchNorm of x + shift: output, running statistics, and gradients of x, the shift
    and the layer's parameters (the shift's is zero in training: the batch mean absorbs it)."""
    x = 1.5 + 2 * jax.random.normal(jax.random.key(0), (4, 6, 5, 7))
    shift = 3 * jax.random.normal(jax.random.key(1), (7,))
    cotangent = jax.random.normal(jax.random.key(2), x.shape)
    variables = nn.BatchNorm().init(jax.random.key(0), x, use_running_average=True)
    variables = jax.tree.map(lambda v: v + jax.random.uniform(jax.random.key(3), v.shape, v.dtype, 0.5, 1.5), variables)

    def run(ours):
        def loss(params, x, shift):
            variables_ = {**variables, "params": params}
            if ours:
                y, updates = layers.BatchNorm(momentum=0.9).apply(variables_, x, use_running_average=not train,
                                                                  shift=shift, mutable=["batch_stats"])
            else:
                y, updates = nn.BatchNorm(momentum=0.9).apply(variables_, x + shift, use_running_average=not train,
                                                              mutable=["batch_stats"])
            return jnp.sum(y * cotangent), (y, updates)
        return jax.value_and_grad(loss, (0, 1, 2), has_aux=True)(variables["params"], x, shift)

    for a, b in zip(jax.tree.leaves(run(True)), jax.tree.leaves(run(False))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-4)


def test_batch_norm_in_inference_mode_or_with_a_mask_is_flax_batch_norm():
    x = 1.5 + 2 * jax.random.normal(jax.random.key(0), (4, 3, 3, 5))
    variables = nn.BatchNorm().init(jax.random.key(0), x, use_running_average=True)
    variables = jax.tree.map(lambda v: v + jax.random.uniform(jax.random.key(1), v.shape), variables)
    mask = jnp.arange(4)[:, None, None, None] < 3
    for kwargs, mutable in (({"use_running_average": True}, False),
                            ({"use_running_average": False, "mask": mask}, ["batch_stats"])):
        ours = layers.BatchNorm().apply(variables, x, mutable=mutable, **kwargs)
        jax.tree.map(np.testing.assert_array_equal, ours, nn.BatchNorm().apply(variables, x, mutable=mutable, **kwargs))


# --- local response normalization and max-norm -------------------------------------

def test_local_response_normalization_is_the_papers_formula():
    """b[c] = a[c] / (k + alpha * sum over channels max(0, c - n/2) .. min(N - 1, c + n/2) of a^2) ** beta."""
    a = np.random.default_rng(0).normal(scale=20.0, size=(2, 3, 4, 7)).astype(np.float32)
    n, k, alpha, beta = 5, 2.0, 1e-4, 0.75
    expected = np.empty_like(a)
    for c in range(a.shape[-1]):
        window = a[..., max(0, c - n // 2): min(a.shape[-1], c + n // 2 + 1)]
        expected[..., c] = a[..., c] / (k + alpha * np.sum(window ** 2, axis=-1)) ** beta
    np.testing.assert_allclose(layers.local_response_normalization(a), expected, rtol=1e-5)
    np.testing.assert_allclose(layers.local_response_normalization(a, depth_radius=1, bias=1.0, alpha=1e-3, beta=0.5),
                               a / np.sqrt(1.0 + 1e-3 * sum(np.pad(a ** 2, [(0, 0)] * 3 + [(1, 1)])[..., i:i + 7]
                                                            for i in range(3))), rtol=1e-5)


@pytest.mark.parametrize("shape,keras_axis", [((6, 4), 0), ((3, 3, 2, 4), [0, 1, 2])])
def test_max_norm_matches_keras_constraint(shape, keras_axis):
    kernel = np.random.default_rng(0).normal(scale=2.0, size=shape).astype(np.float32)
    np.testing.assert_allclose(layers.max_norm(kernel, 2.0), keras.constraints.MaxNorm(2.0, axis=keras_axis)(kernel),
                               rtol=1e-5)


def test_max_norm_constraint_projects_kernels_after_each_update():
    params = {"dense": {"kernel": jnp.ones((4, 3)), "bias": jnp.ones(3)}}
    tx = optax.chain(optax.sgd(1.0), layers.max_norm_constraint(1.5))
    grads = {"dense": {"kernel": -jnp.ones((4, 3)), "bias": -jnp.ones(3)}}
    updates, _ = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_allclose(jnp.linalg.norm(new["dense"]["kernel"], axis=0), 1.5, rtol=1e-5)  # 4 -> capped
    np.testing.assert_allclose(new["dense"]["bias"], 2.0)  # biases are not constrained


def test_leaky_relu_takes_the_courses_alpha():
    x = np.linspace(-3, 3, 13, dtype=np.float32)
    np.testing.assert_allclose(layers.activation("leaky_relu", alpha=0.1)(x),
                               keras.layers.LeakyReLU(negative_slope=0.1)(x), rtol=1e-6)


class _Dropout(nn.Module):
    rate: float
    per: str

    @nn.compact
    def __call__(self, x, train):
        return layers.dropout(x, self.rate, train, self.per)


@pytest.mark.parametrize("per,together", [("unit", ()), ("channel", (1, 2)), ("example", (1, 2, 3))])
def test_dropout_drops_units_feature_maps_or_examples_together_only_in_training(per, together):
    x = jnp.ones((64, 4, 5, 8))
    module = _Dropout(0.5, per)
    np.testing.assert_array_equal(module.apply({}, x, train=False), x)
    out = np.asarray(module.apply({}, x, train=True, rngs={"dropout": jax.random.key(0)}))
    assert set(np.unique(out)) == {0.0, 2.0}  # kept values are scaled by 1 / (1 - rate)
    if together:  # every group dropped together is constant
        assert np.all(out.min(axis=together) == out.max(axis=together))
    assert 0.4 < (out == 0).mean() < 0.6
