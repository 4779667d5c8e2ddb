"""Optimizers and schedules by name."""

import numpy as np
import optax
import pytest
import jax
import jax.numpy as jnp

from jaxcnn import config as config_lib
from jaxcnn import optim
from jaxcnn.errors import UserError


def make_config(**kw):
    c = config_lib.get_config()
    for k, v in kw.items():
        c[k] = v
    return c


@pytest.mark.parametrize("name", config_lib.OPTIMIZERS)
def test_every_optimizer_minimizes_a_quadratic(name):
    # Adagrad's step shrinks with its growing accumulator; it needs a larger rate.
    lr = 0.5 if name == "adagrad" else 0.05
    tx, _ = optim.create(make_config(optimizer=name, learning_rate=lr), steps_per_epoch=10)
    target = jnp.array([1.0, -2.0, 3.0])
    params = jnp.zeros(3)
    loss = lambda p: jnp.sum((p - target) ** 2)
    state = tx.init(params)
    start = loss(params)
    for _ in range(100):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
    assert loss(params) < 0.2 * start


def test_piecewise_boundaries_are_in_epochs():
    lr = optim.schedule(make_config(schedule="piecewise", learning_rate=0.1, lr_boundaries=(2, 3), lr_decay=0.1),
                        steps_per_epoch=100)
    np.testing.assert_allclose([lr(0), lr(199), lr(200), lr(299), lr(300), lr(1000)],
                               [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)


def test_piecewise_without_boundaries_is_a_user_error():
    with pytest.raises(UserError, match="lr_boundaries"):
        optim.schedule(make_config(schedule="piecewise"), steps_per_epoch=10)


def test_exponential_decays_by_lr_decay_per_epoch():
    lr = optim.schedule(make_config(schedule="exponential", learning_rate=1.0, lr_decay=0.5), steps_per_epoch=10)
    np.testing.assert_allclose([lr(0), lr(10), lr(20), lr(5)], [1.0, 0.5, 0.25, 0.5 ** 0.5], rtol=1e-6)


def test_cosine_ends_at_end_factor_and_warmup_peaks():
    cos = optim.schedule(make_config(schedule="cosine", learning_rate=1.0, epochs=4, lr_end_factor=0.1),
                         steps_per_epoch=5)
    np.testing.assert_allclose([cos(0), cos(10), cos(20)], [1.0, 0.55, 0.1], rtol=1e-6)
    warm = optim.schedule(make_config(schedule="warmup_cosine", learning_rate=1.0, epochs=10, warmup_epochs=2.0),
                          steps_per_epoch=5)
    np.testing.assert_allclose([warm(0), warm(5), warm(10), warm(50)], [0.0, 0.5, 1.0, 0.0], atol=1e-6)


def test_weight_decay_is_l2_for_sgd_and_decoupled_for_adamw():
    params, grads = jnp.array([2.0]), jnp.array([0.5])
    tx, _ = optim.create(make_config(optimizer="sgd", learning_rate=0.1, weight_decay=0.01), 1)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates, -0.1 * (0.5 + 0.01 * 2.0), rtol=1e-6)
    tx, _ = optim.create(make_config(optimizer="adamw", learning_rate=0.1, weight_decay=0.01), 1)
    updates, _ = tx.update(grads, tx.init(params), params)
    # Adam's first step moves by lr (sign of the gradient); the decay adds lr * wd * w.
    np.testing.assert_allclose(updates, -0.1 * (1.0 + 0.01 * 2.0), rtol=1e-4)
