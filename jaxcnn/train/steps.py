"""Pure train and eval steps. Metrics are clu collections computed on device; the
host merges and reads them once per log interval, never once per step.

(No `from __future__ import annotations` here: clu reads the Metrics annotations.)
"""


import flax
import jax
import jax.numpy as jnp
from clu import metrics as clu_metrics

from jaxcnn.heads import Head
from jaxcnn.train.state import TrainState


@flax.struct.dataclass
class Metrics(clu_metrics.Collection):
    """Running means of the per-example loss and accuracy, weighted by the batch mask."""
    loss: clu_metrics.Average.from_output("loss")
    accuracy: clu_metrics.Average.from_output("accuracy")


def _masked_mean(values, mask):
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def train_step(state: TrainState, batch: dict, rng: jax.Array, *, head: Head) -> tuple[TrainState, Metrics]:
    """One gradient step. Dropout noise is `fold_in(rng, step)`: the same run replays exactly."""
    dropout_rng = jax.random.fold_in(rng, state.step)
    has_batch_stats = bool(state.batch_stats)

    def loss_fn(params):
        out = state.apply_fn(state.variables(params), batch["image"], train=True, rngs={"dropout": dropout_rng},
                             mutable=["batch_stats"] if has_batch_stats else False)
        logits, updates = out if has_batch_stats else (out, {})
        per_example = head.loss(logits, batch["label"])
        return _masked_mean(per_example, batch["mask"]), (logits, per_example, updates)

    (_, (logits, per_example, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads)
    if has_batch_stats:
        state = state.replace(batch_stats=updates["batch_stats"])
    metrics = Metrics.single_from_model_output(
        loss=per_example, accuracy=head.correct(logits, batch["label"]), mask=batch["mask"])
    return state, metrics


def eval_step(state: TrainState, batch: dict, *, head: Head) -> Metrics:
    logits = state.apply_fn(state.variables(), batch["image"], train=False)
    return Metrics.single_from_model_output(
        loss=head.loss(logits, batch["label"]), accuracy=head.correct(logits, batch["label"]), mask=batch["mask"])


@jax.jit
def merge(a: Metrics, b: Metrics) -> Metrics:
    return a.merge(b)


def to_host(metrics: Metrics) -> dict[str, float]:
    """Reads the computed metrics to the host (a device-to-host copy)."""
    return {k: float(v) for k, v in jax.device_get(metrics.compute()).items()}
