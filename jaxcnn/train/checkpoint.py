"""Orbax checkpoints of a run, and the one place that reads them back.

    workdir/checkpoints/<step>/        the latest `checkpoint_max_to_keep` steps (resuming)
    workdir/best_checkpoints/<step>/   ModelCheckpoint's best `max_to_keep` by its monitored
                                       value (Orbax best_fn/best_mode; the value is the step's
                                       Orbax metrics, the monitor and mode the root metadata)
    workdir/corrupt_checkpoints/<step>/  steps that failed to restore, moved aside

Items of a step: `state` (the TrainState pytree), `meta` (JSON: epoch, batch, history,
callback states, fingerprints), and in latest checkpoints `running_metrics` (the running metrics
of the epoch in progress) and `callback_<name>` for each callback that keeps arrays.

Orbax writes a step to a temporary folder and renames it when complete, so a killed save
never leaves a step that looks finished. A finished step damaged afterwards can still
restore without an error (a chunk overwritten in place reads back as other numbers), so
each array item's fingerprint is stored in `meta` and checked after restoring: a step
that fails either way is reported, moved aside and the previous one used.

    state, meta = checkpoint.restore(workdir, trainer.state_template, which="best")
"""

from __future__ import annotations

import glob
import logging
import os
import resource
import shutil
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from jaxcnn.errors import UserError

LATEST_DIR = "checkpoints"
BEST_DIR = "best_checkpoints"
CORRUPT_DIR = "corrupt_checkpoints"
DELETING_DIR = "deleting"  # inside a checkpoint directory: old steps on their way out


class CorruptCheckpoint(Exception):
    """A checkpoint step that cannot be restored intact."""


class CheckpointWriteError(UserError):
    """The storage refused a checkpoint (a full disk, a quota, a file-size limit)."""


# What the OS and TensorStore say when storage refuses a write (ENOSPC, EDQUOT, EFBIG, EROFS).
_STORAGE_FULL = ("No space left on device", "Disk quota exceeded", "File too large", "Read-only file system")


def _storage_reason(error: BaseException) -> str | None:
    """The storage failure behind `error` (or its causes), else None."""
    while error is not None:
        text = str(error)
        for reason in _STORAGE_FULL:
            if reason in text:
                return reason
        if isinstance(error, OSError) and error.errno is not None:
            return os.strerror(error.errno)
        error = error.__cause__ or error.__context__
    return None


class _QuietStorageErrors(logging.Filter):
    """Orbax's writer threads log each failed write with its traceback before the error reaches
    the run, which reports it in one line (CheckpointWriteError): those logs are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        if record.exc_info and record.exc_info[1] is not None and _storage_reason(record.exc_info[1]):
            return False
        return not any(reason in record.getMessage() for reason in _STORAGE_FULL)


logging.getLogger("absl").addFilter(_QuietStorageErrors())


# --- fingerprints -------------------------------------------------------------------

def _as_uint32(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    width = x.dtype.itemsize
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[width]
    return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


@jax.jit
def _fingerprint(tree) -> jax.Array:
    """A position-weighted sum of the bits of every leaf, mod 2**32 (integer sums are exact
    in any order, so sharded and unsharded arrays agree)."""
    total = jnp.uint32(0)
    for i, leaf in enumerate(jax.tree.leaves(tree)):
        bits = _as_uint32(jnp.asarray(leaf)).ravel()
        weights = jnp.arange(bits.size, dtype=jnp.uint32) * jnp.uint32(2654435761) + jnp.uint32(2 * i + 1)
        total = total * jnp.uint32(1000003) + jnp.sum(bits * weights, dtype=jnp.uint32)
    return total


def fingerprint(tree) -> str:
    return f"{int(_fingerprint(tree)):08x}"


# --- managers ---------------------------------------------------------------------------

def _report(message: str) -> None:
    if jax.process_index() == 0:
        print(f"jaxcnn: warning: {message}", file=sys.stderr, flush=True)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200] if text else ''}"


class Checkpointer:
    """The steps of one checkpoint directory: `{item: pytree}` plus a JSON `meta` per step."""

    def __init__(self, directory: str, max_to_keep: int | None = 2, best_fn: Callable | None = None,
                 best_mode: str = "min", metadata: dict | None = None, create: bool = True):
        self.directory = os.path.abspath(directory)
        self.best_fn, self.best_mode = best_fn, best_mode
        self._failed = False  # a write failed (CheckpointWriteError): nothing more to wait for
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=create, best_fn=best_fn, best_mode=best_mode,
            keep_checkpoints_without_metrics=best_fn is None,
            # A writer removes the temporary folders of saves that a killed run left unfinished
            # (a reader must not: they may be a live run's save in progress).
            cleanup_tmp_directories=create,
            # Old steps are renamed out of the way (atomic) and deleted from there: a kill while
            # deleting never leaves a half-deleted step that looks like a checkpoint.
            todelete_subdir=DELETING_DIR if create else None,
            # Two managers (latest and best) save concurrently in a multi-host run: their
            # cross-process barriers need distinct names.
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix=os.path.basename(self.directory)))
        self._manager = ocp.CheckpointManager(self.directory, options=options, metadata=metadata)
        if create:
            self._purge_deleted()

    def _purge_deleted(self) -> None:
        """Deletes the old steps that Orbax moved to DELETING_DIR (a concurrent move may leave
        some for the next purge)."""
        if jax.process_index() == 0:
            shutil.rmtree(os.path.join(self.directory, DELETING_DIR), ignore_errors=True)

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def ranked_steps(self) -> list[int]:
        """Steps in the order to use them: newest first, or with `best_fn` best first (steps
        without a metric last)."""
        steps = sorted(self.all_steps(), reverse=True)
        if self.best_fn is None:
            return steps
        metrics = {step: self._manager.metrics(step) for step in steps}
        scored = [step for step in steps if metrics[step] is not None]
        scored.sort(key=lambda step: self.best_fn(metrics[step]), reverse=self.best_mode == "max")
        return scored + [step for step in steps if metrics[step] is None]

    def custom_metadata(self) -> dict:
        return dict(self._manager.metadata().custom_metadata or {})

    def save(self, step: int, items: dict, meta: dict, metrics: dict | None = None) -> None:
        """Saves `items` (pytrees of arrays) and `meta` (JSON) as `step` (asynchronously:
        the arrays are copied off the device before this returns)."""
        meta = {**meta, "fingerprints": {name: fingerprint(tree) for name, tree in items.items()}}
        args = {name: ocp.args.StandardSave(tree) for name, tree in items.items()}
        self._check_room(items)
        try:
            self._manager.save(step, args=ocp.args.Composite(meta=ocp.args.JsonSave(meta), **args), metrics=metrics)
        except Exception as e:
            self._write_failed(e)
        self._purge_deleted()  # the previous save, and the deletions it caused, are finished

    def _check_room(self, items: dict) -> None:
        """Refuses a save that cannot fit (free space, file-size limit) before writing any of it:
        a write that fails midway leaves Orbax's writer threads failing one by one, and they print."""
        sizes = [int(getattr(leaf, "nbytes", 0)) for tree in items.values() for leaf in jax.tree.leaves(tree)]
        # On disk a step takes its arrays plus metadata files, each rounded up to blocks: a margin.
        needed, largest = int(sum(sizes) * 1.25) + 2**18, max(sizes, default=0)
        try:
            stat = os.statvfs(self.directory)
        except OSError:  # not created yet on this host: Orbax will say what is wrong
            return
        free = stat.f_bavail * stat.f_frsize
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if needed > free:
            self._refuse(f"No space left on device ({needed:,} bytes needed, {free:,} free)")
        if limit != resource.RLIM_INFINITY and largest > limit:
            self._refuse(f"File too large (an array of {largest:,} bytes, a file-size limit of {limit:,})")

    def _refuse(self, reason: str, cause: Exception | None = None):
        self._failed = True
        try:  # the save in flight, if any, is finished (or failed) before the steps are named
            self._manager.wait_until_finished()
        except Exception:
            pass
        kept = sorted(int(name) for name in os.listdir(self.directory) if name.isdigit())
        raise CheckpointWriteError(
            f"cannot write a checkpoint in {self.directory}: {reason}; free space on that disk (or raise the "
            f"quota or file-size limit), then run the same command again to resume from the intact "
            f"{'step ' + str(kept[-1]) if kept else 'start (no checkpoint was finished)'}") from cause

    def _write_failed(self, error: Exception):
        """A save failed (raised now, or by an asynchronous save, at the next save or wait): a
        storage failure removes the unfinished step and becomes a CheckpointWriteError; the
        finished steps are untouched. Anything else is re-raised."""
        reason = _storage_reason(error)
        if reason is None:
            raise error
        try:
            self._manager.wait_until_finished()
        except Exception:  # the same failure, from the writer threads
            pass
        if jax.process_index() == 0:
            for unfinished in glob.glob(os.path.join(glob.escape(self.directory), "*.orbax-checkpoint-tmp*")):
                shutil.rmtree(unfinished, ignore_errors=True)
        self._refuse(reason, cause=error)

    def items(self, step: int) -> set[str]:
        """The array items `step` holds (every item but `meta`)."""
        path = os.path.join(self.directory, str(step))
        return {name for name in os.listdir(path) if name != "meta" and os.path.isdir(os.path.join(path, name))}

    def restore(self, state_like, step: int | None = None):
        """Restores a TrainState into the structure and shardings of `state_like` (or of
        `state_like(meta)`, e.g. `Trainer.state_template`): `step`, or the step to use first
        (newest, or best) that is intact. Returns (state, meta)."""
        steps = self.ranked_steps() if step is None else [step]
        templates = (lambda meta: {"state": state_like(meta)}) if callable(state_like) else {"state": state_like}
        _, restored = self.restore_first_intact(steps, templates, move_aside=False)
        return restored["state"], restored["meta"]

    def restore_items(self, step: int, templates: dict | Callable[[dict], dict]) -> dict:
        """Restores `step` into the structures, shapes and shardings of `templates`
        ({item: pytree}; items the step lacks are skipped), and checks the fingerprints.
        `templates` may be a function of the step's meta (e.g. a run's phase decides the
        structure of its optimizer state). Returns {item: pytree, 'meta': dict}; raises
        CorruptCheckpoint."""
        present = self.items(step)
        if callable(templates):  # it may raise CorruptCheckpoint for a meta it cannot use
            try:  # the meta item alone (a Composite restore of it would warn about every other item)
                with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as reader:
                    meta = reader.restore(os.path.join(self.directory, str(step), "meta"))
            except Exception as e:
                raise CorruptCheckpoint(_first_line(e)) from e
            templates = templates(meta or {})
        try:
            wanted = {name: t for name, t in templates.items() if name in present and t is not None}
            args = {name: ocp.args.StandardRestore(jax.tree.map(ocp.utils.to_shape_dtype_struct, t))
                    for name, t in wanted.items()}
            restored = dict(self._manager.restore(step, args=ocp.args.Composite(
                meta=ocp.args.JsonRestore(), **args)))
        except Exception as e:  # Orbax, TensorStore and JSON errors alike: the step is unreadable
            raise CorruptCheckpoint(_first_line(e)) from e
        stored = (restored["meta"] or {}).get("fingerprints", {})
        missing = sorted(name for name in stored if name in templates and name not in present)
        if missing:  # saved with the step, since removed
            raise CorruptCheckpoint(f"its '{missing[0]}' item is missing")
        for name in wanted:
            if name in stored and fingerprint(restored[name]) != stored[name]:
                raise CorruptCheckpoint(f"the '{name}' arrays do not match their fingerprint")
        return restored

    def restore_first_intact(self, steps: list[int], templates: dict | Callable[[dict], dict],
                             move_aside: bool = True) -> tuple[int, dict]:
        """Restores the first intact step of `steps`. The corrupt ones before it are
        reported and, with `move_aside`, moved to workdir/corrupt_checkpoints/ (so that the
        redone steps can be saved again). When no step is intact nothing is moved (the
        cause may be this code rather than the files) and CorruptCheckpoint is raised."""
        failures = []
        for step in steps:
            try:
                restored = self.restore_items(step, templates)
            except CorruptCheckpoint as e:
                failures.append((step, e))
                continue
            for bad, error in failures:
                where = os.path.join(self.directory, str(bad))
                moved = f"; moved it to {self._move_aside(bad)}" if move_aside else ""
                _report(f"checkpoint {where} is corrupt ({error}){moved}; using step {step}")
            return step, restored
        raise CorruptCheckpoint("; ".join(f"step {step}: {error}" for step, error in failures) or "no steps")

    def restore_latest(self, templates: dict | Callable[[dict], dict]) -> tuple[int, dict]:
        """The latest intact step (see `restore_first_intact`)."""
        return self.restore_first_intact(sorted(self.all_steps(), reverse=True), templates)

    def _move_aside(self, step: int) -> str:
        target = os.path.join(os.path.dirname(self.directory), CORRUPT_DIR, f"{os.path.basename(self.directory)}-{step}")
        if jax.process_index() == 0:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if os.path.exists(target):
                shutil.rmtree(target)
            shutil.move(os.path.join(self.directory, str(step)), target)
        _sync("jaxcnn_checkpoint_moved_aside")
        self._manager.reload()
        return target

    def delete_after(self, step: int) -> None:
        """Deletes the steps after `step` (saved by a run that was killed and is resumed)."""
        for later in self.all_steps():
            if later > step:
                self._manager.delete(later)

    def wait(self) -> None:
        if self._failed:  # reported already
            return
        try:
            self._manager.wait_until_finished()
        except Exception as e:
            self._write_failed(e)
        self._purge_deleted()

    def close(self) -> None:
        self.wait()
        try:
            self._manager.close()
        except Exception as e:
            if not self._failed:
                self._write_failed(e)


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def best_checkpointer(directory: str, monitor: str, mode: str, max_to_keep: int) -> Checkpointer:
    """The best `max_to_keep` steps by the Orbax metric `monitor` ('min' or 'max' is better)."""
    return Checkpointer(directory, max_to_keep=max_to_keep, best_fn=lambda metrics: metrics[monitor],
                        best_mode=mode, metadata={"monitor": monitor, "mode": mode})


def phase(meta: dict, phases: int) -> int:
    """The phase (0-based) of a run of `phases` phases whose optimizer state the step of `meta`
    holds (0 for a run without phases)."""
    index = meta.get("phase", 0)
    if index not in range(phases):
        raise CorruptCheckpoint(f"its meta names phase {index!r} of a run of {phases} phases")
    return index


# --- reading a workdir's checkpoints ------------------------------------------------------

def directory(workdir: str, which: str = "latest") -> str:
    if which not in ("latest", "best"):
        raise UserError(f"unknown checkpoint {which!r}; use latest or best")
    return os.path.join(workdir, LATEST_DIR if which == "latest" else BEST_DIR)


def open_checkpoints(workdir: str, which: str = "latest") -> Checkpointer:
    """The workdir's latest or best checkpoints, for reading."""
    path = directory(workdir, which)
    if not os.path.isdir(path) or not any(name.isdigit() for name in os.listdir(path)):
        hint = ("train with --config.callbacks.model_checkpoint.enabled=true to keep best checkpoints"
                if which == "best" else "train a run in it first")
        raise UserError(f"no {which} checkpoint in {path}; {hint}")
    if which == "latest":
        return Checkpointer(path, max_to_keep=None, create=False)
    info = Checkpointer(path, max_to_keep=None, create=False).custom_metadata()
    if "monitor" not in info:
        raise UserError(f"{path} does not record which metric ranks its checkpoints; it was not written by "
                        "ModelCheckpoint")
    return Checkpointer(path, max_to_keep=None, create=False, best_fn=lambda m: m[info["monitor"]],
                        best_mode=info["mode"])


def restore(workdir: str, state_like, which: str = "latest", step: int | None = None):
    """Restores a TrainState saved in `workdir` into the structure and shardings of
    `state_like`, or of `state_like(meta)` (a run in phases: `trainer.state_template`, as the
    optimizer state's structure is the step's phase's): the latest or best step (or `step`).
    Returns (state, meta); a corrupt step is reported and the next one used (the previous,
    or the next best)."""
    checkpointer = open_checkpoints(workdir, which)
    try:
        if step is not None and step not in checkpointer.all_steps():
            raise UserError(f"no step {step} in {checkpointer.directory}; it holds {checkpointer.all_steps()}")
        return checkpointer.restore(state_like, step)
    except CorruptCheckpoint as e:
        raise UserError(f"no checkpoint in {checkpointer.directory} can be restored ({e}); retrain the run") from e
    finally:
        checkpointer.close()
