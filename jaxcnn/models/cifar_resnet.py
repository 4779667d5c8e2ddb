"""The CIFAR-10 ResNets of He et al. 2016, section 4.2: depth 6n + 2."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn.errors import UserError
from jaxcnn.models import register
from jaxcnn.models.base import Classifier, check_choice


class CifarResNet(Classifier):
    """A 3x3 convolution to 16 maps, three stages of n basic blocks with 16, 32 and 64
    filters on 32x32, 16x16 and 8x8 maps (the first block of stages 2 and 3 strides by
    2), global average pooling and `head`: 6n + 2 weighted layers.

    Shortcuts are the paper's option A by default: the identity, subsampled by 2 and
    padded with zero channels where the shape changes, so they add no parameters
    (resnet20: 269,722 parameters with 10 classes); the zero channels are split evenly
    on both sides of the identity, as in the widely used PyTorch reproduction whose
    weights reproduce the paper's errors. `shortcut='B'` projects with a 1x1
    convolution and BatchNorm instead. BatchNorm: epsilon 1e-5, momentum 0.9.
    Layer names: `conv1`, `bn1`, then `stage<s>_block<i>_conv<j>` / `_bn<j>` (and
    `_shortcut_conv`, `_shortcut_bn` for option B); feature maps `conv1_act` and
    `stage<s>_block<i>_act`.
    """
    depth: int = 20
    shortcut: str = "A"

    def check_options(self) -> None:
        super().check_options()
        check_choice("shortcut", self.shortcut, ("A", "B"))
        if self.depth < 8 or (self.depth - 2) % 6:
            raise UserError(f"depth={self.depth} is not 6n + 2 (20, 32, 44, 56, 110, ...); pick one that is")

    def conv_bn(self, x, filters, strides, name, train, kernel_size=3, suffix=""):
        # Symmetric padding, as the paper's Torch models (TF's 'same' pads a stride-2 conv after only).
        x = self.conv(x, filters, kernel_size, strides, kernel_size // 2, name=f"{name}conv{suffix}")
        return self.bn(x, train, name=f"{name}bn{suffix}", epsilon=1e-5, momentum=0.9)

    def block(self, x, filters: int, strides: int, name: str, train: bool):
        y = self.act(self.conv_bn(x, filters, strides, name, train, suffix="1"))
        y = self.conv_bn(y, filters, 1, name, train, suffix="2")
        if strides == 1 and x.shape[-1] == filters:
            shortcut = x
        elif self.shortcut == "A":
            extra = filters - x.shape[-1]
            zeros = (extra // 2, extra - extra // 2)
            shortcut = jnp.pad(x[:, ::strides, ::strides, :], [(0, 0), (0, 0), (0, 0), zeros])
        else:
            shortcut = self.conv_bn(x, filters, strides, f"{name}shortcut_", train, kernel_size=1)
        return self.act(y + shortcut)

    @nn.compact
    def __call__(self, x, train: bool = False):
        self.check_options()
        x = self.act(self.bn(self.conv(x, 16, 3, 1, 1, name="conv1"), train, name="bn1", epsilon=1e-5, momentum=0.9))
        self.sow("intermediates", "conv1_act", x)
        blocks = (self.depth - 2) // 6
        for stage, filters in enumerate((16, 32, 64), start=1):
            for i in range(1, blocks + 1):
                name = f"stage{stage}_block{i}"
                x = self.block(x, filters, 2 if stage > 1 and i == 1 else 1, f"{name}_", train)
                self.sow("intermediates", f"{name}_act", x)
        return self.top(x, train)


for _depth in (20, 32, 44, 56, 110):
    register(f"resnet{_depth}", functools.partial(CifarResNet, depth=_depth), input_shape=(32, 32, 3),
             num_classes=10)
