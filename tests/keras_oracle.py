"""keras.applications as the oracle of the model zoo, run in a subprocess on Keras'
TensorFlow backend (the backend the applications were written for; it builds a model
in about a second, where the JAX backend compiles every weight initializer).

    python tests/keras_oracle.py OUT.json SPEC [SPEC ...]      SPEC: Application:size[:forward]

For each model it records Keras' parameter counts, every weighted layer (name, class,
weight names and shapes, BatchNorm settings) and, with `forward`, the logits of
`oracle_input` after every weight is set to `oracle_value(layer, weight, shape)`. The
tests fill the jaxcnn model with the same values by layer name and compare the logits,
so no weights travel between the processes.
"""

from __future__ import annotations

import json
import os
import sys
import zlib

import numpy as np

ORACLE_CLASSES = 10  # small heads keep the forward checks cheap


def oracle_value(layer: str, weight: str, shape) -> np.ndarray:
    """Deterministic weights that keep activations in range through deep networks."""
    rng = np.random.default_rng(zlib.crc32(f"{layer}/{weight}".encode()))
    shape = tuple(shape)
    if weight in ("kernel", "depthwise_kernel", "pointwise_kernel"):
        fan_in = int(np.prod(shape[:-1])) if weight != "depthwise_kernel" else int(np.prod(shape[:2]))
        return rng.normal(0, 1 / np.sqrt(fan_in), shape).astype(np.float32)
    if weight in ("gamma", "moving_variance", "variance", "scale", "var"):  # Keras' names and Flax's
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if weight == "count":
        return np.full(shape, 1000, np.float32)
    return rng.normal(0, 0.1, shape).astype(np.float32)  # bias, beta, moving_mean, mean


def oracle_input(size: int) -> np.ndarray:
    return np.random.default_rng(size).uniform(0, 1, (2, size, size, 3)).astype(np.float32)


def describe(model, forward: bool, size: int) -> dict:
    import keras
    layers = []
    for layer in model.layers:
        if not layer.weights:
            continue
        entry = {"name": layer.name, "class": type(layer).__name__,
                 "weights": [[w.name, list(w.shape)] for w in layer.weights]}
        if isinstance(layer, keras.layers.BatchNormalization):
            entry.update(epsilon=layer.epsilon, momentum=layer.momentum, scale=layer.scale)
        layers.append(entry)
        if forward:
            layer.set_weights([oracle_value(layer.name, w.name, w.shape).astype(w.dtype) for w in layer.weights])
    result = {"count": model.count_params(),
              "trainable": int(sum(np.prod(w.shape) for w in model.trainable_weights)), "layers": layers}
    if forward:
        images = oracle_input(size)
        if model.name.startswith("efficientnet"):
            images = images * 255.0  # Keras' EfficientNet rescales by 1/255 itself; jaxcnn's pipeline did
        result["logits"] = np.asarray(model(images, training=False)).tolist()
    return result


def main(argv: list[str]) -> None:
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import keras
    out, specs = argv[0], argv[1:]
    results = {}
    for spec in specs:
        application, size, *flags = spec.split(":")
        forward = "forward" in flags
        model = getattr(keras.applications, application)(
            weights=None, input_shape=(int(size), int(size), 3), classifier_activation=None,
            classes=ORACLE_CLASSES if forward else 1000)
        results[spec] = describe(model, forward, int(size))
        keras.backend.clear_session()
    with open(out, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1:])
