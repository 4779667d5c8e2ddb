"""Every distinct 1x1 convolution of a model, forward and both gradients, timed as XLA's
convolution and as jaxcnn's matrix product (`jaxcnn.layers._pointwise_conv`).

    python tools/bench_pointwise.py --model resnet50 --shape 224x224x3 --batch 8
    python tools/bench_pointwise.py --model mobilenet_v2 --shape 224x224x3 --batch 8

Each shape runs as its own jitted function: the gradient of sum(conv(relu(x * s + b))^2)
with respect to x and the kernel (a BatchNorm-like producer, as in the models; the input
materialized as `layers._conv` does). Reports the best of three windows of CPU time per
call (all threads), per shape and weighted by how often the model uses the shape. This is
the measurement behind the rule in `layers._conv`; the whole train step is
tools/bench_train_step.py.
"""

import collections

import jax
import jax.numpy as jnp
import numpy as np

import benchlib


FORMS = ("convolution", "product")


def pointwise_shapes(model: str, shape, batch: int) -> collections.Counter:
    """(input shape, filters, stride) of every 1x1 convolution of `model`, with counts."""
    from jaxcnn import layers

    def key(x, kernel, strides, padding, dilation, groups, dtype):
        if kernel.shape[:2] == (1, 1) and groups == 1:
            return tuple(x.shape), kernel.shape[-1], layers._pair(strides, "strides")

    return benchlib.layer_calls("_conv", model, shape, batch, key)


def gradient_fn(form: str, strides):
    from jaxcnn import layers

    def loss(x, kernel, scale, shift):
        x = layers.materialize(jax.nn.relu(x * scale + shift), kernel)
        if form == "convolution":
            y = jax.lax.conv_general_dilated(x, kernel, strides, "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        else:
            y = layers._pointwise_conv(x, kernel, strides)
        return jnp.sum(y * y)

    return jax.jit(jax.grad(loss, argnums=(0, 1)))


def main():
    args = benchlib.layer_parser(__doc__.split("\n\n")[0], "resnet50", 10).parse_args()
    rng = np.random.default_rng(0)

    def time_shape(key):
        x_shape, filters, strides = key
        x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
        kernel = jnp.asarray(rng.normal(size=(1, 1, x_shape[-1], filters)) * 0.1, jnp.float32)
        scale, shift = jnp.ones(x_shape[-1]), jnp.zeros(x_shape[-1])
        return ({"input": list(x_shape), "filters": filters, "strides": list(strides)},
                {form: benchlib.cpu_ms_per_call(gradient_fn(form, strides), (x, kernel, scale, shift), args.calls)
                 for form in FORMS})

    shape = tuple(int(s) for s in args.shape.split("x"))
    benchlib.compare_forms(args, pointwise_shapes(args.model, shape, args.batch), FORMS, time_shape,
                           lambda key: f"{str(key[0]):22s} -> {key[1]:5d} stride {key[2][0]}")


if __name__ == "__main__":
    main()
