"""What every benchmark in tools/ shares: the result stamped with the machine (devices,
processor, cores, load average, library versions), printed as JSON and optionally
written to a file."""

import argparse
import collections
import importlib.metadata
import json
import os
import platform
import time

import jax

VERSIONED = ("jax", "jaxlib", "flax", "optax", "keras", "tensorflow", "tensorflow-cpu", "torch")


def versions() -> dict:
    found = {}
    for package in VERSIONED:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def report(result: dict, out: str | None = None, quiet: bool = False) -> None:
    result = {**result, "devices": [str(d) for d in jax.devices()], "jax": jax.__version__,
              "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
              "load_average": [round(v, 2) for v in os.getloadavg()], "versions": versions(),
              "xla_flags": os.environ.get("XLA_FLAGS", "")}
    if not quiet:
        print(json.dumps(result, indent=2))
    if out:
        with open(out, "w") as f:
            json.dump(result, f, indent=2)


def layer_parser(description: str, model: str, calls: int) -> argparse.ArgumentParser:
    """The options of the per-layer benchmarks (tools/bench_pointwise.py, bench_depthwise.py)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default=model)
    parser.add_argument("--shape", default="224x224x3", help="HxWxC")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--calls", type=int, default=calls, help="calls per timed window")
    parser.add_argument("--out", help="write the result as JSON here")
    return parser


def layer_calls(function: str, model: str, shape, batch: int, key) -> collections.Counter:
    """Counts of `key(*arguments)` over the calls of `jaxcnn.layers.<function>` while `model`
    is initialized on a (batch, *shape) input (shapes only, `jax.eval_shape`); calls whose
    key is None are not counted."""
    import jax.numpy as jnp
    from jaxcnn import layers, models

    found = collections.Counter()
    original = getattr(layers, function)

    def spy(*arguments):
        found_key = key(*arguments)
        if found_key is not None:
            found[found_key] += 1
        return original(*arguments)

    setattr(layers, function, spy)
    try:
        module = models.create(model, num_classes=10)
        jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((batch, *shape)), train=False))
    finally:
        setattr(layers, function, original)
    return found


def cpu_ms_per_call(fn, args, calls: int) -> float:
    """Best of three windows of `calls` calls: CPU time (all threads) per call, in ms."""
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for _ in range(calls):
            out = fn(*args)
        jax.block_until_ready(out)
        best = min(best, (time.process_time() - start) / calls * 1e3)
    return best


def compare_forms(args, shapes: collections.Counter, forms: tuple, time_shape, describe) -> None:
    """Times each distinct layer shape of a model in two forms (`time_shape(key)` returns
    the row's description and {form: CPU ms per call}), prints a line per shape and the
    totals weighted by how often the model uses each shape, and reports them."""
    rows, totals = [], collections.Counter()
    for key, count in sorted(shapes.items(), key=str):
        row, ms = time_shape(key)
        for form in forms:
            totals[form] += ms[form] * count
        rows.append({**row, "count": count, **{f"{form}_cpu_ms": round(ms[form], 2) for form in forms},
                     "ratio": round(ms[forms[1]] / ms[forms[0]], 2)})
        print(f"{describe(key)} x{count:<3d} " + "  ".join(f"{form} {ms[form]:8.2f}" for form in forms)
              + f" ms CPU  ratio {rows[-1]['ratio']:.2f}", flush=True)
    report({"model": args.model, "input": args.shape, "batch": args.batch, "shapes": rows,
            "weighted_cpu_ms": {form: round(totals[form], 1) for form in forms}}, args.out, quiet=True)
    print("weighted by use: " + ", ".join(f"{form} {totals[form]:.0f} ms" for form in forms) + " of CPU")


# Events of the trace that are not XLA ops: the Python and runtime frames around them.
_NOT_OPS = ("$", "PjitFunction", "CommonPjRt", "Handle inputs", "Allocate", "ThunkExecutor", "PjRt", "Execute")


def op_profile(run, steps: int, top: int) -> dict:
    """Runs `run()` (which executes `steps` steps) under jax.profiler and returns the `top`
    XLA ops (fusions, convolutions, dots) by summed trace time, in ms per step, plus their
    total. Summed over threads: with intra-op parallelism an op's time counts once per thread
    that worked on it, so compare ops with each other, not with the wall clock."""
    import collections
    import glob
    import gzip
    import tempfile

    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir):
            run()
        path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True))[-1]
        with gzip.open(path) as f:
            events = json.load(f)["traceEvents"]
    totals = collections.Counter()
    for event in events:
        if event.get("ph") == "X" and not event["name"].startswith(_NOT_OPS):
            totals[event["name"]] += event["dur"] / 1000 / steps
    ops = {name: round(ms, 3) for name, ms in totals.most_common(top)}
    if not ops:
        return ops
    kinds = collections.Counter()  # fusions of one kind: ynn_fusion.12 -> ynn_fusion
    for name, ms in totals.items():
        kinds[name.rsplit(".", 1)[0] if name.rsplit(".", 1)[-1].isdigit() else name] += ms
    return {"ops": ops, "by_kind": {k: round(ms, 3) for k, ms in kinds.most_common(top)},
            "total_of_all_ops": round(sum(totals.values()), 3)}
