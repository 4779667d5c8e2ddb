"""What every benchmark in tools/ shares: the result stamped with the machine, printed
as JSON and optionally written to a file."""

import json
import platform

import jax


def report(result: dict, out: str | None = None) -> None:
    result = {**result, "devices": [str(d) for d in jax.devices()], "jax": jax.__version__,
              "machine": platform.processor() or platform.machine()}
    print(json.dumps(result, indent=2))
    if out:
        with open(out, "w") as f:
            json.dump(result, f, indent=2)
