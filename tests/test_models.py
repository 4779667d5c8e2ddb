"""Model registry and the foundation's models, checked against Keras."""

import keras
import numpy as np
import pytest
import jax
import jax.numpy as jnp

from jaxcnn import models
from jaxcnn.errors import UserError
from jaxcnn.train.state import count_params


def param_count(model, shape):
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))
    return count_params(variables["params"])


def keras_simple_cnn(num_classes=10):
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(32, (3, 3), activation="relu"),
        keras.layers.MaxPooling2D((2, 2)),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(num_classes),
    ])


def keras_mnist_cnn(num_classes=10):
    """The Keras mnist_cnn example: two convolutions before the pool (99.25% on MNIST)."""
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(32, (3, 3), activation="relu"),
        keras.layers.Conv2D(64, (3, 3), activation="relu"),
        keras.layers.MaxPooling2D((2, 2)),
        keras.layers.Dropout(0.25),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(num_classes),
    ])


MNIST_CNN = dict(filters=((32, 64),), dropout_rate=0.25, head_dropout_rate=0.5)


def keras_mlp(num_classes=10):
    return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(100, activation="relu"), keras.layers.Dense(num_classes)])


def test_registry_lists_the_foundation_models():
    assert {"mlp", "simple_cnn"} <= set(models.names())


@pytest.mark.parametrize("name,kwargs,keras_model,expected", [
    ("simple_cnn", {}, keras_simple_cnn, 693_962),
    ("simple_cnn", MNIST_CNN, keras_mnist_cnn, 1_199_882),
    ("mlp", {}, keras_mlp, 79_510),
])
def test_parameter_counts_equal_keras(name, kwargs, keras_model, expected):
    ours = param_count(models.create(name, num_classes=10, **kwargs), (1, 28, 28, 1))
    assert ours == keras_model().count_params() == expected


@pytest.mark.parametrize("kwargs,keras_model", [({}, keras_simple_cnn), (MNIST_CNN, keras_mnist_cnn)])
def test_simple_cnn_with_keras_weights_gives_keras_outputs(kwargs, keras_model):
    """Same weights, same logits: the conv/pool/flatten order and layouts match Keras."""
    reference = keras_model()
    x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype(np.float32)
    *convs, dense, head = [layer.get_weights() for layer in reference.layers if layer.get_weights()]
    params = {f"conv{i + 1}": {"kernel": w[0], "bias": w[1]} for i, w in enumerate(convs)}
    params |= {"dense": {"kernel": dense[0], "bias": dense[1]}, "head": {"kernel": head[0], "bias": head[1]}}
    ours = models.create("simple_cnn", num_classes=10, **kwargs).apply({"params": params}, x, train=False)
    np.testing.assert_allclose(ours, reference(x), rtol=1e-5, atol=1e-5)


def test_models_take_nhwc_and_return_logits_per_class():
    for name in ("mlp", "simple_cnn"):
        model = models.create(name, num_classes=3)
        variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), train=False)
        out = model.apply(variables, jnp.ones((5, 8, 8, 1)), train=True, rngs={"dropout": jax.random.key(1)})
        assert out.shape == (5, 3)


def test_dropout_is_active_only_in_training():
    model = models.create("simple_cnn", num_classes=4, dropout_rate=0.5)
    x = jnp.ones((2, 12, 12, 1))
    variables = model.init(jax.random.key(0), x, train=False)
    eval_a, eval_b = (model.apply(variables, x, train=False) for _ in range(2))
    np.testing.assert_array_equal(eval_a, eval_b)
    train_a = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})
    train_b = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)})
    assert not np.allclose(train_a, train_b)


def test_intermediate_feature_maps_are_exposed_by_name():
    model = models.create("simple_cnn", num_classes=10)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), train=False)
    _, state = model.apply(variables, jnp.ones((2, 28, 28, 1)), train=False, mutable=["intermediates"])
    assert state["intermediates"]["conv1_act"][0].shape == (2, 26, 26, 32)


def test_unknown_model_suggests_the_closest_name():
    with pytest.raises(UserError, match="did you mean 'simple_cnn'"):
        models.create("simple_cnm")


def test_unknown_model_option_is_a_user_error():
    with pytest.raises(UserError, match="filterz"):
        models.create("simple_cnn", filterz=3)
