"""The course's classic CNN: Conv-ReLU-Pool-Flatten-Dense-Dense."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn

from jaxcnn import layers
from jaxcnn.models import register
from jaxcnn.models.base import Classifier


class SimpleCNN(Classifier):
    """Conv2D(filters, kernel, act) -> MaxPool -> Flatten -> Dense(hidden, act) -> Dense.

    The Keras model of the course:

        Conv2D(32, (3, 3), activation='relu', input_shape=(28, 28, 1), num_classes=10)
        MaxPooling2D((2, 2)); Flatten(); Dense(128, activation='relu'); Dense(10)

    has 693,962 parameters on 28x28x1 with 10 classes, and so does this module.
    `filters` may be a sequence for a deeper stack (one conv+pool stage each);
    `dropout_rate` applies before each Dense layer. With `include_top=False` it returns
    the last pooled feature map (or its global `pooling`).
    """
    filters: int | Sequence[int] = 32
    kernel_size: int = 3
    padding: str = "VALID"
    pool_size: int = 2
    hidden: int = 128

    @nn.compact
    def __call__(self, x, train: bool = False):
        self.check_options()
        act = layers.activation(self.activation)
        stages = (self.filters,) if isinstance(self.filters, int) else tuple(self.filters)
        for i, filters in enumerate(stages):
            x = nn.Conv(filters, (self.kernel_size, self.kernel_size), padding=self.padding,
                        dtype=self.dtype, param_dtype=self.param_dtype, name=f"conv{i + 1}")(x)
            x = act(x)
            self.sow("intermediates", f"conv{i + 1}_act", x)
            x = layers.max_pool(x, self.pool_size)
        if not self.include_top:
            return self.pool_features(x)
        x = self.dropout(layers.flatten(x), train)
        x = act(self.dense(self.hidden, "dense")(x))
        self.sow("intermediates", "dense_act", x)
        return self.dense(self.num_classes, "head")(self.dropout(x, train))


register("simple_cnn", SimpleCNN, input_shape=(28, 28, 1), num_classes=10)
