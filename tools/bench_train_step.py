"""Train-step throughput of a jaxcnn model: the full loop step (batch gather on
device, jitted sharded train step, on-device metric merge), on random data.

    python tools/bench_train_step.py                         # simple_cnn, 28x28x1, batch 128
    python tools/bench_train_step.py --pool reduce_window    # the same with Flax's pooling
    python tools/bench_train_step.py --model mlp --out bench.json
    python tools/bench_train_step.py --profile 15            # also the 15 costliest XLA ops of a window

Reports the compile (first step) time and the steady-state images/s: the median of
`--windows` timed windows of `--steps` steps each, after warm-up, and the best window
(this 2-core machine's timings vary by about 20% between windows), and the CPU time per
step of all the process' threads (steadier when other jobs share the cores).
"""

import argparse
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
    trainer = Trainer(config, dataset=dataset)

    from jaxcnn.train import steps
    batches = list(trainer.train_data.batches(trainer.shuffle_rng, 0))
    state, rng_key = trainer.state, trainer.dropout_rng

    def run(k):
        nonlocal state
        running, in_flight = steps.Metrics.empty(), steps.InFlight()
        for i in range(k):
            state, m = trainer._train_step(state, batches[i % len(batches)], rng_key)
            running = steps.merge(running, in_flight.add(m))
        jax.block_until_ready((state.params, running))

    start = time.perf_counter()
    run(1)
    compile_s = time.perf_counter() - start
    run(args.steps)  # warm-up
    rates, cpu = [], []
    for _ in range(args.windows):
        start, start_cpu = time.perf_counter(), time.process_time()
        run(args.steps)
        rates.append(args.steps * args.batch / (time.perf_counter() - start))
        cpu.append((time.process_time() - start_cpu) / args.steps)
    result = {
        "model": args.model, "input": args.shape, "batch": args.batch, "optimizer": args.optimizer,
        "pool": args.pool, "compile_s": round(compile_s, 2),
        "images_per_s": round(statistics.median(rates)), "best_images_per_s": round(max(rates)),
        "ms_per_step": round(1000 * args.batch / statistics.median(rates), 2),
        # CPU time of all threads per step: steadier than the wall clock when other jobs share the cores.
        "cpu_ms_per_step": round(1000 * statistics.median(cpu), 2),
        "windows": [round(r) for r in rates],
    }
    if args.profile:
        result["profile_ms_per_step"] = benchlib.op_profile(lambda: run(args.steps), args.steps, args.profile)
    benchlib.report(result, args.out)


if __name__ == "__main__":
    main()
