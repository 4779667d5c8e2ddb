"""Xception (Chollet, 2017): depthwise-separable convolutions with residual connections."""

from __future__ import annotations

import flax.linen as nn

from jaxcnn import layers
from jaxcnn.models import register
from jaxcnn.models.base import Classifier

_BN = dict(epsilon=1e-3, momentum=0.99)  # Keras' BatchNormalization defaults


class Xception(Classifier):
    """Entry flow (two convolutions, then blocks 2-4 of separable convolutions that halve
    the map with a strided 1x1 convolution shortcut), middle flow (blocks 5-12, 728
    channels, identity shortcuts), exit flow (blocks 13-14), global average pooling and
    `head`, on 299x299x3: 22,910,480 weights (22,855,952 parameters and 54,528 BatchNorm
    statistics), as keras.applications.Xception counts.

    Layer names are Keras': `block1_conv1`, `block1_conv1_bn`, `block<b>_sepconv<i>`,
    `block<b>_sepconv<i>_bn`; the shortcut convolutions Keras leaves unnamed (`conv2d`,
    `conv2d_1`, ... in order) are `block<b>_residual` and `block<b>_residual_bn` for
    blocks 2, 3, 4 and 13. Feature maps: `block<b>_act`, each block's output.
    """

    def conv_bn(self, x, filters, name, train, separable=True, strides=1, padding="same"):
        conv = self.separable_conv if separable else self.conv
        x = conv(x, filters, 1 if name.endswith("residual") else 3, strides, padding, name=name)
        return self.bn(x, train, name=f"{name}_bn", **_BN)

    def downsampling_block(self, x, block: int, filters: tuple[int, int], train: bool):
        """Two separable convolutions and a 3x3/2 max pooling, plus a strided 1x1 shortcut."""
        residual = self.conv_bn(x, filters[1], f"block{block}_residual", train, separable=False, strides=2)
        if block != 2:  # block 2 follows block 1's ReLU
            x = self.act(x)
        x = self.conv_bn(x, filters[0], f"block{block}_sepconv1", train)
        x = self.conv_bn(self.act(x), filters[1], f"block{block}_sepconv2", train)
        return layers.max_pool(x, 3, 2, "SAME") + residual

    @nn.compact
    def __call__(self, x, train: bool = False):
        self.check_options()
        x = self.act(self.conv_bn(x, 32, "block1_conv1", train, separable=False, strides=2, padding="valid"))
        x = self.act(self.conv_bn(x, 64, "block1_conv2", train, separable=False, padding="valid"))
        self.sow("intermediates", "block1_act", x)
        for block, filters in ((2, (128, 128)), (3, (256, 256)), (4, (728, 728))):
            x = self.downsampling_block(x, block, filters, train)
            self.sow("intermediates", f"block{block}_act", x)
        for block in range(5, 13):
            residual = x
            for i in (1, 2, 3):
                x = self.conv_bn(self.act(x), 728, f"block{block}_sepconv{i}", train)
            x = x + residual
            self.sow("intermediates", f"block{block}_act", x)
        x = self.downsampling_block(x, 13, (728, 1024), train)
        self.sow("intermediates", "block13_act", x)
        x = self.act(self.conv_bn(x, 1536, "block14_sepconv1", train))
        x = self.act(self.conv_bn(x, 2048, "block14_sepconv2", train))
        self.sow("intermediates", "block14_act", x)
        return self.top(x, train)


register("xception", Xception, input_shape=(299, 299, 3))
