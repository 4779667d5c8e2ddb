"""Prints the README's results table (Markdown) from run workdirs.

    python tools/results_table.py runs/digits_cnn/* runs/mnist_cnn/* runs/mnist_mlp/*

Each row comes from the workdir's config.json, metrics.jsonl and eval/test.json, so the
README never holds a number typed by hand.
"""

import json
import os
import sys


def row(workdir: str) -> str:
    config = json.load(open(os.path.join(workdir, "config.json")))
    test = json.load(open(os.path.join(workdir, "eval", "test.json")))
    epochs = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    train_seconds = sum(e["seconds"] for e in epochs)
    # Training's own evaluation records its wall time; a later `jaxcnn evaluate` rewrites the file without it.
    wall = f"{test['wall_seconds']:.0f} s" if "wall_seconds" in test else "n/a"
    return (f"| {config['model']} | {config['dataset']} | {test['accuracy'] * 100:.2f}% | {test['loss']:.4f} "
            f"| {test['epoch']} | {config['batch_size']} | {config['optimizer']} {config['learning_rate']:g}, "
            f"{config['schedule']} | {train_seconds:.0f} s | {wall} |")


def main(workdirs: list[str]) -> None:
    print("| model | dataset | test accuracy | test loss | epochs | batch | optimizer | train time | wall time |")
    print("|---|---|---|---|---|---|---|---|---|")
    for workdir in workdirs:
        print(row(workdir))


if __name__ == "__main__":
    main(sys.argv[1:])
