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
    # Adagrad's step shrinks with its growing accumulator, Adadelta's starts at sqrt(eps) times
    # the rate: they need larger rates.
    lr = {"adagrad": 0.5, "adadelta": 50.0}.get(name, 0.05)
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


# --- the update around the optimizer: against Keras' optimizers, regularizers, constraints ---

def keras_sgd_steps(kwargs, grads_per_step, init, ema=False):
    """Keras' SGD over the given gradients; returns the variables (and EMA) after each step."""
    import keras
    variables = [keras.Variable(np.asarray(x)) for x in init]
    opt = keras.optimizers.SGD(**kwargs)
    opt.build(variables)
    out = []
    for grads in grads_per_step:
        opt.apply([np.asarray(g) for g in grads], variables)
        values = [np.asarray(v) for v in variables]
        if ema:
            values += [np.asarray(a) for a in opt._model_variables_moving_average]
        out.append(values)
    return out


@pytest.mark.parametrize("name,keras_class,keras_kwargs", [
    ("sgd", "SGD", {}),
    ("momentum", "SGD", {"momentum": 0.9}),
    ("nesterov", "SGD", {"momentum": 0.9, "nesterov": True}),
    ("rmsprop", "RMSprop", {}),
    ("adagrad", "Adagrad", {}),
    ("adadelta", "Adadelta", {}),
    ("adam", "Adam", {}),
    ("adamw", "AdamW", {"weight_decay": 0.05}),
])
def test_every_optimizer_updates_as_keras_with_keras_defaults(name, keras_class, keras_kwargs):
    """Same gradients, same variables after each step: the optimizers by name are Keras'
    (defaults included: rho, epsilon, initial accumulator)."""
    import keras
    variables = [keras.Variable(np.asarray(x)) for x in INIT]
    opt = getattr(keras.optimizers, keras_class)(learning_rate=0.1, **keras_kwargs)
    opt.build(variables)
    expected = []
    for grads in GRADS:
        opt.apply([np.asarray(g) for g in grads], variables)
        expected.append([np.asarray(v) for v in variables])
    config = make_config(optimizer=name, learning_rate=0.1, weight_decay=keras_kwargs.get("weight_decay", 0.0))
    for ours, theirs in zip(our_steps(config, GRADS, INIT), expected, strict=True):
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def our_steps(config, grads_per_step, init, ema_momentum=0.0):
    params = {"dense": {"kernel": jnp.asarray(init[0]), "bias": jnp.asarray(init[1])}}
    tx, _ = optim.create(config, steps_per_epoch=10, params=params)
    state, ema, out = tx.init(params), params, []
    for step, grads in enumerate(grads_per_step):
        g = {"dense": {"kernel": jnp.asarray(grads[0]), "bias": jnp.asarray(grads[1])}}
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
        values = [np.asarray(params["dense"]["kernel"]), np.asarray(params["dense"]["bias"])]
        if ema_momentum:
            ema = optim.ema_update(ema, params, ema_momentum, step // config.optimization.gradient_accumulation_steps)
            values += [np.asarray(ema["dense"]["kernel"]), np.asarray(ema["dense"]["bias"])]
        out.append(values)
    return out


INIT = [np.array([[1.0, -2.0, 0.5], [0.5, 3.0, -1.0]], np.float32), np.array([0.1, 0.2, -0.3], np.float32)]
GRADS = [[np.random.RandomState(i).randn(2, 3).astype(np.float32) * (i + 1), np.full(3, 0.5 * (i - 2), np.float32)]
         for i in range(4)]


@pytest.mark.parametrize("keras_kwargs,section", [
    (dict(clipnorm=1.5), dict(clipnorm=1.5)),
    (dict(global_clipnorm=2.0), dict(global_clipnorm=2.0)),
    (dict(clipvalue=0.7), dict(clipvalue=0.7)),
    (dict(gradient_accumulation_steps=2), dict(gradient_accumulation_steps=2)),
    (dict(gradient_accumulation_steps=2, clipnorm=1.0), dict(gradient_accumulation_steps=2, clipnorm=1.0)),
], ids=lambda x: ",".join(f"{k}={v}" for k, v in x.items()))
def test_clipping_and_accumulation_update_as_keras(keras_kwargs, section):
    config = make_config(optimizer="sgd", learning_rate=0.1)
    config.optimization.update(section)
    expected = keras_sgd_steps(dict(learning_rate=0.1, **keras_kwargs), GRADS, INIT)
    got = our_steps(config, GRADS, INIT)
    for step, (e, g) in enumerate(zip(expected, got)):
        for a, b in zip(e, g):
            np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7, err_msg=f"step {step}")


def test_only_one_clipping_is_allowed_as_in_keras():
    config = make_config()
    config.optimization.update(clipnorm=1.0, clipvalue=0.5)
    with pytest.raises(UserError, match="only one of optimization.clipnorm"):
        optim.create(config, 10, {"w": jnp.zeros(2)})


@pytest.mark.parametrize("accumulate", [1, 2])
def test_ema_of_the_weights_is_keras_use_ema(accumulate):
    config = make_config(optimizer="sgd", learning_rate=0.1)
    config.optimization.gradient_accumulation_steps = accumulate
    keras_kwargs = dict(learning_rate=0.1, use_ema=True, ema_momentum=0.9)
    if accumulate > 1:
        keras_kwargs["gradient_accumulation_steps"] = accumulate
    expected = keras_sgd_steps(keras_kwargs, GRADS, INIT, ema=True)
    got = our_steps(config, GRADS, INIT, ema_momentum=0.9)
    for e, g in zip(expected, got):
        for a, b in zip(e, g):
            np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)


def test_accumulated_gradients_equal_one_step_on_the_whole_batch():
    """k equal-size batches accumulated = one step on their union (the loss is a mean)."""
    config = make_config(optimizer="adam", learning_rate=0.01)
    config.optimization.gradient_accumulation_steps = 3
    w0 = {"w": jnp.array([0.5, -1.0, 2.0])}
    x = jax.random.normal(jax.random.key(0), (12, 3))
    loss = lambda w, xb: jnp.mean((xb @ w["w"] - 1.0) ** 2)
    tx, _ = optim.create(config, 10, w0)
    state, w = tx.init(w0), w0
    for xb in jnp.split(x, 3):
        updates, state = tx.update(jax.grad(loss)(w, xb), state, w)
        w = optax.apply_updates(w, updates)
    single = optax.adam(0.01, eps=1e-7)
    updates, _ = single.update(jax.grad(loss)(w0, x), single.init(w0), w0)
    np.testing.assert_allclose(w["w"], optax.apply_updates(w0, updates)["w"], rtol=1e-5)


def cnn_params():
    return {"conv1": {"kernel": jax.random.normal(jax.random.key(1), (3, 3, 2, 4)), "bias": jnp.ones(4)},
            "dense": {"kernel": jax.random.normal(jax.random.key(2), (36, 5)), "bias": jnp.ones(5)},
            "head": {"kernel": jax.random.normal(jax.random.key(3), (5, 3)), "bias": jnp.ones(3)}}


def test_l1_l2_penalties_are_keras_regularizers_on_kernels_global_or_per_layer():
    import keras
    params = cnn_params()
    config = make_config()
    config.regularization.update(l1=1e-3, l2=1e-2)
    config.regularization.per_layer["head"] = {"l2": 0.5}
    config.regularization.per_layer["conv*"] = {"l1": 0.0, "l2": 0.0}
    expected = (float(keras.regularizers.L1L2(l1=1e-3, l2=1e-2)(np.asarray(params["dense"]["kernel"])))
                + float(keras.regularizers.L1L2(l1=1e-3, l2=0.5)(np.asarray(params["head"]["kernel"]))))
    penalty = optim.penalty(config, params)
    np.testing.assert_allclose(float(penalty(params)), expected, rtol=1e-6)
    assert optim.penalty(make_config(), params) is None


@pytest.mark.parametrize("per_layer,message", [
    ({"conv9": {"l2": 0.1}}, "pattern 'conv9' matches no parameter"),
    ({"dense": {"l3": 0.1}}, "unknown keys \\['l3'\\]"),
    ({"dense": {"l2": -0.1}}, "regularization.per_layer.dense.l2 must be a number >= 0"),
    ({"dense": {"l2": 0.1}, "d*": {"l2": 0.2}}, "two values of l2"),
])
def test_bad_per_layer_regularization_is_a_user_error(per_layer, message):
    config = make_config()
    for pattern, entry in per_layer.items():
        config.regularization.per_layer[pattern] = entry
    with pytest.raises(UserError, match=message):
        config_lib.validate(config)
        optim.penalty(config, cnn_params())


def test_max_norm_projects_kernels_after_each_update_as_keras_max_norm():
    import keras
    params = cnn_params()
    grads = jax.tree.map(lambda p: -10.0 * jnp.sign(p), params)  # pushes every weight outwards
    config = make_config(optimizer="sgd", learning_rate=0.1)
    config.regularization.max_norm = 2.0
    config.regularization.per_layer["head"] = {"max_norm": 0.5}
    tx, _ = optim.create(config, 10, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    got = optax.apply_updates(params, updates)
    for layer, limit in (("conv1", 2.0), ("dense", 2.0), ("head", 0.5)):
        kernel = np.asarray(params[layer]["kernel"] - 0.1 * grads[layer]["kernel"])
        axes = list(range(kernel.ndim - 1))
        expected = np.asarray(keras.constraints.MaxNorm(limit, axis=axes)(kernel))
        np.testing.assert_allclose(got[layer]["kernel"], expected, rtol=1e-5, atol=1e-6)
        assert np.all(np.linalg.norm(np.asarray(got[layer]["kernel"]).reshape(-1, kernel.shape[-1]), axis=0) <= limit + 1e-5)
        np.testing.assert_allclose(got[layer]["bias"], params[layer]["bias"] + 1.0, rtol=1e-6)  # biases unconstrained


def test_frozen_parameters_never_move_and_a_bad_pattern_is_a_user_error():
    params = cnn_params()
    config = make_config(optimizer="adamw", learning_rate=0.1, weight_decay=0.1)
    config.optimization.freeze = ("conv*", "head/bias")
    config.regularization.max_norm = 0.1
    tx, _ = optim.create(config, 10, params)
    state, p = tx.init(params), params
    for i in range(3):
        updates, state = tx.update(jax.tree.map(lambda x: jnp.full_like(x, i + 1.0), p), state, p)
        p = optax.apply_updates(p, updates)
    assert jax.tree.all(jax.tree.map(jnp.array_equal, p["conv1"], params["conv1"]))
    assert jnp.array_equal(p["head"]["bias"], params["head"]["bias"])
    assert not jnp.array_equal(p["head"]["kernel"], params["head"]["kernel"])
    assert optim.count_trainable(config.optimization.freeze, params) == 36 * 5 + 5 + 5 * 3
    config.optimization.freeze = ("conv2",)
    with pytest.raises(UserError, match="optimization.freeze pattern 'conv2' matches no parameter"):
        optim.create(config, 10, params)


def test_the_learning_rate_scale_in_the_optimizer_state_scales_the_update():
    params = {"w": jnp.array([1.0, 2.0])}
    tx, _ = optim.create(make_config(optimizer="sgd", learning_rate=0.1), 10, params)
    state = tx.init(params)
    assert float(optim.get_lr_scale(state)) == 1.0
    half = optim.set_lr_scale(state, 0.5)
    full_update, _ = tx.update({"w": jnp.ones(2)}, state, params)
    half_update, _ = tx.update({"w": jnp.ones(2)}, half, params)
    np.testing.assert_array_equal(half_update["w"], full_update["w"] * 0.5)
