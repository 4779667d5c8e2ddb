"""The train state: a pytree of everything a step changes."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state


class TrainState(train_state.TrainState):
    """Flax's TrainState (step, params, opt_state, apply_fn, tx) plus BatchNorm statistics."""
    batch_stats: Any = None

    def variables(self, params=None) -> dict:
        """The variables dict for `apply_fn` (params, and batch_stats when the model has them)."""
        variables = {"params": self.params if params is None else params}
        if self.batch_stats:
            variables["batch_stats"] = self.batch_stats
        return variables


def create(model, tx: optax.GradientTransformation, image_shape, rng: jax.Array, sharding=None) -> TrainState:
    """Initializes the model on a (1, *image_shape) input; jitted, placed with `sharding`."""
    def init(rng):
        variables = model.init({"params": rng, "dropout": rng}, jnp.zeros((1, *image_shape), jnp.float32),
                               train=False)
        return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                                 batch_stats=variables.get("batch_stats", {}))
    return jax.jit(init, out_shardings=sharding)(rng)


def count_params(params) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))
