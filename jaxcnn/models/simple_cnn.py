"""The course's classic CNN: Conv-ReLU-Pool-Flatten-Dense-Dense."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn

from jaxcnn import layers
from jaxcnn.errors import UserError
from jaxcnn.models import register
from jaxcnn.models.base import Classifier


class SimpleCNN(Classifier):
    """Conv2D(filters, kernel, act) -> MaxPool -> Flatten -> Dense(hidden, act) -> Dense.

    The Keras model of the course:

        Conv2D(32, (3, 3), activation='relu', input_shape=(28, 28, 1), num_classes=10)
        MaxPooling2D((2, 2)); Flatten(); Dense(128, activation='relu'); Dense(10)

    has 693,962 parameters on 28x28x1 with 10 classes, and so does this module.
    `filters` may be a sequence for a deeper stack, one stage per item: an int is one conv
    then a pool, a sequence of ints is that many convs then one pool. `dropout_rate`
    applies before each Dense layer, `head_dropout_rate` (when set) before the last one.
    Keras' mnist_cnn example (1,199,882 parameters) is
    `filters=((32, 64),), dropout_rate=0.25, head_dropout_rate=0.5`.
    With `include_top=False` it returns the last pooled feature map (or its global `pooling`).
    """
    filters: int | Sequence[int | Sequence[int]] = 32
    kernel_size: int = 3
    padding: str = "VALID"
    pool_size: int = 2
    hidden: int = 128
    head_dropout_rate: float | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        self.check_options()
        if self.head_dropout_rate is not None and not 0 <= self.head_dropout_rate < 1:
            raise UserError(f"head_dropout_rate={self.head_dropout_rate} must be in [0, 1)")
        stages = (self.filters,) if isinstance(self.filters, int) else tuple(self.filters)
        convs = 0
        for stage in stages:
            stage = (stage,) if isinstance(stage, int) else tuple(stage)
            for i, filters in enumerate(stage):
                convs += 1
                pool = (self.pool_size, None) if i == len(stage) - 1 else None
                x = self.conv_act(x, filters, self.kernel_size, padding=self.padding, name=f"conv{convs}",
                                  sow=f"conv{convs}", pool=pool, kernel_init=nn.initializers.lecun_normal())
        if not self.include_top:
            return self.pool_features(x)
        x = self.dropout(layers.flatten(x), train)
        x = self.act(self.dense(self.hidden, "dense")(x))
        self.sow("intermediates", "dense_act", x)
        head_rate = self.dropout_rate if self.head_dropout_rate is None else self.head_dropout_rate
        return self.dense(self.num_classes, "head")(layers.dropout(x, head_rate, train))


register("simple_cnn", SimpleCNN, input_shape=(28, 28, 1), num_classes=10)
