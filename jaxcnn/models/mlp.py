"""Multilayer perceptron: flatten, hidden Dense layers, output Dense."""

from collections.abc import Sequence

import flax.linen as nn

from jaxcnn import layers
from jaxcnn.models import register
from jaxcnn.models.base import Classifier


class MLP(Classifier):
    """Dense(hidden[0], act) -> ... -> Dense(num_classes) on the flattened input.

    With `hidden=()` it is a single-layer perceptron (a linear classifier).
    The course's MLP (Dense(100, ReLU) -> Dense(10)) has 79,510 parameters on 28x28x1.
    """
    hidden: Sequence[int] = (100,)

    @nn.compact
    def __call__(self, x, train: bool = False):
        act = layers.activation(self.activation)
        x = layers.flatten(x)
        for i, width in enumerate(self.hidden):
            x = act(self.dense(width, f"dense{i + 1}")(x))
            self.sow("intermediates", f"dense{i + 1}_act", x)
            x = self.dropout(x, train)
        return self.dense(self.num_classes, "head")(x)


register("mlp", MLP)
