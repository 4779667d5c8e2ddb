"""Single convolutions three ways, forward / input gradient / kernel gradient (median wall ms
of `--calls` calls): jaxcnn's XLA form (what `jaxcnn.layers` compiles with oneDNN switched
off, with the kernel choice of `jaxcnn.backend`), jaxcnn's oneDNN convolution
(`jaxcnn.onednn`), and, when PyTorch is installed, PyTorch's own oneDNN convolution in
channels-last (what PyTorch and Keras run on CPU). Then dense layers' forward products the
same three ways (XLA's, `jaxcnn.onednn.matmul`, PyTorch's `mm`).

    python tools/bench_onednn.py
    python tools/bench_onednn.py --shapes 32x4x4x512:512:3,8x56x56x64:64:3:2 --dense 32x4096x4096 --out onednn.json

Each shape is BATCHxHEIGHTxWIDTHxCHANNELS:FILTERS:KERNEL[:STRIDE], 'same' padding; each dense
shape ROWSxINPUTSxOUTPUTS. The default shapes are ResNet-20's stages, LeNet-5's C3, and
ResNet-50's and VGG-16's; the dense ones the course's CNN's, ResNet-50's head, VGG-16's at
32x32 (fc1, fc2) and AlexNet's first (9216 -> 4096), and two between.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import benchlib
from jaxcnn import backend, layers, onednn

DEFAULT_SHAPES = ("128x32x32x16:16:3", "128x16x16x32:32:3", "128x8x8x64:64:3", "128x14x14x6:16:5",
                  "8x56x56x64:64:3", "8x56x56x256:64:1", "32x8x8x256:256:3", "32x4x4x512:512:3")
DEFAULT_DENSE = ("128x5408x128", "8x2048x1000", "32x512x4096", "32x4096x1000", "32x2048x2048", "32x4096x4096",
                 "32x9216x4096")
PASSES = ("forward", "input_gradient", "kernel_gradient")


def parse_shape(text: str):
    """'128x32x32x16:16:3[:2]' -> ((128, 32, 32, 16), 16, 3, 2)."""
    image, filters, kernel, *stride = text.split(":")
    return tuple(int(s) for s in image.split("x")), int(filters), int(kernel), int(stride[0]) if stride else 1


def median_ms(run, calls: int) -> float:
    """Median ms of `calls` calls of `run` (which returns once its work is done), after one."""
    run()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def time_jax(conv, x, kernel, dy, calls) -> dict:
    """Median ms of the three passes of `conv(x, kernel)`, each compiled with jaxcnn's options
    for this kernel (traced now: within `onednn.switched_off()` when the caller is)."""
    options = backend.compiler_options({"kernel": kernel})

    def pullback(x, kernel, dy):
        return jax.vjp(conv, x, kernel)[1](dy)
    passes = {"forward": lambda x, kernel, dy: conv(x, kernel),
              "input_gradient": lambda x, kernel, dy: pullback(x, kernel, dy)[0],
              "kernel_gradient": lambda x, kernel, dy: pullback(x, kernel, dy)[1]}
    compiled = {name: backend.jit(fn, options).lower(x, kernel, dy).compile() for name, fn in passes.items()}
    return {name: median_ms(lambda fn=fn: jax.block_until_ready(fn(x, kernel, dy)), calls)
            for name, fn in compiled.items()}


def time_torch(x, kernel, dy, stride, calls) -> dict | None:
    try:
        import torch
    except ImportError:
        return None
    channels_last = torch.channels_last
    tx = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=channels_last)
    tk = torch.from_numpy(kernel).permute(3, 2, 0, 1).contiguous(memory_format=channels_last)
    tdy = torch.from_numpy(dy).permute(0, 3, 1, 2).contiguous(memory_format=channels_last)
    pad = (kernel.shape[0] - 1) // 2

    def backward(mask):
        return lambda: torch.ops.aten.convolution_backward(tdy, tx, tk, None, [stride] * 2, [pad] * 2, [1, 1], False,
                                                           [0, 0], 1, mask)
    runs = {"forward": lambda: torch.nn.functional.conv2d(tx, tk, stride=stride, padding=pad),
            "input_gradient": backward([True, False, False]), "kernel_gradient": backward([False, True, False])}
    with torch.no_grad():  # eager PyTorch on CPU returns when its work is done
        return {name: median_ms(run, calls) for name, run in runs.items()}


def time_dense(text: str, calls: int) -> dict:
    """Forward ms of one dense shape 'ROWSxINPUTSxOUTPUTS': XLA's product, oneDNN's, PyTorch's."""
    rows, inputs, outputs = (int(s) for s in text.split("x"))
    rng = np.random.default_rng(0)
    x = rng.random((rows, inputs), dtype=np.float32)
    kernel = rng.normal(size=(inputs, outputs)).astype(np.float32)
    row = {"shape": text, "on_onednn_in_jaxcnn": kernel.size >= layers.ONEDNN_MIN_DENSE_KERNEL}
    try:
        import torch
        tx, tk = torch.from_numpy(x), torch.from_numpy(kernel)
        row["torch_ms"] = median_ms(lambda: torch.mm(tx, tk), calls)
    except ImportError:
        pass
    x, kernel = jnp.asarray(x), jnp.asarray(kernel)
    for name, product in (("xla_ms", jnp.dot), ("onednn_ms", onednn.matmul)):
        compiled = jax.jit(product).lower(x, kernel).compile()
        row[name] = median_ms(lambda: jax.block_until_ready(compiled(x, kernel)), calls)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default=",".join(DEFAULT_SHAPES))
    parser.add_argument("--dense", default=",".join(DEFAULT_DENSE), help="dense shapes ('' for none)")
    parser.add_argument("--calls", type=int, default=15)
    parser.add_argument("--out", help="write the result as JSON here")
    args = parser.parse_args()
    if not onednn.enabled():  # (initializes JAX's CPU client, not its thread pool's work)
        raise SystemExit("jaxcnn's oneDNN convolutions are not available here (see jaxcnn/onednn.py)")
    shapes = [parse_shape(text) for text in args.shapes.split(",")]
    operands = []
    for x_shape, filters, window, stride in shapes:
        rng = np.random.default_rng(0)
        x = rng.random(x_shape).astype(np.float32)
        kernel = (rng.normal(size=(window, window, x_shape[-1], filters)) * 0.1).astype(np.float32)
        out = [-(-n // stride) for n in x_shape[1:3]]  # 'same'
        operands.append((x, kernel, rng.normal(size=(x_shape[0], *out, filters)).astype(np.float32)))
    # PyTorch first, before JAX starts its threads: with both pools alive each slowed the other.
    torch_ms = [time_torch(*ops, shape[3], args.calls) for ops, shape in zip(operands, shapes)]
    rows = []
    for text, (x_shape, filters, window, stride), (x, kernel, dy), torch_row in zip(
            args.shapes.split(","), shapes, operands, torch_ms):
        x, kernel, dy = jnp.asarray(x), jnp.asarray(kernel), jnp.asarray(dy)
        strides, _, _, pads = layers._conv_geometry(x_shape[1:3], (window, window), stride, "same", 1)
        with onednn.switched_off():
            xla_ms = time_jax(lambda x, k: layers._conv(x, k, stride, "same", 1, 1, None), x, kernel, dy, args.calls)
        row = {"shape": text, "on_onednn_in_jaxcnn": dy.shape[1] * dy.shape[2] >= layers.ONEDNN_MIN_OUTPUT_PIXELS,
               "xla_ms": xla_ms,
               "onednn_ms": time_jax(lambda x, k: onednn.conv(x, k, strides, pads, (1, 1)), x, kernel, dy, args.calls)}
        if torch_row:
            row["torch_ms"] = torch_row
        rows.append(row)
        cells = [" / ".join(f"{row[k][p]:.2f}" for p in PASSES) for k in ("xla_ms", "onednn_ms", "torch_ms") if k in row]
        print(f"{text:22s} XLA {cells[0]:>20s}   oneDNN {cells[1]:>20s}"
              + (f"   PyTorch {cells[2]:>20s}" if len(cells) > 2 else "")
              + ("" if row["on_onednn_in_jaxcnn"] else "   (jaxcnn keeps XLA's: few output pixels)"), flush=True)
    dense_rows = []
    for text in filter(None, args.dense.split(",")):
        row = time_dense(text, args.calls)
        dense_rows.append(row)
        print(f"dense {text:16s} forward: XLA {row['xla_ms']:.2f}   oneDNN {row['onednn_ms']:.2f}"
              + (f"   PyTorch {row['torch_ms']:.2f}" if "torch_ms" in row else "")
              + ("" if row["on_onednn_in_jaxcnn"] else "   (jaxcnn keeps XLA's: a small kernel)"), flush=True)
    benchlib.report({"passes": PASSES, "rows": rows, "dense_forward": dense_rows}, args.out, quiet=True)


if __name__ == "__main__":
    main()
