"""Train-step throughput of a jaxcnn model: the full loop step (batch gather on
device, jitted sharded train step, on-device metric merge), on random data.

    python tools/bench_train_step.py                         # simple_cnn, 28x28x1, batch 128
    python tools/bench_train_step.py --pool reduce_window    # the same with Flax's pooling
    python tools/bench_train_step.py --model mlp --out bench.json
    python tools/bench_train_step.py --profile 15            # also the 15 costliest XLA ops of a window
    python tools/bench_train_step.py --model resnet20 --shape 32x32x3 --compare-xla-default
    python tools/bench_train_step.py --model resnet20 --shape 32x32x3 --compare-xla-convolutions

Reports the compile (first step) time and the steady-state images/s: the median of
`--windows` timed windows of `--steps` steps each, after warm-up, and the best window
(this 2-core machine's timings vary by about 20% between windows), and the CPU time per
step of all the process' threads (steadier when other jobs share the cores).

`--compare-xla-default` also builds the same step compiled with XLA's default CPU kernels
instead of jaxcnn's choice (`jaxcnn.backend.compiler_options`) and times the two in
alternating windows in one process, so that the machine's drift falls on both alike.
`--compare-xla-convolutions` does the same for the step with XLA's convolutions instead of
oneDNN's (`jaxcnn.onednn`: the step traced under `onednn.switched_off()`).
"""

import argparse
import contextlib
import statistics
import time

import jax
import numpy as np

import benchlib


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="simple_cnn")
    parser.add_argument("--shape", default="28x28x1", help="HxWxC")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--optimizer", default="adam")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--windows", type=int, default=10)
    parser.add_argument("--pool", choices=["slices", "reduce_window"], default="slices",
                        help="max pooling implementation (reduce_window: flax.linen.max_pool)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="trace one more window with jax.profiler and print its N costliest XLA ops")
    parser.add_argument("--compare-xla-default", action="store_true",
                        help="also time the step compiled with XLA's default kernels, in alternating windows")
    parser.add_argument("--compare-xla-convolutions", action="store_true",
                        help="also time the step with XLA's convolutions instead of oneDNN's, in alternating windows")
    parser.add_argument("--out", help="write the result as JSON here")
    args = parser.parse_args()

    from jaxcnn import config as config_lib, layers
    from jaxcnn.data import Dataset, Split
    from jaxcnn.train import Trainer
    if args.pool == "reduce_window":
        import flax.linen as nn
        layers.max_pool = lambda x, window=2, strides=None, padding="VALID": nn.max_pool(
            x, (window,) * 2, (window,) * 2 if strides is None else (strides,) * 2, padding)

    shape = tuple(int(s) for s in args.shape.split("x"))
    n = args.batch * (args.steps + 1)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    labels = rng.integers(0, args.classes, size=n).astype(np.int32)
    split = Split(images, labels)
    dataset = Dataset("random", split, None, Split(images[: args.batch], labels[: args.batch]),
                      [str(i) for i in range(args.classes)], 255.0)
    config = config_lib.apply_overrides(config_lib.get_config(), {
        "model": args.model, "batch_size": str(args.batch), "optimizer": args.optimizer, "verbose": "0"})
    from jaxcnn import backend, onednn
    from jaxcnn.train import steps

    def build_run(trainer):
        """A function that runs k train steps of `trainer` (its state carried over)."""
        batches = list(trainer.train_data.batches(trainer.shuffle_rng, 0))
        carried = {"state": trainer.state}

        def run(k):
            running, in_flight = steps.Metrics.empty(), steps.InFlight()
            for i in range(k):
                carried["state"], m = trainer._train_step(carried["state"], batches[i % len(batches)],
                                                          trainer.dropout_rng)
                running = steps.merge(running, in_flight.add(m))
            jax.block_until_ready((carried["state"].params, running))
        return run

    def ynnpack_convolutions(trainer) -> int:
        """How many of the compiled train step's convolutions XLA gave YNNPACK."""
        batch = next(iter(trainer.train_data.batches(trainer.shuffle_rng, 0)))
        compiled = trainer._train_step.lower(trainer.state, batch, trainer.dropout_rng).compile()
        return backend.ynnpack_convolutions(compiled.as_text())

    trainers = {"jaxcnn": Trainer(config, dataset=dataset)}
    if args.compare_xla_default:
        chosen = backend.compiler_options
        backend.compiler_options = lambda params, largest_activation=None: ()  # the Trainer's steps: plain jax.jit
        trainers["xla_default"] = Trainer(config, dataset=dataset)
        backend.compiler_options = chosen
    # The step is traced at its first call: within this context for each variant.
    tracing = {name: contextlib.nullcontext for name in trainers}
    if args.compare_xla_convolutions:
        trainers["xla_convolutions"] = Trainer(config, dataset=dataset)
        tracing["xla_convolutions"] = onednn.switched_off
    runs = {name: build_run(t) for name, t in trainers.items()}

    compile_s = {}
    for name, run in runs.items():
        start = time.perf_counter()
        with tracing[name]():
            run(1)
        compile_s[name] = time.perf_counter() - start
        run(args.steps)  # warm-up
    # Counted after the first steps were timed: compiling ahead of time first would warm JAX's caches.
    on_ynnpack = {name: ynnpack_convolutions(t) for name, t in trainers.items()} if args.compare_xla_default else {}
    rates, cpu = {name: [] for name in runs}, {name: [] for name in runs}
    for _ in range(args.windows):
        for name, run in runs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            run(args.steps)
            rates[name].append(args.steps * args.batch / (time.perf_counter() - start))
            cpu[name].append((time.process_time() - start_cpu) / args.steps)

    def timings(name):
        return {
            "compiler_options": dict(trainers[name].compiler_options), **({"ynnpack_convolutions": on_ynnpack[name]}
                                                            if name in on_ynnpack else {}),
            "compile_s": round(compile_s[name], 2),
            "images_per_s": round(statistics.median(rates[name]), 1), "best_images_per_s": round(max(rates[name]), 1),
            "ms_per_step": round(1000 * args.batch / statistics.median(rates[name]), 2),
            # CPU time of all threads per step: steadier than the wall clock when other jobs share the cores.
            "cpu_ms_per_step": round(1000 * statistics.median(cpu[name]), 2),
            "windows": [round(r, 1) for r in rates[name]],
        }
    result = {"model": args.model, "input": args.shape, "batch": args.batch, "optimizer": args.optimizer,
              "pool": args.pool, **timings("jaxcnn")}
    for name in ("xla_default", "xla_convolutions"):
        if name in trainers:
            result[name] = timings(name)
    if args.profile:
        run = runs["jaxcnn"]
        result["profile_ms_per_step"] = benchlib.op_profile(lambda: run(args.steps), args.steps, args.profile)
    benchlib.report(result, args.out)


if __name__ == "__main__":
    main()
