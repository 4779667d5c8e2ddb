"""jaxcnn against Keras 3 (TensorFlow backend, as the course uses) and PyTorch eager:
the same model, batch size, optimizer (Adam 1e-3), loss and input shape, trained on one
random batch, one framework after another for each model, each in its own subprocess.

    python tools/bench_peers.py --out bench_peers.json              # every model, ~12 min
    python tools/bench_peers.py --models simple_cnn,resnet20 --frameworks jaxcnn,torch --rounds 1

For each framework it reports the first step's time (tracing and compilation), the
steady-state train images/s, eval images/s (forward only) and the peak resident memory of
its subprocess. Each model's frameworks run in `--rounds` rounds (jaxcnn, Keras, PyTorch,
jaxcnn, Keras, PyTorch, ...), each subprocess timing `windows` windows of `steps` steps
after a warm-up window; the images/s reported is the median of every round's windows, so
a burst of load from elsewhere on a shared machine falls on all frameworks alike rather
than on whichever ran during it. Keras and PyTorch models are built layer for layer as
jaxcnn's (tools/peer_models.py); their trainable parameter counts are asserted equal.
For jaxcnn it also counts the train step's FLOPs (XLA's cost analysis) and reports them
as a fraction of a large float32 matmul's rate measured in the same subprocess.

The machine's load average is recorded before and after each measurement: on a shared
machine timings vary, so compare frameworks within one run (each model's frameworks run
back to back), and read the ratios rather than the absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import benchlib

# model: (input HxWxC, classes, batch, steps per window, windows per round)
MODELS = {
    "simple_cnn": ((28, 28, 1), 10, 128, 20, 5),
    "lenet5": ((32, 32, 1), 10, 128, 20, 5),
    "resnet20": ((32, 32, 3), 10, 128, 3, 5),
    "vgg16": ((32, 32, 3), 10, 32, 2, 5),
    "mobilenet_v2": ((224, 224, 3), 1000, 8, 2, 5),
    "resnet50": ((224, 224, 3), 1000, 8, 1, 5),
}
FRAMEWORKS = ("jaxcnn", "keras", "torch")
LEARNING_RATE = 1e-3


def timed_windows(step, steps: int, windows: int, batch: int, sync) -> dict:
    """First call's seconds, then the median and best images/s of `windows` windows of
    `steps` calls, after one untimed warm-up window."""
    start = time.perf_counter()
    sync(step())
    first_s = time.perf_counter() - start
    for _ in range(steps):
        out = step()
    sync(out)
    rates = []
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(steps):
            out = step()
        sync(out)
        rates.append(steps * batch / (time.perf_counter() - start))
    return windows_summary(first_s, rates)


def windows_summary(first_s: float, rates: list[float]) -> dict:
    """The first call's seconds, and the median and best of the windows' images/s."""
    return {"first_s": round(first_s, 2), "images_per_s": round(statistics.median(rates), 1),
            "best_images_per_s": round(max(rates), 1), "windows": [round(r, 1) for r in rates]}


def random_batch(shape, classes, batch):
    import numpy as np
    rng = np.random.default_rng(0)
    return (rng.uniform(0, 1, (batch, *shape)).astype(np.float32),
            rng.integers(0, classes, batch).astype(np.int32))


# --- workers (one framework, one model, in a subprocess) -------------------------


def matmul_rate(size: int = 2048, repeats: int = 5) -> float:
    """float32 FLOP/s of a size x size matmul in JAX (median of `repeats`)."""
    import jax
    import jax.numpy as jnp
    a = jnp.ones((size, size), jnp.float32)
    dot = jax.jit(jnp.dot)
    dot(a, a).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        dot(a, a).block_until_ready()
        times.append(time.perf_counter() - start)
    return 2 * size ** 3 / statistics.median(times)


def run_jaxcnn(name, shape, classes, batch, steps, windows) -> dict:
    import jax
    import numpy as np

    from jaxcnn import config as config_lib
    from jaxcnn.data import Dataset, Split
    from jaxcnn.train import Trainer

    images, labels = random_batch(shape, classes, batch)
    images = (images * 255).astype(np.uint8)  # the pipeline feeds uint8 and scales on device
    split = Split(images, labels)
    dataset = Dataset("random", split, None, split, [str(i) for i in range(classes)], 255.0)
    config = config_lib.apply_overrides(config_lib.get_config(), {
        "model": name, "batch_size": str(batch), "optimizer": "adam", "learning_rate": str(LEARNING_RATE),
        "verbose": "0"})
    trainer = Trainer(config, dataset=dataset)
    batch_arrays = next(iter(trainer.train_data.batches(trainer.shuffle_rng, 0)))
    state, rng = trainer.state, trainer.dropout_rng

    def train():
        nonlocal state
        state, metrics = trainer._train_step(state, batch_arrays, rng)
        return state.params, metrics

    result = {"train": timed_windows(train, steps, windows, batch, jax.block_until_ready)}
    result["eval"] = timed_windows(lambda: trainer._eval_step(state, batch_arrays), steps, windows, batch,
                                   jax.block_until_ready)
    # The step's FLOPs as XLA counts them for its own convolutions (a custom call, as oneDNN's, counts
    # none): the step traced afresh (a new function: JAX caches traces by function) without oneDNN.
    from jaxcnn import onednn
    with onednn.switched_off():
        cost = jax.jit(lambda *args: trainer._train_step.__wrapped__(*args)).lower(
            state, batch_arrays, rng).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost.get("flops", 0.0))
    rate = matmul_rate()
    achieved = flops * result["train"]["images_per_s"] / batch
    result.update(
        trainable=int(sum(x.size for x in jax.tree.leaves(state.params))),
        train_step_gflops=round(flops / 1e9, 2), achieved_gflop_per_s=round(achieved / 1e9, 1),
        matmul_gflop_per_s=round(rate / 1e9, 1), fraction_of_matmul=round(achieved / rate, 3),
        device=str(jax.devices()[0]), versions={"jax": jax.__version__}, onednn_convolutions=onednn.enabled())
    return result


def run_keras(name, shape, classes, batch, steps, windows) -> dict:
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import keras
    import numpy as np
    import tensorflow as tf

    from peer_models import keras_model

    images, labels = random_batch(shape, classes, batch)
    model = keras_model(name, shape, classes)
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    x, y = tf.constant(images), tf.constant(labels)

    def sync(out):
        np.asarray(out[0] if isinstance(out, (list, tuple)) else out)

    result = {"train": timed_windows(lambda: model.train_on_batch(x, y), steps, windows, batch, sync),
              "eval": timed_windows(lambda: model.predict_on_batch(x), steps, windows, batch, sync)}
    result.update(trainable=int(sum(np.prod(w.shape) for w in model.trainable_weights)),
                  device="/".join(d.device_type for d in tf.config.list_logical_devices()),
                  versions={"keras": keras.__version__, "tensorflow": tf.__version__},
                  jit_compile=str(getattr(model, "jit_compile", None)))
    return result


def run_torch(name, shape, classes, batch, steps, windows) -> dict:
    import torch

    from peer_models import torch_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    images, labels = random_batch(shape, classes, batch)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)  # NCHW, PyTorch's layout
    y = torch.from_numpy(labels).long().to(device)
    model = torch_model(name, shape, classes).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    loss_fn = torch.nn.CrossEntropyLoss()

    def train():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    @torch.no_grad()
    def evaluate():
        model.eval()
        return model(x)

    def sync(out):
        out.detach().cpu()

    result = {"train": timed_windows(train, steps, windows, batch, sync),
              "eval": timed_windows(evaluate, steps, windows, batch, sync)}
    result.update(trainable=int(sum(p.numel() for p in model.parameters() if p.requires_grad)),
                  device=device, versions={"torch": torch.__version__}, threads=torch.get_num_threads())
    return result


WORKERS = {"jaxcnn": run_jaxcnn, "keras": run_keras, "torch": run_torch}


def worker(framework: str, name: str, out: str) -> None:
    import resource
    shape, classes, batch, steps, windows = MODELS[name]
    result = WORKERS[framework](name, shape, classes, batch, steps, windows)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    with open(out, "w") as f:
        json.dump(result, f)


# --- driver --------------------------------------------------------------------


def measure(framework: str, name: str, timeout: int) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        path = f.name
    load_before = os.getloadavg()
    start = time.perf_counter()
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", framework, "--models", name, "--out", path]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    result = {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    if proc.returncode == 0:
        with open(path) as f:
            result = json.load(f)
    os.unlink(path)
    result.update(wall_s=round(time.perf_counter() - start, 1), load_before=[round(v, 2) for v in load_before],
                  load_after=[round(v, 2) for v in os.getloadavg()])
    return result


def pool_rounds(rounds: list[dict]) -> dict:
    """One framework's result over its rounds: the first round's, with train and eval images/s
    the median (best: the maximum) of every round's windows, each round's median kept as
    `round_medians`, the first step the median of the rounds', and peak memory the largest.
    A round that failed makes the whole an error."""
    failed = [r for r in rounds if "train" not in r]
    if failed:
        return failed[0]
    pooled = dict(rounds[0])
    for part in ("train", "eval"):
        pooled[part] = windows_summary(statistics.median(r[part]["first_s"] for r in rounds),
                                       [w for r in rounds for w in r[part]["windows"]])
        pooled[part]["round_medians"] = [r[part]["images_per_s"] for r in rounds]
    pooled.update(peak_rss_mb=max(r["peak_rss_mb"] for r in rounds), wall_s=round(sum(r["wall_s"] for r in rounds), 1),
                  load_before=[r["load_before"] for r in rounds], load_after=[r["load_after"] for r in rounds])
    return pooled


def table(results: dict) -> str:
    lines = ["| model | input | batch | framework | train img/s (median) | vs fastest peer | first step | "
             "eval img/s | peak RSS | % of matmul rate |", "|" + "---|" * 10]
    for name, entry in results["models"].items():
        runs = entry["frameworks"]
        peers = [r["train"]["images_per_s"] for f, r in runs.items() if f != "jaxcnn" and "train" in r]
        for framework, r in runs.items():
            if "train" not in r:
                lines.append(f"| {name} | | | {framework} | error: {r.get('error', '?')} | | | | | |")
                continue
            ratio = (f"{r['train']['images_per_s'] / max(peers):.2f}x"
                     if framework == "jaxcnn" and peers else "")
            fraction = f"{100 * r['fraction_of_matmul']:.0f}%" if "fraction_of_matmul" in r else ""
            lines.append(f"| {name} | {entry['input']} | {entry['batch']} | {framework} | "
                         f"{r['train']['images_per_s']:,.0f} | {ratio} | {r['train']['first_s']:.1f} s | "
                         f"{r['eval']['images_per_s']:,.0f} | {r['peak_rss_mb']:,} MB | {fraction} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    parser.add_argument("--rounds", type=int, default=2, help="subprocesses per framework and model, alternating")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per framework, model and round")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.models, args.out)

    names, frameworks = args.models.split(","), args.frameworks.split(",")
    unknown = [n for n in names if n not in MODELS] + [f for f in frameworks if f not in FRAMEWORKS]
    if unknown:
        parser.error(f"unknown model or framework: {', '.join(unknown)}")
    if args.rounds < 1:
        parser.error("--rounds must be 1 or more")
    results = {"command": " ".join(sys.argv), "cpu_count": os.cpu_count(), "learning_rate": LEARNING_RATE,
               "optimizer": "adam", "rounds": args.rounds, "models": {}}
    for name in names:
        shape, classes, batch, steps, windows = MODELS[name]
        entry = results["models"][name] = {"input": "x".join(map(str, shape)), "classes": classes, "batch": batch,
                                           "steps_per_window": steps, "windows": windows, "frameworks": {}}
        rounds = {framework: [] for framework in frameworks}
        for round_index in range(args.rounds):
            for framework in frameworks:
                rounds[framework].append(measure(framework, name, args.timeout))
                print(f"{name} {framework} round {round_index + 1}: {json.dumps(rounds[framework][-1])}",
                      file=sys.stderr, flush=True)
        entry["frameworks"] = {framework: pool_rounds(runs) for framework, runs in rounds.items()}
        counts = {f: r["trainable"] for f, r in entry["frameworks"].items() if "trainable" in r}
        if len(set(counts.values())) > 1:
            raise SystemExit(f"{name}: trainable parameter counts differ between frameworks: {counts}")
        entry["trainable"] = next(iter(counts.values()), None)
    print(table(results))
    benchlib.report(results, args.out, quiet=True)


if __name__ == "__main__":
    main()
