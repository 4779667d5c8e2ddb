"""The README's Results table, from run workdirs and the experiment configs.

    python tools/results_table.py                     # print the table: one row per experiments/*.py
    python tools/results_table.py --write README.md   # replace the table between the README's markers
    python tools/results_table.py WORKDIR [...]       # rows for these workdirs only
    python tools/results_table.py --collect WORKDIR NAME   # keep a finished run's light files in results/NAME

A row's numbers come from its workdir: `config.json`, `metrics.jsonl`, `eval/test.json`
(accuracy, loss, `wall_seconds`, `cpu_seconds`) and `host.json` (the hardware, written by
`--collect` on the machine that ran it). The workdir of experiment X is `results/X`; an
experiment without one gets a "not yet run" row whose target and reason come from the
config file (`TARGET`, `NEEDS_GPU`), so the README never holds a number typed by hand.
The command shown is `jaxcnn train --config experiments/X.py` plus every key where the
run's config.json differs from the file's `get_config()`.
"""

from __future__ import annotations

import argparse
import ast
import glob
import json
import os
import platform
import shutil
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = "results"
BEGIN, END = "<!-- results-table:begin -->", "<!-- results-table:end -->"
# What a workdir keeps under results/: small files only (no checkpoints, TensorBoard events, predictions).
LIGHT = ("config.json", "dataset.json", "metrics.jsonl", "training.csv", "eval/*.json", "plots/*.png")
HEADER = ("| experiment | model | dataset | test accuracy | test loss | target | epochs | wall time | CPU time "
          "| hardware | command |\n|---|---|---|---|---|---|---|---|---|---|---|")
IGNORED_KEYS = {"verbose"}  # display only: not part of what a run computes
BUILT_IN = ("digits", "xor")  # datasets that ignore data_dir
# The table's order: the course's exercises, then the published baselines; others follow by name.
ORDER = ("digits_cnn", "xor_perceptron", "xor_linear_mlp", "xor_mlp", "mnist_mlp", "mnist_cnn", "mnist_lenet5",
         "keras_mnist_cnn", "intel_scenes_cnn", "intel_scenes_efficientnet_lite0", "cifar10_guided_cnn",
         "cifar10_alexnet", "cifar10_vgg16", "cifar10_resnet20", "cifar10_resnet32", "cifar10_resnet44",
         "cifar10_resnet56", "cifar10_resnet110", "cifar10_resnet50_transfer", "imagenet_alexnet")


def experiment_meta(name: str) -> dict:
    """TARGET, NEEDS_GPU and the docstring of experiments/<name>.py, read without importing it."""
    path = os.path.join(REPO, "experiments", f"{name}.py")
    if not os.path.isfile(path):
        return {}
    tree = ast.parse(open(path).read())
    meta = {"doc": ast.get_docstring(tree) or ""}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("TARGET", "NEEDS_GPU"):
                meta[node.targets[0].id] = ast.literal_eval(node.value)
    return meta


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and not (prefix + k).startswith("model_kwargs"):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def command(name: str, config: dict) -> str:
    """The `jaxcnn train` command that reproduces `config` from experiments/<name>.py."""
    base = f"jaxcnn train --config experiments/{name}.py"
    path = os.path.join(REPO, "experiments", f"{name}.py")
    if not os.path.isfile(path):
        return "`jaxcnn train` (config.json of the run)"
    sys.path.insert(0, REPO)
    from jaxcnn import config as config_lib
    default = json.loads(config_lib.to_json(config_lib.load(path)))
    # A key added to the schema after the run had its schema default in that run.
    schema = json.loads(config_lib.to_json(config_lib.get_config()))
    ran, ref = {**_flat(schema), **_flat(config)}, _flat(default)
    overrides = []
    for key in sorted(ran):
        if key in IGNORED_KEYS or ran[key] == ref.get(key) or (key == "data_dir" and ran["dataset"] in BUILT_IN):
            continue
        value = ran[key]
        if key == "data_dir":  # where this machine prepared its datasets: the reader's own place
            overrides.append("--config.data_dir=DATA_DIR")
            continue
        text = "'(" + ", ".join(map(repr, value)) + ("," if len(value) == 1 else "") + ")'" \
            if isinstance(value, list) else str(value).lower() if isinstance(value, bool) else str(value)
        overrides.append(f"--config.{key}={text}")
    return " ".join([base, *overrides, f"--workdir runs/{name}"])


def _duration(seconds) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def hardware(workdir: str) -> str:
    path = os.path.join(workdir, "host.json")
    if not os.path.isfile(path):
        return "n/a"
    host = json.load(open(path))
    devices = host["accelerators"] or "no GPU"
    return f"{host['cpu_count']} cores of {host['cpu']}, {devices}"


def measured_row(workdir: str, name: str | None = None) -> str:
    config = json.load(open(os.path.join(workdir, "config.json")))
    test = json.load(open(os.path.join(workdir, "eval", "test.json")))
    name = name or os.path.basename(os.path.normpath(workdir))
    meta = experiment_meta(name)
    # Training's own evaluation records its times; a later `jaxcnn evaluate` rewrites the file without them.
    return (f"| {name} | {config['model']} | {config['dataset']} | {test['accuracy'] * 100:.2f}% "
            f"| {test['loss']:.4f} | {meta.get('TARGET', '')} | {test['epoch']} "
            f"| {_duration(test.get('wall_seconds'))} | {_duration(test.get('cpu_seconds'))} | {hardware(workdir)} "
            f"| `{command(name, config)}` |")


def pending_row(name: str) -> str:
    meta = experiment_meta(name)
    sys.path.insert(0, REPO)
    from jaxcnn import config as config_lib
    config = config_lib.load(os.path.join(REPO, "experiments", f"{name}.py"))
    why = f"not yet run: needs a GPU ({meta['NEEDS_GPU']})" if "NEEDS_GPU" in meta else "not yet run"
    return (f"| {name} | {config.model} | {config.dataset} | {why} | | {meta.get('TARGET', '')} | {config.epochs} "
            f"| | | | `jaxcnn train --config experiments/{name}.py --workdir runs/{name}` |")


def table(workdirs: list[str] | None = None) -> str:
    rows = [HEADER]
    if workdirs:
        rows += [measured_row(w) for w in workdirs]
    else:
        names = [os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(REPO, "experiments", "*.py"))]
        for name in sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n)):
            workdir = os.path.join(REPO, RESULTS, name)
            done = os.path.isfile(os.path.join(workdir, "eval", "test.json"))
            rows.append(measured_row(workdir, name) if done else pending_row(name))
    return "\n".join(rows)


def write(readme: str, text: str) -> None:
    content = open(readme).read()
    if BEGIN not in content or END not in content:
        sys.exit(f"{readme} has no {BEGIN} ... {END} markers around its results table")
    head, rest = content.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(readme, "w") as f:
        f.write(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def collect(workdir: str, name: str) -> str:
    """Copies a finished run's light files into results/<name> with a host.json of this machine."""
    if not os.path.isfile(os.path.join(workdir, "eval", "test.json")):
        sys.exit(f"{workdir} has no eval/test.json: the run has not finished")
    dest = os.path.join(REPO, RESULTS, name)
    shutil.rmtree(dest, ignore_errors=True)
    for pattern in LIGHT:
        for src in glob.glob(os.path.join(workdir, pattern)):
            target = os.path.join(dest, os.path.relpath(src, workdir))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(src, target)
    import jax
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if os.path.isfile("/proc/cpuinfo") else platform.processor()
    accelerators = sorted({d.device_kind for d in jax.devices() if d.platform != "cpu"})
    host = {"cpu": cpu, "cpu_count": len(os.sched_getaffinity(0)), "accelerators": ", ".join(accelerators),
            "jax": jax.__version__, "python": platform.python_version()}
    with open(os.path.join(dest, "host.json"), "w") as f:
        json.dump(host, f, indent=2)
    return dest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdirs", nargs="*", help="run workdirs (default: results/<experiment> of each config)")
    parser.add_argument("--write", metavar="README", help="replace the table between the README's markers")
    parser.add_argument("--collect", nargs=2, metavar=("WORKDIR", "NAME"), help="copy a run into results/NAME")
    args = parser.parse_args(argv)
    if args.collect:
        print(collect(*args.collect))
        return
    text = table(args.workdirs)
    if args.write:
        write(args.write, text)
    else:
        print(text)


if __name__ == "__main__":
    main()
