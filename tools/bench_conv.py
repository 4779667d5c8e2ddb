"""Time of single convolutions on this machine (forward, or with `--part kernel_gradient`
the gradient with respect to the kernel), and which XLA CPU kernel ran them (YNNPACK or
XLA's own), with the wall and the CPU time of all threads: a CPU time equal to the wall time
means one core did the work. Each shape is compiled twice: by plain `jax.jit`
(XLA's default kernels) and with `jaxcnn.backend.CONVOLUTIONS_ON_EIGEN` (convolutions on XLA's
own kernels), and the last column says which of the two jaxcnn's steps use for a model with
this convolution (`jaxcnn.backend.compiler_options`).

    python tools/bench_conv.py
    python tools/bench_conv.py --part kernel_gradient --shapes 128x28x28x1:32:3

Each shape is BATCHxHEIGHTxWIDTHxCHANNELS:FILTERS:KERNEL ('same' padding, stride 1); the
default shapes are resnet20's three stages (16, 32 and 64 channels at batch 128), a 32-to-32
convolution at full size, and the first convolutions of simple_cnn (one channel) and of
resnet20 (three).
"""

import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import benchlib
from jaxcnn import backend

DEFAULT_SHAPES = ("128x32x32x16:16:3", "128x16x16x32:32:3", "128x8x8x64:64:3", "128x32x32x32:32:3",
                  "128x28x28x1:32:3", "128x32x32x3:16:3")


def parse_shape(text: str):
    """'128x32x32x16:16:3' -> ((128, 32, 32, 16), 16, 3)."""
    image, filters, kernel = text.split(":")
    return tuple(int(s) for s in image.split("x")), int(filters), int(kernel)


def _convolution(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


PARTS = {
    "forward": lambda x, w, dy: _convolution(x, w),
    # The kernel gradient alone, as a first layer's (nothing asks for its input gradient).
    "kernel_gradient": lambda x, w, dy: jax.vjp(lambda w: _convolution(x, w), w)[1](dy)[0],
}


def time_convolution(x_shape, filters: int, kernel: int, calls: int, windows: int, jit, part: str) -> dict:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random(x_shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=(kernel, kernel, x_shape[-1], filters)) * 0.1, jnp.float32)
    dy = jnp.asarray(rng.normal(size=(*x_shape[:-1], filters)), jnp.float32)
    conv = jit(PARTS[part])
    kernel_name = "YNNPACK" if backend.ynnpack_convolutions(conv.lower(x, w, dy).compile().as_text()) else "XLA"
    jax.block_until_ready(conv(x, w, dy))
    wall, cpu = [], []
    for _ in range(windows):
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            out = conv(x, w, dy)
        jax.block_until_ready(out)
        wall.append((time.perf_counter() - start) / calls * 1e3)
        cpu.append((time.process_time() - start_cpu) / calls * 1e3)
    wall_ms, cpu_ms = statistics.median(wall), statistics.median(cpu)
    flop = 2 * np.prod(x_shape) * filters * kernel * kernel
    return {"input": list(x_shape), "filters": filters, "kernel": kernel, "ran_on": kernel_name,
            "wall_ms": round(wall_ms, 2), "cpu_ms": round(cpu_ms, 2), "cores_busy": round(cpu_ms / wall_ms, 2),
            "gflop_per_s": round(flop / wall_ms / 1e6, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default=",".join(DEFAULT_SHAPES), help="comma-separated NxHxWxC:FILTERS:KERNEL")
    parser.add_argument("--part", choices=sorted(PARTS), default="forward")
    parser.add_argument("--calls", type=int, default=20, help="calls per timed window")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--out", help="write the result as JSON here")
    args = parser.parse_args()
    rows = []
    for text in args.shapes.split(","):
        x_shape, filters, kernel = parse_shape(text)
        chosen = backend.compiler_options({"kernel": jax.ShapeDtypeStruct((kernel, kernel, x_shape[-1], filters),
                                                                          jnp.float32)})
        for options in ((), backend.CONVOLUTIONS_ON_EIGEN):
            jit = functools.partial(backend.jit, options=options)
            rows.append({"options": dict(options), "jaxcnn_uses": options == chosen,
                         **time_convolution(x_shape, filters, kernel, args.calls, args.windows, jit, args.part)})
            r = rows[-1]
            print(f"{text:20s} {r['ran_on']:8s} {'(jaxcnn)' if r['jaxcnn_uses'] else '':8s} "
                  f"wall {r['wall_ms']:7.2f} ms  CPU {r['cpu_ms']:7.2f} ms  cores busy {r['cores_busy']:.2f}  "
                  f"{r['gflop_per_s']:6.1f} GFLOP/s", flush=True)
    benchlib.report({"part": args.part, "convolutions": rows}, args.out, quiet=True)


if __name__ == "__main__":
    main()
