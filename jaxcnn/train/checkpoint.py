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
