"""ResNet (He, Zhang, Ren and Sun, 2016) for ImageNet: 18, 34, 50, 101 and 152 layers."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn

from jaxcnn import layers
from jaxcnn.models import register
from jaxcnn.models.base import LAYOUTS, Classifier, check_choice

# BatchNorm epsilon and momentum (Flax/Keras meaning) of each framework's ResNet.
_BN = {"keras": (1.001e-5, 0.99), "torch": (1e-5, 0.9)}


class ResNet(Classifier):
    """The stem (7x7/2 convolution, BatchNorm, ReLU, 3x3/2 max pooling), four stages of
    residual blocks (`stage_sizes`; basic blocks of two 3x3 convolutions, or bottlenecks
    1x1 -> 3x3 -> 1x1 with 4x expansion), global average pooling and `head`.

    `layout` picks the framework whose weights the model can take, the two differing in
    details that change parameter counts or outputs:

    - 'keras' (keras.applications.ResNet50/101/152): convolutions have biases, a
      bottleneck strides in its first 1x1 convolution, BatchNorm epsilon 1.001e-5,
      momentum 0.99. resnet50: 25,636,712 weights (25,583,592 parameters and 53,120
      BatchNorm statistics), as Keras counts.
    - 'torch' (torchvision.models.resnet*, "ResNet v1.5"): no convolution biases, the
      stride sits on the 3x3 convolution, epsilon 1e-5, momentum 0.9 (PyTorch's 0.1).
      resnet50: 25,557,032 parameters, as torchvision counts.

    resnet18 and resnet34 default to 'torch' (Keras has no such model).
    Layer names are Keras': `conv1_conv`, `conv1_bn`, and per block `conv<stage>_block<i>_`
    + `1_conv`, `1_bn`, `2_conv`, `2_bn`, (`3_conv`, `3_bn`,) and `0_conv`, `0_bn` for a
    projection shortcut; torchvision's `conv1`, `bn1`, `layer<stage-1>.<i-1>.conv<j>`,
    `.bn<j>`, `.downsample.0/1` and `fc` map onto them one to one. Feature maps:
    `conv1_act` and `conv<stage>_block<i>_act`.
    """
    stage_sizes: Sequence[int] = (3, 4, 6, 3)
    bottleneck: bool = True
    layout: str = "keras"

    def check_options(self) -> None:
        super().check_options()
        check_choice("layout", self.layout, LAYOUTS)

    def conv_bn(self, x, filters, kernel_size, strides, padding, name, train):
        epsilon, momentum = _BN[self.layout]
        if self.layout == "keras":  # Keras' convolutions have a bias: BatchNorm takes it as a shift
            x, bias = self.conv(x, filters, kernel_size, strides, padding, use_bias=True, split_bias=True,
                                name=f"{name}_conv")
        else:
            x, bias = self.conv(x, filters, kernel_size, strides, padding, name=f"{name}_conv"), None
        return self.bn(x, train, name=f"{name}_bn", epsilon=epsilon, momentum=momentum, shift=bias)

    def block(self, x, filters: int, strides: int, name: str, train: bool):
        out_filters = 4 * filters if self.bottleneck else filters
        if strides != 1 or x.shape[-1] != out_filters:
            shortcut = self.conv_bn(x, out_filters, 1, strides, "valid", f"{name}_0", train)
        else:
            shortcut = x
        if self.bottleneck:
            first_stride, middle_stride = (strides, 1) if self.layout == "keras" else (1, strides)
            y = self.act(self.conv_bn(x, filters, 1, first_stride, "valid", f"{name}_1", train))
            y = self.act(self.conv_bn(y, filters, 3, middle_stride, 1, f"{name}_2", train))
            y = self.conv_bn(y, out_filters, 1, 1, "valid", f"{name}_3", train)
        else:
            y = self.act(self.conv_bn(x, filters, 3, strides, 1, f"{name}_1", train))
            y = self.conv_bn(y, filters, 3, 1, 1, f"{name}_2", train)
        return self.act(y + shortcut)

    @nn.compact
    def __call__(self, x, train: bool = False):
        self.check_options()
        x = self.act(self.conv_bn(x, 64, 7, 2, 3, "conv1", train))
        self.sow("intermediates", "conv1_act", x)
        x = layers.max_pool(layers.zero_pad(x, 1), 3, 2)  # Keras pads with zeros (ReLU outputs: as -inf)
        for stage, blocks in enumerate(self.stage_sizes):
            for i in range(blocks):
                name = f"conv{stage + 2}_block{i + 1}"
                x = self.block(x, 64 * 2 ** stage, 2 if stage > 0 and i == 0 else 1, name, train)
                self.sow("intermediates", f"{name}_act", x)
        return self.top(x, train)


register("resnet18", functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), bottleneck=False, layout="torch"))
register("resnet34", functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), bottleneck=False, layout="torch"))
register("resnet50", functools.partial(ResNet, stage_sizes=(3, 4, 6, 3)))
register("resnet101", functools.partial(ResNet, stage_sizes=(3, 4, 23, 3)))
register("resnet152", functools.partial(ResNet, stage_sizes=(3, 8, 36, 3)))
