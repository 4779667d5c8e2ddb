"""The run's working directory: checks, atomic writes, and what makes it resumable."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time

from jaxcnn.errors import UserError

# Keys that may change when a run is resumed (everything else must match the run's config):
# they change how long it runs, what it prints and logs, how it checkpoints, and where its
# processes meet; a key ending in '.' names a group.
RESUMABLE_CHANGES = ("epochs", "verbose", "log_every_steps", "checkpoint_every_steps", "checkpoint_max_to_keep",
                     "preempted_exit_code", "callbacks.tensorboard.", "distributed.")


def check(path: str) -> bool:
    """Validates `path` as a workdir; returns True when it already holds a run."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"workdir {path} is a file, not a directory; pass a new or existing directory to --workdir")
    return os.path.isfile(os.path.join(path, "config.json"))


def has_checkpoint(path: str) -> bool:
    """True when `path/checkpoints` holds a finished Orbax step (folders named by step)."""
    directory = os.path.join(path, "checkpoints")
    return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def check_run(path: str, config) -> bool:
    """Validates `path` for a run of `config`; True when it holds that run (to resume)."""
    if not check(path):
        return False
    from jaxcnn import config as config_lib
    check_resume(config_lib.from_json_file(os.path.join(path, "config.json")), config)
    return True


def check_resume(stored, requested) -> None:
    """A resumed run must keep its config, except `RESUMABLE_CHANGES`."""
    old, new = _flat(stored.to_dict()), _flat(requested.to_dict())
    diffs = [k for k in sorted(set(old) | set(new))
             if not _resumable(k) and _normal(old.get(k)) != _normal(new.get(k))]
    if diffs:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diffs[:3])
        allowed = ", ".join(k + "*" if k.endswith(".") else k for k in RESUMABLE_CHANGES)
        raise UserError(f"the workdir holds a run with a different config ({shown}); "
                        f"resume it unchanged (only {allowed} may change) or use a new --workdir")


def _resumable(key: str) -> bool:
    return any(key == allowed or (allowed.endswith(".") and key.startswith(allowed)) for allowed in RESUMABLE_CHANGES)


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _normal(value):
    return json.loads(json.dumps(value, default=list))


def write_json(path: str, obj) -> None:
    """Writes JSON atomically (temporary file, then rename): never a half-written file."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj, indent=2, sort_keys=True))
        f.write("\n")
    os.replace(tmp, path)


# --- one run at a time ------------------------------------------------------------------

LOCK_FILE = "lock"
_held: dict[str, list] = {}  # realpath -> [open lock file, depth]: re-entrant within a process


class WorkdirLocked(UserError):
    """Another live process is running in the workdir."""


@contextlib.contextmanager
def lock(path: str):
    """Holds `path/lock` for the run: a second run on the same workdir refuses with one line.

    The lock is a kernel `flock` on the file, which records the holder's pid, host and start
    time for the message. The kernel drops the lock when its process ends, even by SIGKILL, so
    the lock of a dead run is stale by construction: the next run takes it over, atomically,
    and writes its own pid. Re-entrant within a process (fit() and Trainer.fit() both hold it).
    """
    key = os.path.realpath(path)
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    os.makedirs(path, exist_ok=True)
    f = open(os.path.join(path, LOCK_FILE), "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "a process that has not written its pid yet"
        f.close()
        raise WorkdirLocked(f"workdir {path} is in use by another run ({holder}); wait for it to end or stop "
                            "it, or pass another --workdir") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    f.flush()
    _held[key] = [f, 1]
    try:
        yield
    finally:
        del _held[key]
        f.close()  # releases the flock; the file stays, naming the last holder
