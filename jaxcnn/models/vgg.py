"""VGG (Simonyan and Zisserman, 2015): configurations A, B, D and E."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn

from jaxcnn import layers
from jaxcnn.models import register
from jaxcnn.models.base import Classifier


class VGG(Classifier):
    """Five blocks of 3x3 'same' convolutions (ReLU), each closed by a 2x2 max pooling,
    then fc1 4096 -> fc2 4096 -> head on the flattened 7x7x512 map (224x224 input).

    Layer names are Keras' (`block1_conv1` ... `block5_conv3`, `fc1`, `fc2`; Keras'
    `predictions` is `head`); torchvision's `features.<i>` are the convolutions in order
    and `classifier.0/3/6` are fc1/fc2/head (its flatten order is C, H, W: importing
    fc1 permutes its rows). vgg16 has 138,357,544 parameters and vgg19 143,667,240, as in
    both frameworks. Options: `dropout_rate` after fc1 and fc2 (the paper's and
    torchvision's 0.5; Keras' model has none), `batch_norm` (torchvision's `vgg16_bn`: a
    BatchNorm `<conv>_bn` after every convolution, PyTorch's epsilon and momentum).
    """
    stage_sizes: Sequence[int] = (2, 2, 3, 3, 3)
    stage_filters: Sequence[int] = (64, 128, 256, 512, 512)
    dropout_rate: float = 0.5
    batch_norm: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        self.check_options()
        for block, (size, filters) in enumerate(zip(self.stage_sizes, self.stage_filters), start=1):
            for i in range(1, size + 1):
                name, last = f"block{block}_conv{i}", i == size
                if not self.batch_norm:
                    x = self.conv_act(x, filters, 3, name=name, sow=f"block{block}" if last else None,
                                      pool=(2, 2) if last else None)
                    continue
                x = self.conv(x, filters, 3, use_bias=True, name=name)
                x = self.act(self.bn(x, train, name=f"{name}_bn", epsilon=1e-5, momentum=0.9))
                if last:
                    self.sow("intermediates", f"block{block}_act", x)
                    x = layers.max_pool(x, 2)
        return self.flatten_top(x, (("fc1", 4096), ("fc2", 4096)), train)


for _name, _sizes in {"vgg11": (1, 1, 2, 2, 2), "vgg13": (2, 2, 2, 2, 2),
                      "vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}.items():
    register(_name, functools.partial(VGG, stage_sizes=_sizes))
