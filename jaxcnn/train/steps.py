"""Pure train and eval steps. Metrics are clu collections computed on device; the
host merges and reads them once per log interval, never once per step.

(No `from __future__ import annotations` here: clu reads the Metrics annotations.)
"""

import collections
import contextlib
import dataclasses
import math
from typing import Any, Callable, Optional

import flax
import jax
import jax.numpy as jnp
from clu import metrics as clu_metrics

from jaxcnn import layers, optim
from jaxcnn.heads import Head
from jaxcnn.train.state import TrainState


@flax.struct.dataclass
class Metrics(clu_metrics.Collection):
    """Running means of the per-example loss and accuracy, weighted by the batch mask."""
    loss: clu_metrics.Average.from_output("loss")
    accuracy: clu_metrics.Average.from_output("accuracy")


@dataclasses.dataclass(frozen=True)
class StepOptions:
    """What a step computes besides the head's loss (fixed for a run)."""
    label_smoothing: float = 0.0
    # params -> scalar L1/L2 penalty, added to the loss as Keras adds its kernel regularizers.
    penalty: Optional[Callable[[Any], jax.Array]] = None
    ema_momentum: float = 0.0
    accumulation_steps: int = 1
    # batch_stats leaves that keep their values (a static mask, or None).
    frozen_stats: Any = dataclasses.field(default=None, hash=False, compare=False)
    # Layer patterns: BatchNorm layers they name normalize with their statistics in training too
    # (Keras' frozen BatchNormalization runs in inference mode; optim.batch_norm_inference).
    batch_norm_inference: tuple = ()
    # Whether the parameters' update waits for every gradient (`_after_all_gradients`).
    update_after_gradients: bool = False

    @classmethod
    def for_config(cls, config, shapes: dict) -> "StepOptions":
        """The options of a run's (or a phase's) config; `shapes` are the model's variables or their shapes."""
        opt = config.optimization
        inference = optim.batch_norm_inference(opt, shapes.get("batch_stats"))
        return cls(label_smoothing=config.regularization.label_smoothing,
                   penalty=optim.penalty(config, shapes["params"]),
                   ema_momentum=opt.ema_momentum, accumulation_steps=opt.gradient_accumulation_steps,
                   frozen_stats=(optim.frozen_mask(inference, shapes["batch_stats"])
                                 if inference and shapes.get("batch_stats") else None),
                   batch_norm_inference=inference,
                   update_after_gradients=not shapes.get("batch_stats") and sum(
                       math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes["params"]))
                   >= UPDATE_AFTER_GRADIENTS_MIN_PARAMS)


UPDATE_AFTER_GRADIENTS_MIN_PARAMS = 2_000_000
"""From this many parameters on, a model without BatchNorm statistics has the train step update
its parameters only once every gradient is computed (`_after_all_gradients`). Train steps, ms,
as XLA orders them -> after all gradients (`python tools/bench_train_step.py --model M ...`,
alternating runs): vgg16 (32x32, batch 32, 34M parameters) 350 / 348 -> 325 / 331 and 336 /
342 -> 326 / 333, compiled in the same time, resident memory the same (`tools/bench_peers.py`:
1.13 vs 1.14 GB); smaller models lose more than the copies cost, as the update no longer
overlaps the backward pass: resnet20 (0.27M) 211 / 206 -> 212 / 207, simple_cnn (0.69M) 8.17 /
8.33 -> 8.93 / 8.96, lenet5 (62K) 5.34 / 5.14 -> 5.57 / 5.56. Models with BatchNorm keep XLA's
order: ordered, resnet50 (25.6M) compiled in 23.3 s against 6.8 s and peaked at 3.8 GB against
1.8 GB resident for 1,054 against 1,067 ms per step (`/usr/bin/time -v`), and mobilenet_v2's
first step and memory in `tools/bench_peers.py` went from 6.1 s and 1.3 GB to 16-18 s and 2.9
GB."""


def _after_all_gradients(params, grads):
    """`params` (the same values) made to depend on every gradient, so that their update cannot
    run before an op that still reads them.

    Why: the step donates its state, so XLA writes the new parameters over the old ones. An
    update that nothing orders after the backward pass's reads of the old values (the input
    gradients read every kernel) would overwrite them too early, so XLA copied every
    parameter first: 25 copies in VGG-16's step, 134 MB a step. Adding 0 times a value of
    every gradient (0 * isfinite(...): never NaN) orders the update after them; the copies go
    (one is left, of the head's 10 biases)."""
    done = jnp.isfinite(sum(g.reshape(-1)[0].astype(jnp.float32) for g in jax.tree.leaves(grads)))
    return jax.tree.map(lambda p: p + 0 * done.astype(p.dtype), params)


def _frozen_batch_norm(patterns):
    """A Flax method interceptor: BatchNorm layers named by `patterns` use their running
    statistics (as `train=False` does) even in a training step."""
    import flax.linen as nn

    def intercept(next_fun, args, kwargs, context):
        module = context.module
        if (not isinstance(module, nn.BatchNorm) or context.method_name != "__call__" or module.use_running_average
                or not any(optim.matches("/".join(module.scope.path) + "/mean", p) for p in patterns)):
            return next_fun(*args, **kwargs)
        x = layers.shifted(args[0], kwargs.get("shift"))
        y = x - module.get_variable("batch_stats", "mean")
        mul = jax.lax.rsqrt(module.get_variable("batch_stats", "var") + module.epsilon)
        if module.use_scale:
            mul = mul * module.get_variable("params", "scale")
        y = y * mul
        if module.use_bias:
            y = y + module.get_variable("params", "bias")
        return jnp.asarray(y, module.dtype or jnp.result_type(x))
    return nn.intercept_methods(intercept)


def _masked_mean(values, mask):
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def _objective(head: Head, options: StepOptions, logits, labels, params):
    """Per-example loss as Keras reports it: the (label-smoothed) loss plus the penalties."""
    per_example = head.loss(logits, labels, options.label_smoothing)
    if options.penalty is not None:
        per_example = per_example + options.penalty(params)
    return per_example


def train_step(state: TrainState, batch: dict, rng: jax.Array, *, head: Head,
               options: StepOptions = StepOptions()) -> tuple[TrainState, Metrics]:
    """One gradient step. Dropout noise is `fold_in(rng, step)`: the same run replays exactly."""
    dropout_rng = jax.random.fold_in(rng, state.step)
    has_batch_stats = bool(state.batch_stats)

    def loss_fn(params):
        with (_frozen_batch_norm(options.batch_norm_inference) if options.batch_norm_inference and has_batch_stats
              else contextlib.nullcontext()):
            out = state.apply_fn(state.variables(params), batch["image"], train=True, rngs={"dropout": dropout_rng},
                                 mutable=["batch_stats"] if has_batch_stats else False)
        logits, updates = out if has_batch_stats else (out, {})
        per_example = _objective(head, options, logits, batch["label"], params)
        return _masked_mean(per_example, batch["mask"]), (logits, per_example, updates)

    (_, (logits, per_example, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    if options.update_after_gradients:
        state = state.replace(params=_after_all_gradients(state.params, grads))
    new_state = state.apply_gradients(grads=grads)
    if has_batch_stats:
        stats = updates["batch_stats"]
        if options.frozen_stats is not None:
            stats = jax.tree.map(lambda frozen, new, old: old if frozen else new,
                                 options.frozen_stats, stats, state.batch_stats)
        new_state = new_state.replace(batch_stats=stats)
    if state.ema_params is not None:
        new_state = new_state.replace(ema_params=optim.ema_update(
            state.ema_params, new_state.params, options.ema_momentum, state.step // options.accumulation_steps))
    metrics = Metrics.single_from_model_output(
        loss=per_example, accuracy=head.correct(logits, batch["label"]), mask=batch["mask"])
    return new_state, metrics


def eval_step(state: TrainState, batch: dict, *, head: Head, options: StepOptions = StepOptions()) -> Metrics:
    """Loss and accuracy of the evaluated params (the moving average when one is kept)."""
    params = state.eval_params
    logits = state.apply_fn(state.variables(params), batch["image"], train=False)
    return Metrics.single_from_model_output(
        loss=_objective(head, options, logits, batch["label"], params),
        accuracy=head.correct(logits, batch["label"]), mask=batch["mask"])


@jax.jit
def merge(a: Metrics, b: Metrics) -> Metrics:
    return a.merge(b)


class InFlight:
    """Keeps at most `limit` dispatched steps unfinished: `add(output)` waits for the oldest
    step's output beyond the limit. JAX dispatches asynchronously, so a loop can queue a
    whole epoch ahead of the devices; XLA's CPU client then deadlocks in its collectives
    when more than 32 computations wait for one device and its worker threads are busy
    (2 forced host devices on 2 cores: a loop of 200 train steps hung every time with 34
    or more queued, never with 30 or fewer). A few steps of lead keep the devices busy."""

    def __init__(self, limit: int = 4):
        self.limit, self._queue = limit, collections.deque()

    def add(self, output):
        self._queue.append(output)
        if len(self._queue) > self.limit:
            jax.block_until_ready(self._queue.popleft())
        return output


def to_host(metrics: Metrics) -> dict[str, float]:
    """Reads the computed metrics to the host (a device-to-host copy)."""
    return {k: float(v) for k, v in jax.device_get(metrics.compute()).items()}
