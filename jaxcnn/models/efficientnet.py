"""EfficientNet B0-B7 (Tan and Le, 2019) and EfficientNet-Lite0-4 (TensorFlow, 2020)."""

from __future__ import annotations

import functools
import math

import flax.linen as nn

from jaxcnn import layers
from jaxcnn.models import register
from jaxcnn.models.base import LAYOUTS, Classifier, check_choice
from jaxcnn.models.mobilenet import make_divisible

# The B0 baseline (the paper's table 1): expansion, kernel, stride, input and output
# filters, repeats of each of its seven stages of MBConv blocks.
_STAGES = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
           (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1))


class EfficientNet(Classifier):
    """A 3x3/2 stem convolution, seven stages of MBConv blocks (1x1 expansion, depthwise
    convolution, squeeze-and-excitation, linear 1x1 projection; stochastic depth on the
    identity shortcuts), a 1x1 convolution to 1280 channels, global average pooling,
    dropout and `head`, all scaled by `width_coefficient` and `depth_coefficient`.
    efficientnet_b0 has 5,330,571 weights as keras.applications.EfficientNetB0 counts:
    5,288,548 parameters (torchvision's count too), 42,016 BatchNorm statistics and the
    7 statistics of the input `normalization`.

    Options: `dropout_rate` (before the head: 0.2 for B0 ... 0.5 for B7),
    `drop_connect_rate` (stochastic depth, rising linearly to 0.2 over the blocks),
    `include_preprocessing` (Keras' `Normalization` layer on the input, statistics in
    `batch_stats`: the identity until pretrained weights set ImageNet's; inputs are
    in [0, 1] as jaxcnn's pipeline scales them, so Keras' leading Rescaling(1/255) is not
    here), `lite` (EfficientNet-Lite: ReLU6, no squeeze-and-excitation, the stem's 32
    and the top's 1280 channels and the first and last stages' repeats left unscaled,
    as TensorFlow's `efficientnet_lite_builder`; lite0 has 4,652,008 parameters).

    `layout`: 'keras' pads stride-2 convolutions as TensorFlow ('same'), BatchNorm
    epsilon 1e-3, momentum 0.99; 'torch' pads symmetrically with torchvision's BatchNorm
    (epsilon 1e-5, momentum 0.9 for B0-B4; 1e-3 and 0.99 for B5-B7) and should go with
    include_preprocessing=False.
    Layer names are Keras': `normalization`, `stem_conv`, `stem_bn`, per block
    `block<stage><letter>_` + `expand_conv`, `expand_bn`, `dwconv`, `bn`, `se_reduce`,
    `se_expand`, `project_conv`, `project_bn` (e.g. `block2a_expand_conv`), then
    `top_conv`, `top_bn`. Feature maps: `stem_act`, `block<stage><letter>_act`, `top_act`.
    """
    width_coefficient: float = 1.0
    depth_coefficient: float = 1.0
    dropout_rate: float = 0.2
    drop_connect_rate: float = 0.2
    activation: str = "swish"
    include_preprocessing: bool = True
    lite: bool = False
    layout: str = "keras"

    def check_options(self) -> None:
        super().check_options()
        check_choice("layout", self.layout, LAYOUTS)

    def bn_settings(self) -> dict:
        if self.layout == "keras":
            return dict(epsilon=1e-3, momentum=0.99)
        large = self.width_coefficient >= 1.6  # torchvision's B5, B6 and B7
        return dict(epsilon=1e-3, momentum=0.99) if large else dict(epsilon=1e-5, momentum=0.9)

    def block(self, x, expansion, kernel_size, strides, filters_in, filters_out, drop_rate, name, train):
        inputs = x
        filters = filters_in * expansion
        if expansion != 1:
            x = self.act(self.conv_bn(x, filters, 1, 1, f"{name}expand_conv", f"{name}expand_bn", train))
        x = self.act(self.conv_bn(x, None, kernel_size, strides, f"{name}dwconv", f"{name}bn", train, depthwise=True))
        if not self.lite:  # squeeze-and-excitation
            se = layers.global_avg_pool(x, keepdims=True)
            se = self.act(self.conv(se, max(1, int(filters_in * 0.25)), 1, use_bias=True, name=f"{name}se_reduce"))
            se = nn.sigmoid(self.conv(se, filters, 1, use_bias=True, name=f"{name}se_expand"))
            x = x * se
        x = self.conv_bn(x, filters_out, 1, 1, f"{name}project_conv", f"{name}project_bn", train)
        if strides == 1 and filters_in == filters_out:
            x = layers.dropout(x, drop_rate, train, per="example") + inputs  # stochastic depth
        return x

    def filters(self, count: int) -> int:
        return make_divisible(count * self.width_coefficient)

    def repeats(self, stage: int) -> int:
        base = _STAGES[stage][5]
        if self.lite and stage in (0, len(_STAGES) - 1):
            return base
        return int(math.ceil(self.depth_coefficient * base))

    @nn.compact
    def __call__(self, x, train: bool = False):
        self.check_options()
        if self.include_preprocessing:
            x = layers.Normalization(name="normalization")(x)
        x = self.act(self.conv_bn(x, 32 if self.lite else self.filters(32), 3, 2, "stem_conv", "stem_bn", train))
        self.sow("intermediates", "stem_act", x)
        total = sum(self.repeats(s) for s in range(len(_STAGES)))
        b = 0
        for stage, (expansion, kernel_size, stride, filters_in, filters_out, _) in enumerate(_STAGES):
            filters_in, filters_out = self.filters(filters_in), self.filters(filters_out)
            for j in range(self.repeats(stage)):
                name = f"block{stage + 1}{chr(ord('a') + j)}_"
                x = self.block(x, expansion, kernel_size, stride if j == 0 else 1,
                               filters_in if j == 0 else filters_out, filters_out,
                               self.drop_connect_rate * b / total, name, train)
                self.sow("intermediates", f"{name}act", x)
                b += 1
        x = self.act(self.conv_bn(x, 1280 if self.lite else self.filters(1280), 1, 1, "top_conv", "top_bn", train))
        self.sow("intermediates", "top_act", x)
        return self.top(x, train)


# (width, depth, input size, dropout) of each variant, as Keras and the paper have them.
_VARIANTS = {"b0": (1.0, 1.0, 224, 0.2), "b1": (1.0, 1.1, 240, 0.2), "b2": (1.1, 1.2, 260, 0.3),
             "b3": (1.2, 1.4, 300, 0.3), "b4": (1.4, 1.8, 380, 0.4), "b5": (1.6, 2.2, 456, 0.4),
             "b6": (1.8, 2.6, 528, 0.5), "b7": (2.0, 3.1, 600, 0.5)}
# TensorFlow's efficientnet_lite_builder.
_LITE_VARIANTS = {"lite0": (1.0, 1.0, 224, 0.2), "lite1": (1.0, 1.1, 240, 0.2), "lite2": (1.1, 1.2, 260, 0.3),
                  "lite3": (1.2, 1.4, 280, 0.3), "lite4": (1.4, 1.8, 300, 0.3)}

for _name, (_width, _depth, _size, _dropout) in _VARIANTS.items():
    register(f"efficientnet_{_name}", functools.partial(
        EfficientNet, width_coefficient=_width, depth_coefficient=_depth, dropout_rate=_dropout),
        input_shape=(_size, _size, 3))
for _name, (_width, _depth, _size, _dropout) in _LITE_VARIANTS.items():
    register(f"efficientnet_{_name}", functools.partial(
        EfficientNet, width_coefficient=_width, depth_coefficient=_depth, dropout_rate=_dropout, lite=True,
        activation="relu6", include_preprocessing=False), input_shape=(_size, _size, 3))
