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

import argparse
import collections
import time

import jax
import jax.numpy as jnp
import numpy as np

import benchlib


def pointwise_shapes(model: str, shape, batch: int) -> collections.Counter:
    """(input shape, filters, stride) of every 1x1 convolution of `model`, with counts."""
    from jaxcnn import layers, models

    found = collections.Counter()
    original = layers._conv

    def spy(x, kernel, strides, padding, dilation, groups, dtype):
        if kernel.shape[:2] == (1, 1) and groups == 1:
            found[(tuple(x.shape), kernel.shape[-1], layers._pair(strides, "strides"))] += 1
        return original(x, kernel, strides, padding, dilation, groups, dtype)

    layers._conv = spy
    try:
        module = models.create(model, num_classes=10)
        jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((batch, *shape)), train=False))
    finally:
        layers._conv = original
    return found


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


def cpu_ms_per_call(fn, args, calls: int) -> float:
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for _ in range(calls):
            out = fn(*args)
        jax.block_until_ready(out)
        best = min(best, (time.process_time() - start) / calls * 1e3)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--shape", default="224x224x3", help="HxWxC")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--calls", type=int, default=10, help="calls per timed window")
    parser.add_argument("--out", help="write the result as JSON here")
    args = parser.parse_args()

    shape = tuple(int(s) for s in args.shape.split("x"))
    rng = np.random.default_rng(0)
    rows, totals = [], collections.Counter()
    for (x_shape, filters, strides), count in sorted(pointwise_shapes(args.model, shape, args.batch).items()):
        x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
        kernel = jnp.asarray(rng.normal(size=(1, 1, x_shape[-1], filters)) * 0.1, jnp.float32)
        scale, shift = jnp.ones(x_shape[-1]), jnp.zeros(x_shape[-1])
        ms = {form: cpu_ms_per_call(gradient_fn(form, strides), (x, kernel, scale, shift), args.calls)
              for form in ("convolution", "product")}
        for form, value in ms.items():
            totals[form] += value * count
        rows.append({"input": list(x_shape), "filters": filters, "strides": list(strides), "count": count,
                     "convolution_cpu_ms": round(ms["convolution"], 2), "product_cpu_ms": round(ms["product"], 2),
                     "ratio": round(ms["product"] / ms["convolution"], 2)})
        print(f"{str(x_shape):22s} -> {filters:5d} stride {strides[0]} x{count:<3d} "
              f"convolution {ms['convolution']:8.2f}  product {ms['product']:8.2f} ms CPU  "
              f"ratio {rows[-1]['ratio']:.2f}", flush=True)
    benchlib.report({"model": args.model, "input": args.shape, "batch": args.batch, "shapes": rows,
                     "weighted_cpu_ms": {form: round(v, 1) for form, v in totals.items()}}, args.out, quiet=True)
    print(f"weighted by use: convolution {totals['convolution']:.0f} ms, product {totals['product']:.0f} ms of CPU")


if __name__ == "__main__":
    main()
