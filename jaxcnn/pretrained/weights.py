"""Filling a zoo model's variables from another framework's weights, with the checks
every importer shares: each source tensor lands on exactly one variable of the same
shape, and every variable of the model is filled.

An importer turns its source into `Entry`s (our layer, collection, variable, array, and the
source's name for error messages); `assign` does the rest.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from jaxcnn.errors import UserError


class WeightMismatch(UserError):
    """Weights that do not fit the architecture (one line: the first mismatched layer)."""


@dataclasses.dataclass
class Entry:
    layer: str  # our top-level layer name, e.g. 'conv2_block1_1_conv'
    collection: str  # 'params' or 'batch_stats'
    name: str  # our variable name: kernel, bias, scale, mean, var, ...
    value: np.ndarray
    source: str  # the source's name of the tensor, for messages


def template(model, input_shape) -> dict:
    """The model's variables as shapes (nothing computed)."""
    import jax.numpy as jnp
    return jax.eval_shape(lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(0)},
                                             jnp.zeros((1, *input_shape), jnp.float32), train=False))


def targets(variables) -> dict[tuple[str, str, str], tuple]:
    """{(collection, layer, variable): shape} of a model's (top-level named) variables."""
    out = {}
    for collection in ("params", "batch_stats"):
        for layer, leaves in variables.get(collection, {}).items():
            for name, leaf in leaves.items():
                out[(collection, layer, name)] = tuple(leaf.shape)
    return out


def assign(entries: list[Entry], variables, arch: str, what: str) -> dict:
    """The variables of `arch` (shapes in `variables`) holding `entries`; raises
    WeightMismatch at the first tensor that has no place or the wrong shape, or for a
    variable no tensor fills."""
    wanted = targets(variables)
    filled: dict[tuple[str, str, str], np.ndarray] = {}
    for e in entries:
        key = (e.collection, e.layer, e.name)
        if key not in wanted:
            raise WeightMismatch(f"{what} has {e.source} (as {e.layer}/{e.name}), which {arch} lacks; "
                                 f"pass weights of {arch} or the --arch they belong to")
        if tuple(e.value.shape) != wanted[key]:
            raise WeightMismatch(f"{what} does not fit {arch}: layer {e.layer} ({e.source}) has shape "
                                 f"{tuple(e.value.shape)} in the weights and {wanted[key]} in {arch}; "
                                 "pass weights of this architecture")
        if key in filled:
            raise WeightMismatch(f"{what} sets {e.layer}/{e.name} twice (second time from {e.source})")
        filled[key] = np.asarray(e.value, np.float32)
    missing = [key for key in wanted if key not in filled]
    if missing:
        collection, layer, name = missing[0]
        raise WeightMismatch(f"{what} does not fit {arch}: it has no weights for layer {layer} ({name}, shape "
                             f"{wanted[missing[0]]}) and {len(missing) - 1} more variables; "
                             "pass weights of this architecture")
    out: dict = {}
    for (collection, layer, name), value in filled.items():
        out.setdefault(collection, {}).setdefault(layer, {})[name] = value
    # Keep the model's own order of layers (creation order), as Flax's init returns it.
    return {collection: {layer: out[collection][layer] for layer in variables[collection]}
            for collection in variables if collection in out}
