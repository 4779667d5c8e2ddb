"""Multilayer perceptron: flatten, hidden Dense layers, output Dense."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn

from jaxcnn import layers
from jaxcnn.errors import UserError
from jaxcnn.models import register
from jaxcnn.models.base import Classifier


class MLP(Classifier):
    """Dense(hidden[0], act) -> ... -> Dense(num_classes) on the flattened input.

    With `hidden=()` it is a single-layer perceptron (a linear classifier).
    The course's MLP (Dense(100, ReLU) -> Dense(10)) has 79,510 parameters on 28x28x1.
    With `include_top=False` it returns the last hidden layer's activations.
    """
    hidden: Sequence[int] = (100,)

    @nn.compact
    def __call__(self, x, train: bool = False):
        self.check_options()
        x = layers.flatten(x)
        for i, width in enumerate(self.hidden):
            x = self.hidden_dense(x, width, f"dense{i + 1}", train)
        if not self.include_top:
            return x
        return self.dense(self.num_classes, "head")(x)


    def check_options(self) -> None:
        super().check_options()
        if self.pooling is not None:
            raise UserError("the MLP's features are vectors already: leave pooling=None")


register("mlp", MLP, input_shape=(28, 28, 1), num_classes=10)
