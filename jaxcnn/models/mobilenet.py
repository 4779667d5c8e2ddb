"""MobileNetV2 (Sandler, Howard, Zhu, Zhmoginov and Chen, 2018)."""

from __future__ import annotations

import flax.linen as nn

from jaxcnn.models import register
from jaxcnn.models.base import LAYOUTS, Classifier, check_choice

_BN = {"keras": dict(epsilon=1e-3, momentum=0.999), "torch": dict(epsilon=1e-5, momentum=0.9)}
# (expansion, filters, repeats, first stride) per stage, the paper's table 2.
_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def make_divisible(value: float, divisor: int = 8) -> int:
    """Rounds a channel count to the nearest multiple of `divisor`, losing at most 10%
    (the rule of the TensorFlow reference code, shared by Keras and torchvision)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class MobileNetV2(Classifier):
    """A 3x3/2 convolution, 17 inverted residual blocks (1x1 expansion, 3x3 depthwise,
    linear 1x1 projection, identity shortcut where the shape allows), a 1x1 convolution
    to 1280 channels, global average pooling and `head`; ReLU6 activations. On
    224x224x3: 3,538,984 weights (3,504,872 parameters and 34,112 BatchNorm
    statistics), as keras.applications.MobileNetV2 counts; torchvision has the same
    3,504,872 parameters. `alpha` is the width multiplier.

    `layout`: 'keras' pads stride-2 convolutions as TensorFlow does ('same': the extra
    row and column after), BatchNorm epsilon 1e-3, momentum 0.999; 'torch' pads
    symmetrically, epsilon 1e-5, momentum 0.9 (torchvision also puts dropout 0.2 before
    its classifier: pass dropout_rate=0.2).
    Layer names are Keras': `Conv1`, `bn_Conv1`, `expanded_conv_depthwise`,
    `expanded_conv_depthwise_BN`, `expanded_conv_project`, `expanded_conv_project_BN`,
    `block_<i>_expand`, `_expand_BN`, `_depthwise`, `_depthwise_BN`, `_project`,
    `_project_BN` (i = 1 ... 16; torchvision's `features.<i+1>`), `Conv_1`, `Conv_1_bn`.
    Feature maps: `Conv1_act`, `expanded_conv_act`, `block_<i>_act` and `Conv_1_act`.
    """
    activation: str = "relu6"
    alpha: float = 1.0
    layout: str = "keras"

    def check_options(self) -> None:
        super().check_options()
        check_choice("layout", self.layout, LAYOUTS)

    def bn_settings(self) -> dict:
        return _BN[self.layout]

    def block(self, x, expansion, filters, strides, prefix, train):
        inputs = x
        if expansion != 1:
            x = self.act(self.conv_bn(x, expansion * x.shape[-1], 1, 1, f"{prefix}expand", f"{prefix}expand_BN", train))
        x = self.act(self.conv_bn(x, None, 3, strides, f"{prefix}depthwise", f"{prefix}depthwise_BN", train,
                                  depthwise=True))
        x = self.conv_bn(x, filters, 1, 1, f"{prefix}project", f"{prefix}project_BN", train)
        return x + inputs if strides == 1 and inputs.shape[-1] == filters else x

    @nn.compact
    def __call__(self, x, train: bool = False):
        self.check_options()
        x = self.act(self.conv_bn(x, make_divisible(32 * self.alpha), 3, 2, "Conv1", "bn_Conv1", train))
        self.sow("intermediates", "Conv1_act", x)
        block_id = 0
        for expansion, filters, repeats, stride in _STAGES:
            for i in range(repeats):
                prefix = f"block_{block_id}_" if block_id else "expanded_conv_"
                x = self.block(x, expansion, make_divisible(int(filters * self.alpha)), stride if i == 0 else 1,
                               prefix, train)
                self.sow("intermediates", f"{prefix}act", x)
                block_id += 1
        last = make_divisible(1280 * self.alpha) if self.alpha > 1.0 else 1280
        x = self.act(self.conv_bn(x, last, 1, 1, "Conv_1", "Conv_1_bn", train))
        self.sow("intermediates", "Conv_1_act", x)
        return self.top(x, train)


register("mobilenet_v2", MobileNetV2)
