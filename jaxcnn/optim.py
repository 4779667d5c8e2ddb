"""Optimizers and learning-rate schedules by name, as Optax chains.

Schedules are written in epochs in the config and converted to steps here, so a
config reads like the paper ("divide by 10 at epochs 91 and 136").
"""

from __future__ import annotations

from collections.abc import Callable

import ml_collections
import optax

from jaxcnn.errors import UserError


def schedule(config: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
    """The learning rate as a function of the global step."""
    lr = config.learning_rate
    total = config.epochs * steps_per_epoch
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
    if name == "adam":
        return optax.adam(learning_rate, eps=1e-7)
    if name == "adamw":
        return optax.adamw(learning_rate, eps=1e-7, weight_decay=config.weight_decay)
    raise UserError(f"unknown optimizer {name!r}")


def create(config: ml_collections.ConfigDict, steps_per_epoch: int) -> tuple[optax.GradientTransformation, Callable]:
    """Returns `(tx, lr_fn)`: the Optax transformation and its learning-rate schedule."""
    lr_fn = schedule(config, steps_per_epoch)
    return optimizer(config, lr_fn), lr_fn
