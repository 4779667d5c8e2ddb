"""LeNet-5 (LeCun, Bottou, Bengio and Haffner, 1998)."""

from __future__ import annotations

import flax.linen as nn

from jaxcnn import layers
from jaxcnn.models import register
from jaxcnn.models.base import Classifier, check_choice


class LeNet5(Classifier):
    """C1 conv 6@5x5 -> S2 pool 2x2 -> C3 conv 16@5x5 -> S4 pool 2x2 -> C5 conv 120@5x5
    -> F6 Dense 84 -> output Dense, on 32x32 inputs: 61,706 parameters with 10 classes.

    As in the paper, S2 and S4 subsample by 2x2 average pooling and squash with tanh,
    and C3 connects to all of S2's maps (the paper's sparse connection table was a
    compromise for 1998's hardware). Options: `activation` ('tanh'; 'relu' for the modern
    variant), `pool` ('avg' or 'max'). The paper framed MNIST's 28x28 digits in a 32x32
    field: inputs smaller than `input_size` are zero-padded to it, centered. Inputs larger
    than 32x32 give C5 a feature map, flattened before F6. Output units are Dense logits
    (the paper's Euclidean RBF units predate softmax cross-entropy).
    """
    activation: str = "tanh"
    pool: str = "avg"
    input_size: int = 32

    def check_options(self) -> None:
        super().check_options()
        check_choice("pool", self.pool, ("avg", "max"))

    @nn.compact
    def __call__(self, x, train: bool = False):
        self.check_options()
        pad_h, pad_w = max(self.input_size - x.shape[1], 0), max(self.input_size - x.shape[2], 0)
        if pad_h or pad_w:
            x = layers.zero_pad(x, ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2)))
        conv_init = nn.initializers.glorot_uniform()  # Keras' default; He's is for ReLU networks
        for name, filters in (("C1", 6), ("C3", 16)):
            if self.pool == "max":
                x = self.conv_act(x, filters, 5, padding="valid", name=name, sow=name, pool=(2, 2), kernel_init=conv_init)
            else:
                x = layers.avg_pool(self.conv_act(x, filters, 5, padding="valid", name=name, sow=name,
                                                  kernel_init=conv_init), 2)
        x = self.conv_act(x, 120, 5, padding="valid", name="C5", sow="C5", kernel_init=conv_init)
        return self.flatten_top(x, (("F6", 84),), train)


register("lenet5", LeNet5, input_shape=(32, 32, 1), num_classes=10)
