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
import re
from typing import Any

import ml_collections
from ml_collections import config_dict

from jaxcnn.errors import UserError

OPTIMIZERS = ("sgd", "momentum", "nesterov", "rmsprop", "adagrad", "adadelta", "adam", "adamw")
SCHEDULES = ("constant", "piecewise", "step", "exponential", "cosine", "warmup_cosine")
HEADS = ("auto", "softmax", "sigmoid")
DTYPES = ("float32", "bfloat16")
REGULARIZERS = ("l1", "l2", "max_norm")  # the keys of a regularization.per_layer entry
MONITOR_MODES = ("auto", "min", "max")
# The keys a phase may change (config.phases): what builds the optimizer and the train step.
PHASE_KEYS = ("epochs", "optimizer", "learning_rate", "momentum", "weight_decay", "schedule", "warmup_epochs",
              "lr_boundaries", "lr_decay", "lr_end_factor", "optimization.freeze", "optimization.batch_norm_inference",
              "optimization.clipnorm", "optimization.global_clipnorm", "optimization.clipvalue")

# Keys whose value is a free-form dict (family options of a model, per-layer regularization);
# any key may be added.
OPEN_KEYS = ("model_kwargs", "regularization.per_layer")


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
    c.dtype = "float32"  # compute dtype of the model; 'bfloat16' is mixed precision (params, optimizer in f32)
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
    # Transfer learning: start from a pretrained workdir's weights (`jaxcnn convert --out`, or a run);
    # its head is kept only when the classes match (jaxcnn/pretrained/transfer.py).
    c.init_from = ""
    # Phases of one run (head first, then fine-tuning): each a dict of the keys of this config that
    # it changes (PHASE_KEYS), e.g. ({'epochs': 3, 'optimization.freeze': 'base'},
    # {'epochs': 1, 'learning_rate': 1e-5, 'optimization.freeze': ('stem*',)}). Each phase is this
    # config with its keys replaced, with a fresh optimizer and its schedule restarted; `epochs`
    # must be the sum of the phases' epochs. (): one phase, this config.
    c.phases = ()
    c.optimization = _optimization()
    c.regularization = _regularization()
    # Logging and checkpoints.
    c.log_every_steps = 50  # how often the host reads the running train metrics
    c.verbose = -1  # Keras semantics: 0 silent, 1 progress bar, 2 one line per epoch; -1 auto
    c.checkpoint_max_to_keep = 2  # latest checkpoints kept in workdir/checkpoints (for resuming)
    c.checkpoint_every_steps = 0  # also checkpoint inside epochs every N steps (0: at epoch ends only)
    # Exit status after SIGTERM once the checkpoint is saved: 0, a clean exit; 143 (what a shell
    # reports for a process SIGTERM ended) lets a job scheduler retry a preempted run.
    c.preempted_exit_code = 0
    c.callbacks = _callbacks()
    c.distributed = _distributed()
    return c


def _optimization() -> ml_collections.ConfigDict:
    """What changes the update besides the optimizer (Keras' optimizer arguments)."""
    o = ml_collections.ConfigDict()
    o.clipnorm = 0.0  # clip each gradient tensor to this L2 norm (0: off); one clipping at most
    o.global_clipnorm = 0.0  # clip all gradients together to this global L2 norm
    o.clipvalue = 0.0  # clip each gradient element to [-v, v]
    o.gradient_accumulation_steps = 1  # average the gradients of N batches per update
    o.ema_momentum = 0.0  # > 0: keep an EMA of the weights (Keras' use_ema) and evaluate it
    o.freeze = ()  # layer/parameter globs not trained, e.g. ('conv*',), or 'base' (all but head); see jaxcnn/optim.py
    # BatchNorm layers (globs, or 'base') that normalize with their moving statistics in training too,
    # which stay as they are, while their scale and bias train (Keras' advice when fine-tuning: call the
    # base with training=False). Frozen BatchNorm layers always do.
    o.batch_norm_inference = ()
    return o


def _regularization() -> ml_collections.ConfigDict:
    """Keras' kernel regularizers and constraints, on every Dense and Conv kernel."""
    r = ml_collections.ConfigDict()
    r.l1 = 0.0  # adds l1 * sum(|w|) of each kernel to the loss
    r.l2 = 0.0  # adds l2 * sum(w ** 2) of each kernel to the loss (Keras' L2: no 1/2)
    r.max_norm = 0.0  # after each update, rescale each unit's incoming weights to norm <= this (0: off)
    r.per_layer = ml_collections.ConfigDict()  # {'layer glob': {'l1': .., 'l2': .., 'max_norm': ..}} overrides
    r.label_smoothing = 0.0  # targets (1 - s) * one_hot + s / classes
    return r


def _callbacks() -> ml_collections.ConfigDict:
    """Keras' callbacks with Keras' argument names and defaults (jaxcnn.callbacks)."""
    cb = ml_collections.ConfigDict()
    cb.early_stopping = ml_collections.ConfigDict(dict(
        enabled=False, monitor="val_loss", min_delta=0.0, patience=0, mode="auto",
        baseline=config_dict.placeholder(float), restore_best_weights=False, start_from_epoch=0))
    cb.reduce_lr_on_plateau = ml_collections.ConfigDict(dict(
        enabled=False, monitor="val_loss", factor=0.1, patience=10, mode="auto", min_delta=1e-4, cooldown=0,
        min_lr=0.0))
    # Best checkpoints by `monitor` in workdir/best_checkpoints; save_freq: 'epoch' or a number of steps.
    cb.model_checkpoint = ml_collections.ConfigDict(dict(
        enabled=False, monitor="val_loss", mode="auto", save_best_only=False, save_freq="epoch", max_to_keep=1,
        initial_value_threshold=config_dict.placeholder(float)))
    cb.csv_logger = ml_collections.ConfigDict(dict(enabled=False, filename="training.csv", separator=","))
    cb.terminate_on_nan = False  # stop at the first batch whose loss is NaN or infinite
    # Per-epoch scalars; weight histograms every N epochs; sample input images; batch scalars
    # every N steps ('epoch': none). Writing events imports TensorFlow (seconds at start).
    cb.tensorboard = ml_collections.ConfigDict(dict(enabled=True, histogram_freq=0, write_images=False,
                                                    update_freq="epoch"))
    return cb


def _distributed() -> ml_collections.ConfigDict:
    """Multi-host runs: one process per host, joined by jax.distributed.initialize.
    Empty values come from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID;
    coordinator_address='auto' lets JAX detect the cluster (Slurm, Open MPI, Kubernetes, TPU)."""
    d = ml_collections.ConfigDict()
    d.coordinator_address = ""  # host:port of process 0
    d.num_processes = 0  # 0: from the environment, else 1 (a single process)
    d.process_id = -1  # -1: from the environment
    return d


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
    _validate_training(config)
    if config.phases:
        phase_configs(config)  # validates every phase


def phase_configs(config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
    """The config of each phase of a run: the run's config with the phase's keys replaced (its
    `epochs` the phase's length) and no phases; without phases, [config]. Validates each one."""
    if not config.phases:
        return [config]
    if not isinstance(config.phases, (tuple, list)):
        raise UserError(f"config.phases must be a tuple of dicts such as ({{'epochs': 3}}, {{'epochs': 1}}), "
                        f"got {config.phases!r}")
    out = []
    for i, phase in enumerate(config.phases):
        where = f"config.phases[{i}]"
        if not isinstance(phase, (dict, ml_collections.ConfigDict)):
            raise UserError(f"{where} must be a dict such as {{'epochs': 3, 'learning_rate': 1e-3}}, got {phase!r}")
        unknown = sorted(set(phase) - set(PHASE_KEYS))
        if unknown:
            raise UserError(f"{where} has unknown key '{unknown[0]}'{_did_you_mean(unknown[0], PHASE_KEYS)}; "
                            f"a phase may set {', '.join(PHASE_KEYS)}")
        if "epochs" not in phase:
            raise UserError(f"{where} has no 'epochs'; give each phase its length, e.g. {{'epochs': 3, ...}}")
        c = config.copy_and_resolve_references()
        c.phases = ()
        for key, value in phase.items():
            *parents, leaf = key.split(".")
            node = c
            for part in parents:
                node = node[part]
            if isinstance(node[leaf], tuple):  # a pattern alone, or a list (read back from JSON)
                value = (value,) if isinstance(value, str) else tuple(value) if isinstance(value, list) else value
            try:
                node[leaf] = value
            except TypeError:
                raise UserError(f"{where}.{key}={value!r} must be a {type(node[leaf]).__name__} as "
                                f"config.{key} is") from None
        try:
            validate(c)
        except UserError as e:
            raise UserError(f"{where}: {e}") from None
        out.append(c)
    lengths = [c.epochs for c in out]
    if sum(lengths) != config.epochs:
        raise UserError(f"config.epochs={config.epochs} but the phases last {' + '.join(map(str, lengths))} = "
                        f"{sum(lengths)} epochs; set --config.epochs={sum(lengths)} (the sum of the phases' epochs)")
    return out


def _check(ok: bool, key: str, value, requirement: str) -> None:
    if not ok:
        raise UserError(f"config.{key} must be {requirement}, got {value!r}")


def _validate_training(config: ml_collections.ConfigDict) -> None:
    """Values of the optimization, regularization, checkpoint and callback keys."""
    _check(config.dtype in DTYPES, "dtype", config.dtype,
           f"one of {', '.join(DTYPES)} (float16 would need loss scaling; bfloat16 does not)")
    _check(isinstance(config.checkpoint_every_steps, int) and config.checkpoint_every_steps >= 0,
           "checkpoint_every_steps", config.checkpoint_every_steps, "an integer >= 0")
    _check(isinstance(config.preempted_exit_code, int) and 0 <= config.preempted_exit_code <= 255,
           "preempted_exit_code", config.preempted_exit_code, "an exit status in [0, 255]")
    opt, reg = config.optimization, config.regularization
    for key in ("clipnorm", "global_clipnorm", "clipvalue"):
        _check(opt[key] >= 0, f"optimization.{key}", opt[key], ">= 0 (0: off)")
    _check(isinstance(opt.gradient_accumulation_steps, int) and opt.gradient_accumulation_steps >= 1,
           "optimization.gradient_accumulation_steps", opt.gradient_accumulation_steps, "a positive integer")
    _check(0.0 <= opt.ema_momentum < 1.0, "optimization.ema_momentum", opt.ema_momentum, "in [0, 1) (0: off)")
    for key in ("l1", "l2", "max_norm"):
        _check(reg[key] >= 0, f"regularization.{key}", reg[key], ">= 0 (0: off)")
    _check(0.0 <= reg.label_smoothing < 1.0, "regularization.label_smoothing", reg.label_smoothing, "in [0, 1)")
    for name, entry in reg.per_layer.items():
        key = f"regularization.per_layer.{name}"
        _check(isinstance(entry, (dict, ml_collections.ConfigDict)), key, entry, "a dict such as {'l2': 1e-4}")
        unknown = sorted(set(entry) - set(REGULARIZERS))
        _check(not unknown, key, entry, f"a dict of {', '.join(REGULARIZERS)} (unknown keys {unknown})")
        for k, v in entry.items():
            _check(isinstance(v, (int, float)) and v >= 0, f"{key}.{k}", v, "a number >= 0")
    cb = config.callbacks
    for group in ("early_stopping", "reduce_lr_on_plateau", "model_checkpoint"):
        _check(cb[group].mode in MONITOR_MODES, f"callbacks.{group}.mode", cb[group].mode,
               f"one of {', '.join(MONITOR_MODES)}")
    for key in ("early_stopping.patience", "early_stopping.start_from_epoch", "reduce_lr_on_plateau.patience",
                "reduce_lr_on_plateau.cooldown", "tensorboard.histogram_freq"):
        group, name = key.split(".")
        _check(isinstance(cb[group][name], int) and cb[group][name] >= 0, f"callbacks.{key}", cb[group][name],
               "an integer >= 0")
    factor = cb.reduce_lr_on_plateau.factor
    _check(0.0 <= factor < 1.0, "callbacks.reduce_lr_on_plateau.factor", factor, "in [0, 1) (Keras refuses >= 1)")
    _check(isinstance(cb.model_checkpoint.max_to_keep, int) and cb.model_checkpoint.max_to_keep >= 1,
           "callbacks.model_checkpoint.max_to_keep", cb.model_checkpoint.max_to_keep, "a positive integer")
    for key in ("model_checkpoint.save_freq", "tensorboard.update_freq"):
        group, name = key.split(".")
        value = cb[group][name]
        _check(value == "epoch" or (value.isdigit() and int(value) > 0), f"callbacks.{key}", value,
               "'epoch' or a positive number of steps")
    d = config.distributed
    _check(isinstance(d.num_processes, int) and d.num_processes >= 0, "distributed.num_processes",
           d.num_processes, "an integer >= 0 (0: from the environment)")
    _check(isinstance(d.process_id, int) and d.process_id >= -1, "distributed.process_id", d.process_id,
           "an integer >= -1 (-1: from the environment)")


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
            # Bare words, e.g. --config.optimization.freeze=conv1,conv2: a tuple of strings.
            value = tuple(part.strip() for part in text.split(",") if part.strip())
            if not value or not all(re.fullmatch(r"[A-Za-z_*?\[][\w*?/\[\].-]*", part) for part in value):
                raise UserError(f"--config.{key}={text}: expected a tuple such as (30, 60) or a,b") from None
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
