"""Orbax checkpoints of the train state plus a JSON record of the run's progress."""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    """Saves `{'state': TrainState pytree, 'meta': json}` per global step in `directory`.

    `meta` holds what resuming needs besides arrays: completed epochs and the history.
    Orbax writes each step to a temporary folder and renames it when complete, so a
    killed save never leaves a step that looks finished.
    """

    def __init__(self, directory: str, max_to_keep: int = 2):
        self.directory = os.path.abspath(directory)
        self._manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The best step of a best-k directory (ModelCheckpoint's `best_checkpoints/`).

        Ranked by the Orbax metrics saved with each step, under the `monitor` and `mode`
        ('min' or 'max') that the steps' meta records; without them, the latest step (with
        `save_best_only`, each save improved on every earlier one).
        """
        steps = self._manager.all_steps()
        if not steps:
            return None
        meta = self._manager.restore(max(steps), args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        monitor, mode = meta.get("monitor"), meta.get("mode")
        values = {step: (self._manager.metrics(step) or {}).get(monitor) for step in steps} if monitor else {}
        values = {step: value for step, value in values.items() if value is not None}
        if not values or mode not in ("min", "max"):
            return self._manager.latest_step()
        sign = 1 if mode == "min" else -1
        return min(values, key=lambda step: (sign * values[step], step))  # ties: the earliest step

    def save(self, step: int, state, meta: dict) -> None:
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))

    def restore(self, state_like, step: int | None = None):
        """Restores into the structure, shapes and shardings of `state_like`; returns (state, meta)."""
        step = self.latest_step() if step is None else step
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_like)
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
        return restored["state"], restored["meta"]

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
