"""Classification heads against Keras' losses."""

import keras
import numpy as np
import pytest
import jax.numpy as jnp

from jaxcnn.errors import UserError
from jaxcnn.heads import Head

rng = np.random.default_rng(0)


def test_auto_head_is_sigmoid_for_two_classes_softmax_otherwise():
    assert Head.create("auto", 2) == Head("sigmoid", 2) and Head.create("auto", 2).units == 1
    assert Head.create("auto", 10) == Head("softmax", 10) and Head.create("auto", 10).units == 10
    assert Head.create("softmax", 2).units == 2


def test_sigmoid_head_needs_two_classes():
    with pytest.raises(UserError, match="2 classes"):
        Head.create("sigmoid", 5)


def test_softmax_loss_equals_keras_for_integer_and_one_hot_labels():
    head = Head.create("softmax", 5)
    logits = rng.normal(size=(8, 5)).astype(np.float32)
    labels = rng.integers(0, 5, size=8)
    one_hot = np.eye(5, dtype=np.float32)[labels]
    expected = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    np.testing.assert_allclose(head.loss(jnp.asarray(logits), jnp.asarray(labels)), expected, rtol=1e-5)
    np.testing.assert_allclose(head.loss(jnp.asarray(logits), jnp.asarray(one_hot)), expected, rtol=1e-5)


def test_softmax_label_smoothing_equals_keras():
    head = Head.create("softmax", 4)
    logits = rng.normal(size=(6, 4)).astype(np.float32)
    one_hot = np.eye(4, dtype=np.float32)[rng.integers(0, 4, size=6)]
    expected = keras.losses.categorical_crossentropy(one_hot, logits, from_logits=True, label_smoothing=0.1)
    np.testing.assert_allclose(head.loss(jnp.asarray(logits), jnp.asarray(one_hot), label_smoothing=0.1),
                               expected, rtol=1e-5)


def test_sigmoid_loss_equals_keras_binary_crossentropy():
    head = Head.create("sigmoid", 2)
    logits = rng.normal(size=(10, 1)).astype(np.float32) * 3
    labels = rng.integers(0, 2, size=10)
    expected = keras.losses.binary_crossentropy(labels[:, None].astype(np.float32), logits, from_logits=True)
    np.testing.assert_allclose(head.loss(jnp.asarray(logits), jnp.asarray(labels)), expected, rtol=1e-5, atol=1e-6)


def test_probabilities_and_predictions_agree():
    for head, units in ((Head.create("softmax", 3), 3), (Head.create("sigmoid", 2), 1)):
        logits = jnp.asarray(rng.normal(size=(20, units)).astype(np.float32))
        probs = head.probabilities(logits)
        assert probs.shape == (20, head.num_classes)
        np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
        np.testing.assert_array_equal(head.predictions(logits), np.argmax(probs, -1))


def test_correct_accepts_integer_and_one_hot_labels():
    head = Head.create("softmax", 3)
    logits = jnp.array([[3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0]])
    labels = jnp.array([0, 2, 2])
    np.testing.assert_array_equal(head.correct(logits, labels), [1, 0, 1])
    np.testing.assert_array_equal(head.correct(logits, jnp.eye(3)[labels]), [1, 0, 1])
