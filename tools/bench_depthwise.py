"""Every distinct depthwise convolution of a model, forward and both gradients, timed with
jaxcnn's gradient (`jaxcnn.layers._depthwise`: one reduction for all taps of the kernel
gradient) and with the automatic gradient of the same sum of shifted slices.

    python tools/bench_depthwise.py --model mobilenet_v2 --shape 224x224x3 --batch 8
    python tools/bench_depthwise.py --model efficientnet_b0 --shape 224x224x3 --batch 8

Each shape runs as its own jitted function: the gradient of sum(depthwise(x)^2) with
respect to x and the kernel. Reports the best of three windows of CPU time per call (all
threads), per shape and weighted by how often the model uses the shape; the whole train
step is tools/bench_train_step.py.
"""

import collections

import jax
import jax.numpy as jnp
import numpy as np

import benchlib


FORMS = ("automatic", "jaxcnn")


def depthwise_shapes(model: str, shape, batch: int) -> collections.Counter:
    """(input shape, kernel shape, strides, padding, dilation) of every depthwise
    convolution of `model`, with counts."""
    from jaxcnn import layers

    def key(x, kernel, strides, padding, dilation, dtype):
        return (tuple(x.shape), tuple(kernel.shape), layers._pair(strides, "strides"),
                padding if isinstance(padding, str) else tuple(map(tuple, padding)),
                layers._pair(dilation, "dilation_rate"))

    return benchlib.layer_calls("_depthwise", model, shape, batch, key)


def gradient_fn(form: str, strides, padding, dilation):
    from jaxcnn import layers

    def depthwise(x, kernel):
        operands = layers._depthwise_operands(x, kernel, strides, padding, dilation, None)
        if form == "jaxcnn":
            return layers._sum_of_taps(*operands)
        return layers._sum_of_taps_plain(*operands)  # differentiated automatically: one reduction per tap

    return jax.jit(jax.grad(lambda x, kernel: jnp.sum(depthwise(x, kernel) ** 2), argnums=(0, 1)))


def main():
    args = benchlib.layer_parser(__doc__.split("\n\n")[0], "mobilenet_v2", 5).parse_args()
    rng = np.random.default_rng(0)

    def time_shape(key):
        x_shape, k_shape, strides, padding, dilation = key
        x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
        kernel = jnp.asarray(rng.normal(size=k_shape) * 0.1, jnp.float32)
        return ({"input": list(x_shape), "kernel": list(k_shape), "strides": list(strides)},
                {form: benchlib.cpu_ms_per_call(gradient_fn(form, strides, padding, dilation), (x, kernel),
                                                args.calls) for form in FORMS})

    shape = tuple(int(s) for s in args.shape.split("x"))
    benchlib.compare_forms(args, depthwise_shapes(args.model, shape, args.batch), FORMS, time_shape,
                           lambda key: f"{str(key[0]):22s} {key[1][0]}x{key[1][1]} stride {key[2][0]}")


if __name__ == "__main__":
    main()
