"""Evaluation results of a run, written to `workdir/eval/<split>.json`."""

from __future__ import annotations

import os

from jaxcnn.train import workdir as workdir_lib


def write(workdir: str, split: str, results: dict) -> str:
    """Writes `results` (at least `accuracy` and `loss`) atomically; returns the path."""
    path = os.path.join(workdir, "eval", f"{split}.json")
    workdir_lib.write_json(path, {"split": split, **results})
    return path
