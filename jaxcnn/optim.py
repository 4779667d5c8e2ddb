"""Optimizers, schedules and regularization, as Optax chains.

Schedules are written in epochs in the config and converted to steps here, so a
config reads like the paper ("divide by 10 at epochs 91 and 136").

The update of one step, in order (Keras' order where Keras has the piece):

    gradient clipping (clipnorm | global_clipnorm | clipvalue)
    -> L2 weight decay added to the gradient (every optimizer but adamw)
    -> the optimizer, driven by the schedule (adamw decays its weights itself)
    -> the learning-rate scale (1.0 until ReduceLROnPlateau or LearningRateScheduler
       changes it; it lives in the optimizer state, so checkpoints carry it)
    -> max-norm projection of the kernels (applied to the updated weights)

wrapped in a freezing mask (`optax.multi_transform` with `set_to_zero` for frozen
parameters) and, with `gradient_accumulation_steps > 1`, in `optax.MultiSteps`.
The L1/L2 penalties (`penalty`) are added to the loss by the train step, as Keras'
kernel regularizers are; label smoothing is the head's.

Layer patterns (freezing, per-layer regularization) are shell globs matched against
a parameter's path, e.g. 'conv1/kernel': 'conv1' names a layer (all its parameters),
'conv*' every layer whose name starts with conv, 'head/bias' one parameter; 'base' names
every layer but the head. Frozen parameters get no update at all (no weight decay either),
and frozen BatchNorm layers run in inference mode (their statistics, not the batch's), as do
the trainable ones that `optimization.batch_norm_inference` names (`batch_norm_inference`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import optax
import optax.tree_utils as otu

from jaxcnn.errors import UserError

LR_SCALE = "lr_scale"  # the name of the learning-rate scale in the optimizer state


# --- schedules ----------------------------------------------------------------------

def schedule(config: ml_collections.ConfigDict, steps_per_epoch: float) -> optax.Schedule:
    """The learning rate as a function of the optimizer's update count.

    `steps_per_epoch` counts optimizer updates (train steps / gradient_accumulation_steps).
    """
    lr = config.learning_rate
    total = round(config.epochs * steps_per_epoch)
    name = config.schedule
    if name == "constant":
        return optax.constant_schedule(lr)
    if name in ("piecewise", "step"):
        if not config.lr_boundaries:
            raise UserError(f"schedule '{name}' needs config.lr_boundaries (epochs), e.g. --config.lr_boundaries='(30, 60)'")
        boundaries = {round(b * steps_per_epoch): config.lr_decay for b in config.lr_boundaries}
        return optax.piecewise_constant_schedule(lr, boundaries)
    if name == "exponential":  # lr * lr_decay ** epoch, continuous in the step
        return optax.exponential_decay(lr, transition_steps=steps_per_epoch, decay_rate=config.lr_decay)
    if name == "cosine":
        return optax.cosine_decay_schedule(lr, decay_steps=max(total, 1), alpha=config.lr_end_factor)
    if name == "warmup_cosine":
        warmup = round(config.warmup_epochs * steps_per_epoch)
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=lr, warmup_steps=warmup,
            decay_steps=max(total, warmup + 1), end_value=lr * config.lr_end_factor)
    raise UserError(f"unknown schedule {name!r}")


# --- the optimizer --------------------------------------------------------------------

def optimizer(config: ml_collections.ConfigDict, learning_rate: optax.Schedule) -> optax.GradientTransformation:
    """The named optimizer driven by `learning_rate` (a schedule).

    `weight_decay` is decoupled for adamw (Loshchilov & Hutter) and, for every other
    optimizer, added to the gradient before it (PyTorch's `weight_decay`, the L2
    "weight decay 1e-4" of the ResNet paper's SGD).
    """
    tx = _base_optimizer(config, learning_rate)
    if config.weight_decay and config.optimizer != "adamw":
        tx = optax.chain(optax.add_decayed_weights(config.weight_decay), tx)
    return tx


def _base_optimizer(config: ml_collections.ConfigDict, learning_rate: optax.Schedule) -> optax.GradientTransformation:
    name = config.optimizer
    if name == "sgd":
        return optax.sgd(learning_rate)
    if name == "momentum":
        return optax.sgd(learning_rate, momentum=config.momentum)
    if name == "nesterov":
        return optax.sgd(learning_rate, momentum=config.momentum, nesterov=True)
    if name == "rmsprop":  # Keras' defaults: rho 0.9, eps 1e-7, no momentum
        return optax.rmsprop(learning_rate, decay=0.9, eps=1e-7)
    if name == "adagrad":  # Keras' defaults: initial accumulator 0.1, eps 1e-7
        return optax.adagrad(learning_rate, initial_accumulator_value=0.1, eps=1e-7)
    if name == "adadelta":  # Keras' defaults: rho 0.95, eps 1e-7 (its mnist_cnn example: lr 1.0)
        return optax.adadelta(learning_rate, rho=0.95, eps=1e-7)
    if name == "adam":
        return optax.adam(learning_rate, eps=1e-7)
    if name == "adamw":
        return optax.adamw(learning_rate, eps=1e-7, weight_decay=config.weight_decay)
    raise UserError(f"unknown optimizer {name!r}")


def create(config: ml_collections.ConfigDict, steps_per_epoch: int,
           params=None) -> tuple[optax.GradientTransformation, Callable]:
    """Returns `(tx, lr_fn)`: the whole update of a train step, and the scheduled
    learning rate as a function of the train step (before the learning-rate scale).

    `params` (or their shapes) are needed to resolve the layer patterns of
    `optimization.freeze` and `regularization.per_layer`.
    """
    opt = config.optimization
    accumulate = opt.gradient_accumulation_steps
    lr_schedule = schedule(config, steps_per_epoch / accumulate)
    tx = optax.chain(
        *_clipping(opt),
        optimizer(config, lr_schedule),
        optax.inject_hyperparams(_lr_scale)(**{LR_SCALE: 1.0}),
        *([max_norm(_per_kernel(config, params, "max_norm"))] if _uses(config, "max_norm") else []),
    )
    if opt.freeze:
        tx = optax.multi_transform({"trainable": tx, "frozen": optax.set_to_zero()}, freeze_labels(opt.freeze, params))
    if accumulate > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=accumulate).gradient_transformation()
    return tx, lambda step: lr_schedule(step // accumulate)


def _lr_scale(lr_scale: float) -> optax.GradientTransformation:
    return optax.scale(lr_scale)


def get_lr_scale(opt_state) -> jax.Array:
    """The learning-rate scale held in the optimizer state."""
    return otu.tree_get(opt_state, LR_SCALE)


def set_lr_scale(opt_state, value, sharding=None):
    """A copy of `opt_state` whose learning-rate scale is `value` (placed with `sharding`)."""
    value = jnp.asarray(value, jnp.float32)
    if sharding is not None:
        value = jax.device_put(value, sharding)
    return otu.tree_set(opt_state, **{LR_SCALE: value})


def _clipping(opt: ml_collections.ConfigDict) -> list[optax.GradientTransformation]:
    """Keras' clipnorm (each gradient tensor), global_clipnorm and clipvalue; one at most."""
    chosen = [k for k in ("clipnorm", "global_clipnorm", "clipvalue") if opt[k]]
    if len(chosen) > 1:
        raise UserError(f"only one of optimization.clipnorm, global_clipnorm and clipvalue may be set, got {chosen}")
    if opt.clipnorm:
        return [clip_by_norm(opt.clipnorm)]
    if opt.global_clipnorm:
        return [optax.clip_by_global_norm(opt.global_clipnorm)]
    if opt.clipvalue:
        return [optax.clip(opt.clipvalue)]
    return []


def clip_by_norm(max_norm_value: float) -> optax.GradientTransformation:
    """Clips each gradient tensor to L2 norm `max_norm_value` (Keras' per-variable `clipnorm`)."""
    def clip(g):
        norm = jnp.sqrt(jnp.sum(jnp.square(g)))
        return g * max_norm_value / jnp.maximum(norm, max_norm_value)
    return optax.stateless_with_tree_map(lambda g, _: clip(g))


# --- layer patterns -------------------------------------------------------------------

def param_path(key_path) -> str:
    """'conv1/kernel' for the key path of params['conv1']['kernel']."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in key_path)


BASE = "base"  # the freeze pattern naming every layer but the head (Keras' base_model.trainable = False)


def matches(path: str, pattern: str) -> bool:
    """Whether the glob `pattern` names the parameter `path` or a layer that holds it
    ('base': every layer but `head`)."""
    if pattern == BASE:
        return path.split("/", 1)[0] != "head"
    return fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path, pattern.rstrip("/") + "/*")


def param_paths(params) -> list[str]:
    return [param_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def _check_patterns(patterns, params, what: str) -> None:
    paths = param_paths(params)
    for pattern in patterns:
        if not any(matches(path, pattern) for path in paths):
            raise UserError(f"{what} pattern {pattern!r} matches no parameter; "
                            f"the model's parameters are: {', '.join(paths)}")


def freeze_labels(patterns, params):
    """'frozen' for every parameter a pattern names, 'trainable' for the others."""
    if params is None:
        raise ValueError("freezing needs the parameters (or their shapes) to resolve its patterns")
    _check_patterns(patterns, params, "optimization.freeze")
    return jax.tree_util.tree_map_with_path(
        lambda p, _: "frozen" if any(matches(param_path(p), pat) for pat in patterns) else "trainable", params)


def frozen_mask(patterns, tree):
    """True for every leaf of `tree` (params or batch_stats) that a freeze pattern names."""
    return jax.tree_util.tree_map_with_path(lambda p, _: any(matches(param_path(p), pat) for pat in patterns), tree)


def batch_norm_inference(opt: ml_collections.ConfigDict, batch_stats) -> tuple[str, ...]:
    """The patterns of the BatchNorm layers that run in inference mode in a training step: the
    frozen ones and those `optimization.batch_norm_inference` names (each must name a BatchNorm
    layer of `batch_stats`, the model's statistics or their shapes)."""
    extra = tuple(opt.batch_norm_inference)
    paths = param_paths(batch_stats or {})
    for pattern in extra:
        if not any(matches(path, pattern) for path in paths):
            layers = sorted({path.rsplit("/", 1)[0] for path in paths})
            raise UserError(f"optimization.batch_norm_inference pattern {pattern!r} names no BatchNorm layer; "
                            + (f"the model's BatchNorm layers are: {', '.join(layers)}" if layers
                               else "the model has none: remove the key"))
    return tuple(opt.freeze) + tuple(p for p in extra if p not in opt.freeze)


def count_trainable(patterns, params) -> int:
    if not patterns:
        return sum(int(x.size) for x in jax.tree.leaves(params))
    mask = frozen_mask(patterns, params)
    return sum(int(x.size) for x, frozen in zip(jax.tree.leaves(params), jax.tree.leaves(mask)) if not frozen)


# --- regularization -------------------------------------------------------------------

def _is_kernel(path: str) -> bool:
    # Keras' regularizers and constraints are set per layer on its kernel (Dense, Conv
    # weights), not on biases or normalization scales.
    return path.rsplit("/", 1)[-1] == "kernel"


def _uses(config: ml_collections.ConfigDict, name: str) -> bool:
    reg = config.regularization
    return bool(reg[name]) or any(entry.get(name) for entry in reg.per_layer.values())


def _per_kernel(config: ml_collections.ConfigDict, params, name: str) -> dict[str, float]:
    """The coefficient `name` of every kernel: per_layer's where a pattern names the layer,
    else the global one. Two patterns that name one kernel with different values are an error
    (no order to break the tie)."""
    reg = config.regularization
    per_layer = {pattern: dict(entry) for pattern, entry in reg.per_layer.items()}  # entries: config.validate
    if params is None:
        raise ValueError("per-layer regularization needs the parameters (or their shapes)")
    _check_patterns(per_layer, params, "regularization.per_layer")
    values = {}
    for path in param_paths(params):
        if not _is_kernel(path):
            continue
        found = {entry[name] for pattern, entry in per_layer.items() if name in entry and matches(path, pattern)}
        if len(found) > 1:
            raise UserError(f"regularization.per_layer gives {path} two values of {name} {sorted(found)}; "
                            "make the patterns name disjoint layers")
        value = found.pop() if found else reg[name]
        if value:
            values[path] = float(value)
    return values


def penalty(config: ml_collections.ConfigDict, params) -> Callable | None:
    """`params -> l1 * sum(|w|) + l2 * sum(w**2)` over the kernels (Keras' L1L2, no 1/2),
    or None without penalties."""
    if not (_uses(config, "l1") or _uses(config, "l2")):
        return None
    l1, l2 = _per_kernel(config, params, "l1"), _per_kernel(config, params, "l2")

    def total(params):
        flat = {param_path(p): w for p, w in jax.tree_util.tree_flatten_with_path(params)[0]}
        terms = [l1[path] * jnp.sum(jnp.abs(w.astype(jnp.float32))) for path, w in flat.items() if path in l1]
        terms += [l2[path] * jnp.sum(jnp.square(w.astype(jnp.float32))) for path, w in flat.items() if path in l2]
        return sum(terms, jnp.zeros((), jnp.float32))
    return total


def project_max_norm(w, max_value: float):
    """Keras' MaxNorm: rescales each unit's incoming weights (all axes but the last) to
    norm <= max_value, with Keras' epsilon (so in-range weights shrink by norm/(eps+norm))."""
    norms = jnp.sqrt(jnp.sum(jnp.square(w), axis=tuple(range(w.ndim - 1)), keepdims=True))
    return w * (jnp.clip(norms, 0, max_value) / (1e-7 + norms))


def max_norm(limits: Mapping[str, float]) -> optax.GradientTransformation:
    """Projects the updated kernels named in `limits` ({path: max norm}) after each update.

    As an update: `project(w + u) - w`, so that `apply_updates` lands on the projection.
    """
    def update(updates, state, params=None):
        if params is None:
            raise ValueError("max_norm needs the parameters")

        def one(path, u, w):
            limit = limits.get(param_path(path))
            return u if limit is None else project_max_norm(w + u, limit) - w
        return jax.tree_util.tree_map_with_path(one, updates, params), state
    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def ema_update(ema_params, params, momentum: float, updates_done):
    """Keras' EMA of the weights: `m * ema + (1 - m) * w`, with m = 0 on the first update
    (so the average starts at the weights after it). `updates_done` counts optimizer
    updates before this one."""
    m = jnp.where(updates_done == 0, 0.0, momentum)
    return jax.tree.map(lambda e, w: (m * e + (1 - m) * w).astype(e.dtype), ema_params, params)
