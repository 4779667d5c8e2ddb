"""Keras weights -> zoo variables, by layer name.

The zoo's layers carry keras.applications' names, so a Keras layer maps onto the layer of
the same name; `predictions` is `head`; the layers Keras leaves unnamed (InceptionV3's
`conv2d`, `conv2d_1`, ..., `batch_normalization_<i>`) map in creation order onto ours of
the same kind in call order. Kernels need no transposition: Keras' Conv2D (H, W, in,
out), DepthwiseConv2D (H, W, in, multiplier), SeparableConv2D and Dense kernels are laid
out as jaxcnn's. BatchNorm's gamma/beta/moving_mean/moving_variance are scale/bias and the
batch_stats mean/var; Normalization's mean/variance/count are batch_stats.

Sources: a keras.Model (any backend), a `.keras` file (loaded with Keras), or an `.h5`
file in Keras' HDF5 layout (read with h5py, no Keras needed): a whole model saved by
`model.save('x.h5')` or the weights files keras.applications downloads
(`resnet50_weights_tf_dim_ordering_tf_kernels.h5`, and the `_notop` ones).
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np

from jaxcnn.errors import UserError
from jaxcnn.pretrained.weights import Entry

# Keras weight name -> (collection, our variable name)
WEIGHT_NAMES = {
    "kernel": ("params", "kernel"), "bias": ("params", "bias"), "depthwise_kernel": ("params", "depthwise_kernel"),
    "pointwise_kernel": ("params", "pointwise_kernel"), "gamma": ("params", "scale"), "beta": ("params", "bias"),
    "moving_mean": ("batch_stats", "mean"), "moving_variance": ("batch_stats", "var"),
    "mean": ("batch_stats", "mean"), "variance": ("batch_stats", "variance"), "count": ("batch_stats", "count"),
}
CONV, BATCH_NORM = "Conv2D", "BatchNormalization"


@dataclasses.dataclass
class KerasLayer:
    name: str
    kind: str  # Keras' class name (or, read from HDF5, inferred from the weight names)
    weights: list[tuple[str, np.ndarray]]  # (weight name, array) in Keras' order


def _kind(weight_names) -> str:
    names = set(weight_names)
    if "moving_mean" in names:
        return BATCH_NORM
    if "pointwise_kernel" in names:
        return "SeparableConv2D"
    return "Layer"


def from_model(model) -> list[KerasLayer]:
    """The weighted layers of a keras.Model, in Keras' order."""
    out = []
    for layer in model.layers:
        if layer.weights:
            weights = [(w.name.split("/")[-1].split(":")[0], np.asarray(w.numpy() if hasattr(w, "numpy") else w))
                       for w in layer.weights]
            out.append(KerasLayer(layer.name, type(layer).__name__, weights))
    return out


def _decode(value) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def from_h5(path: str) -> list[KerasLayer]:
    """The weighted layers of a Keras HDF5 file (legacy layout: `layer_names` and per layer
    `weight_names`, at the root or under `model_weights`)."""
    import h5py
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise UserError(f"cannot read {path} as an HDF5 file ({e}); pass a Keras .h5 or .keras file") from None
    with f:
        group = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in group.attrs:
            raise UserError(f"{path} is not in Keras' HDF5 weights layout (no layer_names); save it with "
                            "model.save('model.h5') or pass the .keras file")
        out = []
        for layer_name in map(_decode, group.attrs["layer_names"]):
            layer = group[layer_name]
            names = [_decode(n) for n in layer.attrs.get("weight_names", [])]
            if not names:
                continue
            weights = [(n.split("/")[-1].split(":")[0], np.asarray(layer[n])) for n in names]
            kind = _kind([w for w, _ in weights])
            if kind == "Layer" and any(w == "kernel" and a.ndim == 4 for w, a in weights):
                kind = CONV
            out.append(KerasLayer(layer_name, kind, weights))
        return out


def read(source) -> tuple[list[KerasLayer], str]:
    """(layers, description) of a keras.Model or a .keras/.h5 path."""
    if not isinstance(source, (str, os.PathLike)):
        return from_model(source), f"Keras model {getattr(source, 'name', '')}".strip()
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise UserError(f"weights file {path} does not exist; pass a Keras .h5 or .keras file")
    if path.endswith(".keras"):
        try:
            import keras
        except ImportError:
            raise UserError("reading a .keras file needs Keras: pip install keras (or save the model as .h5)") from None
        try:
            model = keras.saving.load_model(path, compile=False)
        except Exception as e:  # Keras raises many types for a bad file
            raise UserError(f"Keras cannot load {path} ({str(e).splitlines()[0][:200]}); pass a saved Keras model") \
                from None
        return from_model(model), path
    return from_h5(path), path


def _suffix(name: str) -> int:
    match = re.search(r"_(\d+)$", name)
    return int(match.group(1)) if match else 0


def layer_map(keras_layers: list[KerasLayer], variables, order=None) -> dict[str, str]:
    """Keras layer name -> our layer name (see the module docstring). `order`: our layer
    names in call order (`jaxcnn.models.summary.trace_layers`), which unnamed Keras layers
    follow; variables' dicts are sorted by name."""
    params, stats = variables.get("params", {}), variables.get("batch_stats", {})
    ours = list(dict.fromkeys([*(order or []), *params, *stats]))
    mapping, unnamed = {}, {}
    for layer in keras_layers:
        if layer.name == "predictions":
            mapping[layer.name] = "head"
        elif layer.name in ours:
            mapping[layer.name] = layer.name
        else:
            unnamed.setdefault(layer.kind, []).append(layer.name)
    mapped = set(mapping.values())
    for kind, names in unnamed.items():
        names.sort(key=_suffix)
        if kind == BATCH_NORM:
            candidates = [n for n in ours if "var" in stats.get(n, {}) and n not in mapped]
        elif kind == CONV:
            candidates = [n for n in ours if getattr(params.get(n, {}).get("kernel"), "ndim", 0) == 4
                          and "scale" not in params[n] and n not in mapped]
        else:
            candidates = []
        candidates = candidates[:len(names)]
        mapping.update(zip(names, candidates))  # the rest stay unmapped: reported by `assign`
    return mapping


def entries(keras_layers: list[KerasLayer], variables, order=None) -> list[Entry]:
    """The Keras tensors as Entries for `weights.assign` (`order`: see `layer_map`)."""
    mapping = layer_map(keras_layers, variables, order)
    out = []
    for layer in keras_layers:
        ours = mapping.get(layer.name, layer.name)
        for weight, value in layer.weights:
            if weight not in WEIGHT_NAMES:
                raise UserError(f"layer {layer.name} has a weight '{weight}' that jaxcnn cannot place; "
                                f"known weights: {', '.join(WEIGHT_NAMES)}")
            collection, name = WEIGHT_NAMES[weight]
            if layer.kind != "SeparableConv2D" and weight == "depthwise_kernel":
                name = "kernel"  # Keras 2's DepthwiseConv2D names its kernel depthwise_kernel
            value = np.asarray(value)
            if weight == "count":
                value = value.astype(np.float32).reshape(())
            out.append(Entry(ours, collection, name, value, f"{layer.name}/{weight}"))
    return out
