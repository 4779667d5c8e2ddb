"""Multi-host runs: joining the processes with `jax.distributed.initialize`.

One process per host (or, for tests, several on one host), each seeing its local devices;
after initialization `jax.devices()` lists every process's devices, the trainer's mesh
spans them all, and the jitted steps run as one program. Each process computes, and
feeds its devices, only its own shard of every global batch; the arrays are replicated
or sharded over the global mesh, so results equal a single process's within float
tolerance. Only process 0 writes the run's files; Orbax coordinates the checkpoints.

On CPU the processes exchange collectives with Gloo (JAX's default CPU collectives).
"""

from __future__ import annotations

import os

import jax

from jaxcnn.errors import UserError

_initialized = False


def settings(config) -> tuple[str | None, int | None, int | None]:
    """(coordinator_address, num_processes, process_id) from the config, else the
    environment (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID)."""
    d = config.distributed
    address = d.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    count = d.num_processes or _env_int("JAX_NUM_PROCESSES")
    process = d.process_id if d.process_id >= 0 else _env_int("JAX_PROCESS_ID")
    return address, count, process


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable {name}={value!r} is not an integer") from None


def initialize(config) -> bool:
    """Joins the other processes of a multi-host run, when the config or environment asks
    for one; returns whether this is a multi-process run. Must run before JAX uses a device."""
    global _initialized
    if _initialized:
        return jax.process_count() > 1
    address, count, process = settings(config)
    if address is None and (count or 1) <= 1:
        return False
    if address == "auto":  # the cluster (Slurm, Open MPI, Kubernetes, Cloud TPU) says
        address = None
    elif address is None:
        raise UserError(f"a run of {count} processes needs a coordinator: set --config.distributed.coordinator_address"
                        "=HOST:PORT (process 0's) or JAX_COORDINATOR_ADDRESS")
    try:
        jax.distributed.initialize(coordinator_address=address, num_processes=count, process_id=process)
    except (ValueError, RuntimeError) as e:
        raise UserError(f"could not join the multi-host run (coordinator {address}, {count} processes, this is "
                        f"process {process}): {str(e).splitlines()[0]}; check distributed.* or the JAX_* "
                        "environment variables") from e
    _initialized = True
    _orbax_barriers_through_the_coordinator()
    return jax.process_count() > 1


def _orbax_barriers_through_the_coordinator() -> None:
    """Orbax's default barrier is a device collective (`sync_global_devices`) that its
    asynchronous-save thread runs while the main thread runs train steps, whose gradients
    are all-reduced: on a loaded machine the two interleave differently on each process
    and the processes deadlock (seen on CPU with Gloo). The coordination service's
    barriers (Orbax's `experimental_orbax_use_distributed_barrier`) never touch the devices."""
    from absl import flags
    import orbax.checkpoint  # noqa: F401  (defines the flag)

    flag = flags.FLAGS["experimental_orbax_use_distributed_barrier"]
    flag.value, flag.present = True, 1
