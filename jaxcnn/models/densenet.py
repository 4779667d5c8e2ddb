"""DenseNet (Huang, Liu, van der Maaten and Weinberger, 2017): DenseNet-BC 121, 169, 201."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn import layers
from jaxcnn.models import register
from jaxcnn.models.base import LAYOUTS, Classifier, check_choice

_BN = {"keras": dict(epsilon=1.001e-5, momentum=0.99), "torch": dict(epsilon=1e-5, momentum=0.9)}


class DenseNet(Classifier):
    """The stem (7x7/2 convolution, BatchNorm, ReLU, 3x3/2 max pooling), four dense
    blocks (`blocks` layers each; a layer is BN-ReLU-1x1 conv to 4 x `growth_rate`,
    BN-ReLU-3x3 conv to `growth_rate`, concatenated to its input) joined by transitions
    (BN-ReLU-1x1 conv halving the channels, 2x2 average pooling), a final BN-ReLU,
    global average pooling and `head`. densenet121: 8,062,504 weights (7,978,856
    parameters and 83,648 BatchNorm statistics), as Keras counts; torchvision has the
    same 7,978,856 parameters.

    `layout` sets BatchNorm's epsilon and momentum to Keras' (1.001e-5, 0.99) or
    torchvision's (1e-5, 0.9); the architectures are identical. Layer names are Keras':
    `conv1_conv`, `conv1_bn`, `conv<b>_block<i>_0_bn`, `_1_conv`, `_1_bn`, `_2_conv`,
    transitions `pool<b>_bn`, `pool<b>_conv`, and the final `bn`; torchvision's
    `features.conv0`, `norm0`, `denseblock<b-1>.denselayer<i>.norm1/conv1/norm2/conv2`,
    `transition<b-1>.norm/conv` and `norm5` map onto them one to one. Feature maps:
    `conv1_act`, `conv<b>_act` (each dense block's output) and `bn_act`.
    """
    blocks: Sequence[int] = (6, 12, 24, 16)
    growth_rate: int = 32
    layout: str = "keras"

    def check_options(self) -> None:
        super().check_options()
        check_choice("layout", self.layout, LAYOUTS)

    def bn_act(self, x, name, train):
        return self.act(self.bn(x, train, name=name, **_BN[self.layout]))

    @nn.compact
    def __call__(self, x, train: bool = False):
        self.check_options()
        x = self.bn_act(self.conv(x, 64, 7, 2, 3, name="conv1_conv"), "conv1_bn", train)
        self.sow("intermediates", "conv1_act", x)
        x = layers.max_pool(layers.zero_pad(x, 1), 3, 2)
        for b, size in enumerate(self.blocks, start=2):
            for i in range(1, size + 1):
                name = f"conv{b}_block{i}"
                y = self.bn_act(x, f"{name}_0_bn", train)
                y = self.bn_act(self.conv(y, 4 * self.growth_rate, 1, name=f"{name}_1_conv"), f"{name}_1_bn", train)
                y = self.conv(y, self.growth_rate, 3, name=f"{name}_2_conv")
                x = jnp.concatenate([x, y], axis=-1)
            self.sow("intermediates", f"conv{b}_act", x)
            if b < len(self.blocks) + 1:
                x = self.bn_act(x, f"pool{b}_bn", train)
                x = layers.avg_pool(self.conv(x, x.shape[-1] // 2, 1, name=f"pool{b}_conv"), 2)
        x = self.bn_act(x, "bn", train)
        self.sow("intermediates", "bn_act", x)
        return self.top(x, train)


register("densenet121", functools.partial(DenseNet, blocks=(6, 12, 24, 16)))
register("densenet169", functools.partial(DenseNet, blocks=(6, 12, 32, 32)))
register("densenet201", functools.partial(DenseNet, blocks=(6, 12, 48, 32)))
