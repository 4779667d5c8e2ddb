"""The model zoo: a registry of Flax linen modules by name.

    model = jaxcnn.models.create('simple_cnn', num_classes=10)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), train=False)
    logits = model.apply(variables, images, train=False)

Every model takes NHWC input and `train: bool`, returns logits (no final
activation; the head's loss applies it), and has `dtype` and `param_dtype` fields.
Feature maps are sown in the `intermediates` collection as `<layer>_act` (the layer's
output after its activation): `model.apply(v, x, mutable=['intermediates'])`.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str, factory: Callable[..., nn.Module] | None = None):
    """Registers `factory(num_classes=..., **kw) -> nn.Module` under `name`.

    Usable as `register('x', partial(Family, ...))` or as a class decorator.
    """
    def add(f):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = f
        return f
    return add(factory) if factory is not None else add


def names() -> list[str]:
    """All registered model names."""
    return sorted(_REGISTRY)


def create(name: str, num_classes: int = 1000, **kwargs) -> nn.Module:
    """Builds the registered model `name` with `num_classes` outputs."""
    from jaxcnn.errors import UserError
    if name not in _REGISTRY:
        import difflib
        close = difflib.get_close_matches(name, names(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"unknown model '{name}'{hint}; `jaxcnn models` lists them: {', '.join(names())}")
    try:
        return _REGISTRY[name](num_classes=num_classes, **kwargs)
    except TypeError as e:
        raise UserError(f"model '{name}' does not take these options {sorted(kwargs)}: {e}") from e


# Importing the family modules fills the registry.
from jaxcnn.models import mlp, simple_cnn  # noqa: E402,F401
