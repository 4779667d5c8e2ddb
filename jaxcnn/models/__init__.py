"""The model zoo: a registry of Flax linen modules by name.

    model = jaxcnn.models.create('simple_cnn', num_classes=10)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), train=False)
    logits = model.apply(variables, images, train=False)

Every model takes NHWC input and `train: bool`, returns logits (no final
activation; the head's loss applies it), and has Keras' `include_top` and `pooling`
options and `dtype`, `param_dtype` and `dropout_rate` fields (jaxcnn/models/base.py).
BatchNorm statistics live in the `batch_stats` collection. Feature maps are sown in the
`intermediates` collection as `<block>_act` (the block's output after its activation):
`model.apply(v, x, mutable=['intermediates'])`.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_DESIGN: dict[str, tuple[tuple[int, int, int], int]] = {}  # name -> (input shape, classes)


def register(name: str, factory: Callable[..., nn.Module] | None = None,
             input_shape: tuple[int, int, int] = (224, 224, 3), num_classes: int = 1000):
    """Registers `factory(num_classes=..., **kw) -> nn.Module` under `name`, with the
    (H, W, C) input and the number of classes it was designed for (ImageNet's by default).

    Usable as `register('x', partial(Family, ...))` or as a class decorator.
    """
    def add(f):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = f
        _DESIGN[name] = (tuple(input_shape), num_classes)
        return f
    return add(factory) if factory is not None else add


def names() -> list[str]:
    """All registered model names."""
    return sorted(_REGISTRY)


def input_shape(name: str) -> tuple[int, int, int]:
    """The (H, W, C) input model `name` was designed for, e.g. (299, 299, 3) for Xception."""
    _check_name(name)
    return _DESIGN[name][0]


def default_num_classes(name: str) -> int:
    """The classes model `name` was designed for: 1000 (ImageNet), 10 for the CIFAR and MNIST models."""
    _check_name(name)
    return _DESIGN[name][1]


def _check_name(name: str) -> None:
    from jaxcnn.errors import UserError
    if name not in _REGISTRY:
        import difflib
        close = difflib.get_close_matches(name, names(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"unknown model '{name}'{hint}; `jaxcnn models` lists them: {', '.join(names())}")


def create(name: str, num_classes: int | None = None, **kwargs) -> nn.Module:
    """Builds the registered model `name` with `num_classes` outputs (None: the classes
    it was designed for, `default_num_classes(name)`).

    Keras' options: `include_top`, `pooling` (None, 'avg', 'max'), and `dtype`,
    `param_dtype`, `dropout_rate`; the rest are the family's options (its docstring).
    """
    from jaxcnn.errors import UserError
    _check_name(name)
    if num_classes is None:
        num_classes = default_num_classes(name)
    try:
        model = _REGISTRY[name](num_classes=num_classes, **kwargs)
    except TypeError as e:
        raise UserError(f"model '{name}' does not take these options {sorted(kwargs)}: {e}") from e
    if hasattr(model, "check_options"):  # bad values fail here, not deep inside a trace
        model.check_options()
    return model


# Importing the family modules fills the registry.
from jaxcnn.models import (  # noqa: E402,F401
    alexnet, cifar_resnet, densenet, efficientnet, inception, lenet, mlp, mobilenet, nasnet, resnet, simple_cnn,
    vgg, xception)
