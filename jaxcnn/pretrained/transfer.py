"""Transfer learning: a new run starts from a pretrained workdir's weights (`init_from`).

Every layer of the new model takes the pretrained layer of the same name; the `head` is
kept only when its shape is the same (same classes), else the new run's freshly initialized
head stays. A base layer that is missing or has another shape is an error.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from jaxcnn.errors import UserError


def load_weights(workdir: str) -> dict:
    """{'params': ..., 'batch_stats': ...} of a workdir's latest checkpoint (any model)."""
    import orbax.checkpoint as ocp

    from jaxcnn.train import checkpoint as checkpoint_lib
    if not os.path.isfile(os.path.join(workdir, "config.json")):
        raise UserError(f"init_from={workdir} is not a workdir (no config.json); pass a `jaxcnn convert --out` "
                        "or a trained run's directory")
    checkpointer = checkpoint_lib.open_checkpoints(workdir, "latest")
    step = checkpointer.latest_step()
    checkpointer.close()
    try:
        state = ocp.StandardCheckpointer().restore(
            os.path.abspath(os.path.join(workdir, checkpoint_lib.LATEST_DIR, str(step), "state")))
    except Exception as e:
        raise UserError(f"cannot read the checkpoint of init_from={workdir} ({str(e).splitlines()[0][:200]}); "
                        "convert or train it again") from None
    return {"params": state.get("params") or {}, "batch_stats": state.get("batch_stats") or {}}


def merge(new: dict, pretrained: dict, source: str) -> tuple[dict, list[str]]:
    """`new` (a collection: {layer: {var: array}}, arrays or shapes) with every layer taken
    from `pretrained`, as numpy arrays; returns (merged, layers kept as initialized: the head
    when its shape differs)."""
    kept = []

    def take(layer: str, ours: dict, theirs: dict | None):
        if theirs is None:
            if layer == "head":
                kept.append(layer)
                return ours
            raise UserError(f"init_from={source} has no layer {layer}; start from weights of the same architecture")
        out = {}
        for name, value in ours.items():
            other = theirs.get(name)
            if other is None or tuple(np.shape(other)) != tuple(np.shape(value)):
                if layer == "head":
                    kept.append(layer)
                    return ours
                raise UserError(f"init_from={source}: layer {layer} has {name} of shape "
                                f"{None if other is None else tuple(np.shape(other))} there and {tuple(value.shape)} "
                                "here; start from weights of the same architecture and options")
            out[name] = np.asarray(other, value.dtype)
        return out

    merged = {layer: take(layer, ours, pretrained.get(layer)) for layer, ours in new.items()}
    return merged, sorted(set(kept))


def init_state(state, source: str):
    """The TrainState `state` with its params and BatchNorm statistics from workdir `source`
    (its moving average too, when kept). Returns (state, kept layers)."""
    weights = load_weights(source)
    params, kept = merge(state.params, weights["params"], source)
    stats, _ = merge(state.batch_stats or {}, weights["batch_stats"], source) if state.batch_stats else ({}, [])
    place = lambda tree, like: jax.device_put(tree, jax.tree.map(lambda x: x.sharding, like))  # noqa: E731
    state = state.replace(params=place(params, state.params),
                          batch_stats=place(stats, state.batch_stats) if state.batch_stats else state.batch_stats)
    if state.ema_params is not None:
        state = state.replace(ema_params=jax.tree.map(lambda x: x.copy(), params))
    return state, kept
