"""A model's layer table, weight counts and forward FLOPs, without running it.

    jaxcnn models summary resnet50 --input 224x224x3

Shapes and counts come from `jax.eval_shape` (nothing is computed or allocated); FLOPs
from XLA's cost analysis of the lowered forward pass (no compilation).
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn import onednn
from jaxcnn.errors import UserError


@dataclasses.dataclass
class Layer:
    path: tuple[str, ...]
    kind: str
    output_shape: tuple | None = None
    weights: int = 0
    module: nn.Module | None = dataclasses.field(default=None, repr=False)  # its settings, e.g. a BatchNorm's epsilon


@dataclasses.dataclass
class Summary:
    name: str
    input_shape: tuple[int, ...]
    layers: list[Layer]
    params: int        # trainable (the `params` collection)
    state: int         # not trained (`batch_stats`: BatchNorm and input statistics)
    flops: float | None

    @property
    def total(self) -> int:
        """Every weight, as Keras' `count_params()` counts them."""
        return self.params + self.state

    def format(self) -> str:
        rows = [("/".join(layer.path) + f" ({layer.kind})", _shape(layer.output_shape), f"{layer.weights:,}")
                for layer in self.layers]
        header = ("Layer (type)", "Output shape", "Weights")
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
        line = lambda r: f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}"  # noqa: E731
        rule = "-" * max(len(line(r)) for r in [header, *rows])
        flops = _flops(self.flops) if self.flops is not None else "unavailable on this backend"
        return "\n".join([
            f"Model: {self.name}, input {'x'.join(map(str, self.input_shape))}", rule, line(header), rule,
            *map(line, rows), rule,
            f"Total weights:        {self.total:>14,}  ({self.total * 4 / 2**20:,.2f} MiB as float32)",
            f"Trainable parameters: {self.params:>14,}",
            f"Non-trainable:        {self.state:>14,}  (batch_stats: BatchNorm and input statistics)",
            f"Forward FLOPs of one example (XLA cost analysis, a multiply-add is 2): {flops}",
        ])


def _flops(flops: float) -> str:
    return f"{flops / 1e9:,.2f} GFLOPs" if flops >= 1e9 else f"{flops / 1e6:,.1f} MFLOPs"


def _shape(shape) -> str:
    if shape is None:
        return ""
    if isinstance(shape, tuple) and shape and isinstance(shape[0], tuple):
        return ", ".join(_shape(s) for s in shape)
    return "(None, " + ", ".join(map(str, shape[1:])) + ")"


def _size(tree) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(tree))


def _subtree(tree, path):
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return {}
        tree = tree[key]
    return tree


def trace_layers(model: nn.Module, input_shape: tuple[int, ...], name: str = "") -> tuple[list[Layer], dict]:
    """The model's layers (leaf modules, in the order they are called) with output shapes
    and weight counts, and its variables as shapes (`jax.eval_shape`: nothing computed)."""
    calls: list[Layer] = []

    def record(next_fun, args, kwargs, context):
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        layer = Layer(tuple(context.module.path), type(context.module).__name__, module=context.module)
        calls.append(layer)  # at the call's start, so the table reads in call order
        out = next_fun(*args, **kwargs)
        layer.output_shape = jax.tree.map(lambda a: tuple(a.shape), out, is_leaf=lambda a: hasattr(a, "shape"))
        return out

    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    try:
        with nn.intercept_methods(record):
            variables = dict(jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x))
    except (TypeError, ValueError) as e:
        raise UserError(f"{name or type(model).__name__} cannot take a {'x'.join(map(str, input_shape))} input: "
                        f"{str(e).splitlines()[0]}; pass another --input") from e
    params, state = variables.get("params", {}), variables.get("batch_stats", {})
    paths = [c.path for c in calls]
    layers = []
    for call in calls:
        is_leaf = call.path and not any(p[:len(call.path)] == call.path and p != call.path for p in paths)
        if is_leaf and all(l.path != call.path for l in layers):  # a layer applied twice is listed once
            call.weights = _size(_subtree(params, call.path)) + _size(_subtree(state, call.path))
            layers.append(call)
    return layers, variables


def _largest_array(jaxpr) -> int:
    """Bytes of the largest array an equation of `jaxpr` (or of a jaxpr inside one) computes."""
    largest = 0
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            largest = max(largest, math.prod(var.aval.shape) * var.aval.dtype.itemsize)
        for param in eqn.params.values():
            for inner in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(inner, "jaxpr", inner)  # a ClosedJaxpr's Jaxpr
                if hasattr(inner, "eqns"):
                    largest = max(largest, _largest_array(inner))
    return largest


def largest_forward_array(model: nn.Module, variables: dict, input_shape: tuple[int, ...], batch: int) -> int:
    """Bytes of the largest array the model's inference forward pass computes for a float32
    batch of `batch` inputs (traced with `variables`' shapes: nothing is computed)."""
    x = jax.ShapeDtypeStruct((batch, *input_shape), jnp.float32)
    variables = {k: v for k, v in variables.items() if k in ("params", "batch_stats")}
    return _largest_array(jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, x).jaxpr)


def summarize(model: nn.Module, input_shape: tuple[int, ...], name: str = "") -> Summary:
    """The layer table, the totals, and the forward FLOPs of one example."""
    layers, variables = trace_layers(model, input_shape, name)
    forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
    try:
        with onednn.switched_off():  # XLA counts its own convolutions' FLOPs, not oneDNN's (custom calls)
            cost = forward.lower(variables, jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)).cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        flops = float(cost["flops"]) if cost and "flops" in cost else None
    except NotImplementedError:
        flops = None
    params, state = variables.get("params", {}), variables.get("batch_stats", {})
    return Summary(name or type(model).__name__, tuple(input_shape), layers, _size(params), _size(state), flops)


def parse_input_shape(text: str) -> tuple[int, int, int]:
    """'224x224x3' -> (224, 224, 3)."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise UserError(f"--input {text!r} is not HxWxC (e.g. --input 224x224x3)")
    return tuple(int(p) for p in parts)
