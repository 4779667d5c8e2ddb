"""The train state: a pytree of everything a step changes."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state


class TrainState(train_state.TrainState):
    """Flax's TrainState (step, params, opt_state, apply_fn, tx) plus BatchNorm statistics
    and, when enabled, the exponential moving average of the params."""
    batch_stats: Any = None
    ema_params: Any = None

    def variables(self, params=None) -> dict:
        """The variables dict for `apply_fn`: `params` (by default the params to evaluate,
        see `eval_params`), and batch_stats when the model has them."""
        variables = {"params": self.eval_params if params is None else params}
        if self.batch_stats:
            variables["batch_stats"] = self.batch_stats
        return variables

    @property
    def eval_params(self):
        """The params to evaluate: their moving average when one is kept (as timm and Keras'
        use_ema do), else the params."""
        return self.params if self.ema_params is None else self.ema_params

    def weights(self) -> dict:
        """Everything a model's `get_weights()` would hold (not the optimizer state)."""
        return {"params": self.params, "batch_stats": self.batch_stats, "ema_params": self.ema_params}


def create(model, tx: optax.GradientTransformation, image_shape, rng: jax.Array, sharding=None,
           ema: bool = False) -> TrainState:
    """Initializes the model on a (1, *image_shape) input; jitted, placed with `sharding`."""
    def init(rng):
        variables = model.init({"params": rng, "dropout": rng}, jnp.zeros((1, *image_shape), jnp.float32),
                               train=False)
        params = variables["params"]
        return TrainState.create(apply_fn=model.apply, params=params, tx=tx,
                                 batch_stats=variables.get("batch_stats", {}),
                                 ema_params=jax.tree.map(jnp.copy, params) if ema else None)
    return jax.jit(init, out_shardings=sharding)(rng)


def abstract(model, image_shape) -> dict:
    """The variables' shapes and dtypes ({'params': ..., 'batch_stats': ...}), without
    computing them (to resolve layer patterns before the state exists)."""
    return jax.eval_shape(lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(0)},
                                             jnp.zeros((1, *image_shape), jnp.float32), train=False))


def count_params(params) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))
