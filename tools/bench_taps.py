"""Every distinct convolution of a model with few input values per window (at most
`jaxcnn.layers.MAX_TAP_TERMS` taps x input channels: first layers), timed as XLA's
convolution and as jaxcnn's sum of taps (`jaxcnn.layers._conv_as_taps`).

    python tools/bench_taps.py --model simple_cnn --shape 28x28x1 --batch 128
    python tools/bench_taps.py --model lenet5 --shape 32x32x1 --batch 128 --activation tanh
    python tools/bench_taps.py --model resnet20 --shape 32x32x3 --batch 128

Each shape runs as its own jitted function, compiled with the model's compiler options
(`jaxcnn.backend.compiler_options`): the gradient with respect to the kernel and bias of
sum(activation(conv(x) + bias)^2), as a first layer's train step needs (nothing asks for
its input gradient). Reports the best of three windows of CPU time per call (all threads),
per shape and weighted by how often the model uses the shape, and for each shape whether
jaxcnn takes the sum of taps there (`jaxcnn.layers.conv_as_taps`).
"""

import collections

import jax
import jax.numpy as jnp
import numpy as np

import benchlib

FORMS = ("convolution", "taps")
ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh, "linear": lambda y: y}


def few_input_shapes(model: str, shape, batch: int) -> collections.Counter:
    """(input shape, kernel shape, strides, pads, dilation) of every convolution of `model`
    whose window holds at most MAX_TAP_TERMS input values, with counts."""
    from jaxcnn import layers

    def key(x, kernel, strides, padding, dilation, groups, dtype):
        if groups == 1 and layers.few_input_values(kernel.shape):
            strides, dilation, _, pads = layers._conv_geometry(x.shape[1:3], kernel.shape[:2], strides, padding,
                                                               dilation)
            return tuple(x.shape), tuple(kernel.shape), strides, pads, dilation

    return benchlib.layer_calls("_conv", model, shape, batch, key)


def gradient_fn(form: str, strides, pads, dilation, activation: str, options):
    from jaxcnn import backend, layers

    def loss(kernel, bias, x):
        if form == "convolution":
            y = layers._lax_conv(x, kernel, strides, pads, dilation)
        else:
            y = layers._conv_as_taps(x, kernel, strides, pads, dilation)
        return jnp.sum(ACTIVATIONS[activation](y + bias) ** 2)

    return backend.jit(jax.grad(loss, argnums=(0, 1)), options)


def main():
    parser = benchlib.layer_parser(__doc__.split("\n\n")[0], "simple_cnn", 20)
    parser.add_argument("--activation", choices=sorted(ACTIVATIONS), default="relu")
    args = parser.parse_args()
    from jaxcnn import backend, layers, models

    shape = tuple(int(s) for s in args.shape.split("x"))
    params = jax.eval_shape(lambda: models.create(args.model, num_classes=10).init(
        jax.random.key(0), jnp.zeros((args.batch, *shape)), train=False))["params"]
    options = backend.compiler_options(params)
    print(f"{args.model}: compiler options {dict(options)}")
    rng = np.random.default_rng(0)

    def time_shape(key):
        x_shape, kernel_shape, strides, pads, dilation = key
        x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
        kernel = jnp.asarray(rng.normal(size=kernel_shape) * 0.1, jnp.float32)
        bias = jnp.zeros(kernel_shape[-1])
        return ({"input": list(x_shape), "kernel": list(kernel_shape), "strides": list(strides),
                 "jaxcnn_uses_taps": layers.conv_as_taps(kernel_shape)},
                {form: benchlib.cpu_ms_per_call(gradient_fn(form, strides, pads, dilation, args.activation, options),
                                                (kernel, bias, x), args.calls)
                 for form in FORMS})

    benchlib.compare_forms(
        args, few_input_shapes(args.model, shape, args.batch), FORMS, time_shape,
        lambda key: f"{str(key[0]):20s} {str(key[1]):15s} stride {key[2][0]} "
                    f"({'taps' if layers.conv_as_taps(key[1]) else 'convolution'} in jaxcnn)")


if __name__ == "__main__":
    main()
