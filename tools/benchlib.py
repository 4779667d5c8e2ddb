"""What every benchmark in tools/ shares: the result stamped with the machine (devices,
processor, cores, load average, library versions), printed as JSON and optionally
written to a file."""

import importlib.metadata
import json
import os
import platform

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
