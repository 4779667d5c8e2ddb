"""Run configuration: the embedded default, experiment files and overrides.

Every key a run understands is defined here, in `get_config()`, with its default;
experiment files (`experiments/*.py`) start from it and change values. Keys that
are not in this schema are rejected, so a typo never silently does nothing.

    jaxcnn train --config experiments/mnist_cnn.py --config.epochs=3
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
from typing import Any

import ml_collections

from jaxcnn.errors import UserError

OPTIMIZERS = ("sgd", "momentum", "nesterov", "rmsprop", "adagrad", "adam", "adamw")
SCHEDULES = ("constant", "piecewise", "step", "exponential", "cosine", "warmup_cosine")
HEADS = ("auto", "softmax", "sigmoid")

# Keys whose value is a free-form dict (family options of a model); any key may be added.
OPEN_KEYS = ("model_kwargs",)


def get_config() -> ml_collections.ConfigDict:
    """The embedded default run: the course's classic CNN on scikit-learn's digits.

    8x8 grayscale digits (1,797 images, a stratified 80/20 train/test split with a
    fixed seed), Conv(32, 3x3) -> MaxPool -> Dense(128) -> Dense(10), Adam 1e-3.
    Runs offline in well under a minute on 2 CPU cores.
    """
    c = ml_collections.ConfigDict()
    # Model.
    c.model = "simple_cnn"
    c.model_kwargs = ml_collections.ConfigDict()  # family options, e.g. {'filters': 64}
    c.head = "auto"  # auto: one sigmoid unit for 2 classes, softmax otherwise
    c.dtype = "float32"  # compute dtype of the model
    # Data.
    c.dataset = "digits"  # 'digits' (bundled with scikit-learn) or any TFDS name
    c.data_dir = ""  # TFDS data_dir; '' means TFDS' default (~/tensorflow_datasets)
    c.download = False  # let TFDS download a missing dataset (needs the network)
    c.validation_split = 0.1  # fraction of train held out for validation (seeded)
    c.in_memory_limit_mb = 4096.0  # datasets larger than this (uint8) stream from disk instead of device memory
    # Preprocessing of every split, recorded in the workdir's dataset.json (jaxcnn/data/preprocess.py).
    c.preprocess = ml_collections.ConfigDict()
    c.preprocess.resize = ()  # (H, W) the model sees, e.g. (224, 224); () keeps the dataset's size
    c.preprocess.normalize = "none"  # none (pixels in [0, 1]), dataset (train mean/std per channel), imagenet, custom
    c.preprocess.mean = ()  # normalize=custom: per-channel mean on the 0-1 scale
    c.preprocess.std = ()  # normalize=custom: per-channel std on the 0-1 scale
    # Augmentation of training batches, on device (jaxcnn/data/augment.py); 0/false switches each off.
    c.augment = ml_collections.ConfigDict()
    c.augment.crop_padding = 0  # random crop of the image size after zero padding each side (CIFAR: 4)
    c.augment.flip = False  # random horizontal flip
    c.augment.rotation_degrees = 0.0  # random rotation in [-r, r] degrees
    c.augment.zoom = 0.0  # random scale in [1 - zoom, 1 + zoom]
    c.augment.translation = 0.0  # random shift up to this fraction of height and width
    c.augment.fill = "constant"  # outside points of rotation/zoom/translation: constant (0), nearest, reflect, wrap
    c.augment.brightness = 0.0  # random offset in [-b, b] on the 0-1 scale
    c.augment.contrast = 0.0  # random contrast factor in [1 - c, 1 + c]
    c.augment.cutout = 0  # side of one zeroed square per image, in pixels
    c.augment.mixup = 0.0  # Beta(alpha, alpha) of mixup; labels become soft rows
    c.augment.cutmix = 0.0  # Beta(alpha, alpha) of cutmix (with mixup too: one of them per batch)
    # Training.
    c.batch_size = 16
    c.eval_batch_size = 512
    c.epochs = 30
    c.optimizer = "adam"
    c.learning_rate = 1e-3
    c.momentum = 0.9  # for momentum and nesterov
    c.weight_decay = 0.0  # decoupled for adamw, L2 added to the gradient otherwise
    c.schedule = "constant"
    c.warmup_epochs = 0.0  # linear warmup, for warmup_cosine
    c.lr_boundaries = ()  # epochs at which 'piecewise' multiplies the lr by lr_decay
    c.lr_decay = 0.1  # 'piecewise': factor at each boundary; 'exponential': per epoch
    c.lr_end_factor = 0.0  # 'cosine'/'warmup_cosine': final lr as a fraction of the peak
    c.seed = 0
    # Logging and checkpoints.
    c.log_every_steps = 50  # how often the host reads the running train metrics
    c.verbose = -1  # Keras semantics: 0 silent, 1 progress bar, 2 one line per epoch; -1 auto
    c.checkpoint_max_to_keep = 2
    return c


def load(path: str | None = None) -> ml_collections.ConfigDict:
    """Loads an experiment file `path[:arg]` (its `get_config([arg])`), or the default."""
    if not path:
        config = get_config()
    else:
        file, _, arg = path.partition(":")
        if not os.path.isfile(file):
            raise UserError(f"config file not found: {file}; pass a path to an experiments/*.py file")
        spec = importlib.util.spec_from_file_location("_jaxcnn_experiment", file)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
            if not hasattr(module, "get_config"):
                raise UserError(f"config file {file} defines no get_config(); add `def get_config(): ...`")
            config = module.get_config(arg) if arg else module.get_config()
        except UserError:
            raise
        except Exception as e:  # the user's file raised: say where, in one line
            raise UserError(f"config file {file} raised {type(e).__name__}: {e}; fix the file") from e
        if not isinstance(config, ml_collections.ConfigDict):
            raise UserError(f"get_config() in {file} returned {type(config).__name__}, not a ConfigDict")
    validate(config)
    return config


def _flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in config.items():
        name = prefix + key
        if isinstance(value, ml_collections.ConfigDict) and name not in OPEN_KEYS:
            out.update(_flat_keys(value, name + "."))
        else:
            out[name] = value
    return out


def validate(config: ml_collections.ConfigDict) -> None:
    """Rejects keys outside the schema and values outside their allowed sets."""
    known = _flat_keys(get_config())
    for key in _flat_keys(config):
        if key not in known:
            raise UserError(f"unknown config key '{key}'{_did_you_mean(key, known)}; "
                            f"known keys: {', '.join(sorted(known))}")
    for key, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("head", HEADS)):
        if config.get(key) not in allowed:
            raise UserError(f"config.{key}={config.get(key)!r} is not one of {', '.join(allowed)}")
    for key in ("batch_size", "eval_batch_size", "epochs", "log_every_steps", "checkpoint_max_to_keep"):
        if not isinstance(config.get(key), int) or config.get(key) < 1:
            raise UserError(f"config.{key} must be a positive integer, got {config.get(key)!r}")
    if not 0.0 <= config.validation_split < 1.0:
        raise UserError(f"config.validation_split must be in [0, 1), got {config.validation_split}")
    if config.learning_rate <= 0:
        raise UserError(f"config.learning_rate must be positive, got {config.learning_rate}")
    from jaxcnn import data
    data.check_config(config)


def _did_you_mean(key: str, known) -> str:
    import difflib
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _parse_value(text: str, current: Any, key: str) -> Any:
    """Parses an override's text to the type of the value it replaces."""
    if isinstance(current, bool):
        lowered = text.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise UserError(f"--config.{key}={text}: expected true or false")
    if isinstance(current, (int, float)) and not isinstance(current, bool):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = None
        if isinstance(current, int) and isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(current, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise UserError(f"--config.{key}={text}: expected {'an integer' if isinstance(current, int) else 'a number'}")
    if isinstance(current, str):
        return text
    if isinstance(current, (tuple, list)):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise UserError(f"--config.{key}={text}: expected a tuple such as (30, 60)") from None
        value = value if isinstance(value, (tuple, list)) else (value,)
        return type(current)(value)
    # Free-form values (model_kwargs entries, None placeholders): a Python literal, else a string.
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, str]) -> ml_collections.ConfigDict:
    """Applies `{'key.sub': 'text'}` overrides with the types of the existing values."""
    config = config.copy_and_resolve_references()  # a deep copy: the caller's config (and its groups) untouched
    known = _flat_keys(get_config())
    for key, text in overrides.items():
        parts = key.split(".")
        node = config
        for part in parts[:-1]:
            if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
                raise UserError(f"unknown config key '{key}'{_did_you_mean(key, known)}")
            node = node[part]
        leaf = parts[-1]
        open_dict = ".".join(parts[:-1]) in OPEN_KEYS
        if leaf not in node and not open_dict:
            raise UserError(f"unknown config key '{key}'{_did_you_mean(key, known)}; "
                            f"known keys: {', '.join(sorted(known))}")
        node[leaf] = _parse_value(text, node.get(leaf) if leaf in node else None, key)
    validate(config)
    return config


def to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=list)


def from_json_file(path: str) -> ml_collections.ConfigDict:
    """Reads a workdir's config.json back, restoring tuples where the schema has them."""
    with open(path) as f:
        data = json.load(f)
    config = get_config()
    config.update(_restore_types(data, config))
    return config


def _restore_types(data: dict, schema: ml_collections.ConfigDict) -> dict:
    out = {}
    for key, value in data.items():
        current = schema.get(key)
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        elif isinstance(current, ml_collections.ConfigDict) and isinstance(value, dict) and key not in OPEN_KEYS:
            value = _restore_types(value, current)
        out[key] = value
    return out
