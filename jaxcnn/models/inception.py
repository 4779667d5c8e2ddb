"""Inception v3 (Szegedy, Vanhoucke, Ioffe, Shlens and Wojna, 2016)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn import layers
from jaxcnn.models import register
from jaxcnn.models.base import LAYOUTS, Classifier, check_choice


class InceptionV3(Classifier):
    """A stem of five convolutions and two max poolings, eleven Inception blocks
    (`mixed0` ... `mixed10`: three 35x35, a grid reduction, four 17x17 with factorized
    7x7 convolutions, a grid reduction, two 8x8), global average pooling and `head`, on
    299x299x3. Every convolution is followed by BatchNorm and ReLU.

    `layout`: 'keras' (keras.applications.InceptionV3: BatchNorm without scale,
    epsilon 1e-3, momentum 0.99, 'same' average pooling that ignores the padding; 23,851,784
    weights: 23,817,352 parameters and 34,432 BatchNorm statistics, as Keras counts)
    or 'torch' (torchvision.models.inception_v3 without its training-only auxiliary
    classifier: BatchNorm with scale, momentum 0.9, average pooling that counts the
    padding; 23,834,568 parameters). torchvision's dropout before `fc` is 0.5: pass
    dropout_rate=0.5 for it.

    Layer names: the stem's are TF-slim's and torchvision's (`Conv2d_1a_3x3` ...
    `Conv2d_4a_3x3`), the blocks' are Keras' (`mixed0` ... `mixed10`, torchvision's
    `Mixed_5b` ... `Mixed_7c`), and branches are torchvision's, so `Mixed_5b.branch5x5_1.conv`
    is `mixed0_branch5x5_1_conv` (and `.bn` is `_bn`). Keras leaves them unnamed
    (`conv2d`, `conv2d_1`, ...): its creation order is the order of these layers.
    Feature maps: `stem_act` and `mixed<i>_act`.
    """
    layout: str = "keras"

    def check_options(self) -> None:
        super().check_options()
        check_choice("layout", self.layout, LAYOUTS)

    def conv_bn(self, x, filters, kernel_size, name, train, strides=1, padding="same"):
        keras = self.layout == "keras"
        x = self.conv(x, filters, kernel_size, strides, padding, name=f"{name}_conv")
        x = self.bn(x, train, name=f"{name}_bn", epsilon=1e-3, momentum=0.99 if keras else 0.9, use_scale=not keras)
        return self.act(x)

    def avg_pool(self, x):
        return layers.avg_pool(x, 3, 1, "SAME", count_include_pad=self.layout == "torch")

    def block_35(self, x, pool_filters, name, train):
        """Inception A: 1x1, 5x5, double 3x3 and pooling branches (torchvision's InceptionA)."""
        b1 = self.conv_bn(x, 64, 1, f"{name}_branch1x1", train)
        b5 = self.conv_bn(x, 48, 1, f"{name}_branch5x5_1", train)
        b5 = self.conv_bn(b5, 64, 5, f"{name}_branch5x5_2", train)
        b3 = self.conv_bn(x, 64, 1, f"{name}_branch3x3dbl_1", train)
        b3 = self.conv_bn(b3, 96, 3, f"{name}_branch3x3dbl_2", train)
        b3 = self.conv_bn(b3, 96, 3, f"{name}_branch3x3dbl_3", train)
        bp = self.conv_bn(self.avg_pool(x), pool_filters, 1, f"{name}_branch_pool", train)
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)

    def reduction_35(self, x, name, train):
        """Grid reduction 35 -> 17 (InceptionB)."""
        b3 = self.conv_bn(x, 384, 3, f"{name}_branch3x3", train, strides=2, padding="valid")
        bd = self.conv_bn(x, 64, 1, f"{name}_branch3x3dbl_1", train)
        bd = self.conv_bn(bd, 96, 3, f"{name}_branch3x3dbl_2", train)
        bd = self.conv_bn(bd, 96, 3, f"{name}_branch3x3dbl_3", train, strides=2, padding="valid")
        return jnp.concatenate([b3, bd, layers.max_pool(x, 3, 2)], axis=-1)

    def block_17(self, x, width, name, train):
        """Inception C: 1x1, factorized 7x7, double factorized 7x7 and pooling branches."""
        b1 = self.conv_bn(x, 192, 1, f"{name}_branch1x1", train)
        b7 = self.conv_bn(x, width, 1, f"{name}_branch7x7_1", train)
        b7 = self.conv_bn(b7, width, (1, 7), f"{name}_branch7x7_2", train)
        b7 = self.conv_bn(b7, 192, (7, 1), f"{name}_branch7x7_3", train)
        bd = self.conv_bn(x, width, 1, f"{name}_branch7x7dbl_1", train)
        bd = self.conv_bn(bd, width, (7, 1), f"{name}_branch7x7dbl_2", train)
        bd = self.conv_bn(bd, width, (1, 7), f"{name}_branch7x7dbl_3", train)
        bd = self.conv_bn(bd, width, (7, 1), f"{name}_branch7x7dbl_4", train)
        bd = self.conv_bn(bd, 192, (1, 7), f"{name}_branch7x7dbl_5", train)
        bp = self.conv_bn(self.avg_pool(x), 192, 1, f"{name}_branch_pool", train)
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)

    def reduction_17(self, x, name, train):
        """Grid reduction 17 -> 8 (InceptionD)."""
        b3 = self.conv_bn(x, 192, 1, f"{name}_branch3x3_1", train)
        b3 = self.conv_bn(b3, 320, 3, f"{name}_branch3x3_2", train, strides=2, padding="valid")
        b7 = self.conv_bn(x, 192, 1, f"{name}_branch7x7x3_1", train)
        b7 = self.conv_bn(b7, 192, (1, 7), f"{name}_branch7x7x3_2", train)
        b7 = self.conv_bn(b7, 192, (7, 1), f"{name}_branch7x7x3_3", train)
        b7 = self.conv_bn(b7, 192, 3, f"{name}_branch7x7x3_4", train, strides=2, padding="valid")
        return jnp.concatenate([b3, b7, layers.max_pool(x, 3, 2)], axis=-1)

    def block_8(self, x, name, train):
        """Inception E: 1x1, split 3x3, double split 3x3 and pooling branches."""
        b1 = self.conv_bn(x, 320, 1, f"{name}_branch1x1", train)
        b3 = self.conv_bn(x, 384, 1, f"{name}_branch3x3_1", train)
        b3 = jnp.concatenate([self.conv_bn(b3, 384, (1, 3), f"{name}_branch3x3_2a", train),
                              self.conv_bn(b3, 384, (3, 1), f"{name}_branch3x3_2b", train)], axis=-1)
        bd = self.conv_bn(x, 448, 1, f"{name}_branch3x3dbl_1", train)
        bd = self.conv_bn(bd, 384, 3, f"{name}_branch3x3dbl_2", train)
        bd = jnp.concatenate([self.conv_bn(bd, 384, (1, 3), f"{name}_branch3x3dbl_3a", train),
                              self.conv_bn(bd, 384, (3, 1), f"{name}_branch3x3dbl_3b", train)], axis=-1)
        bp = self.conv_bn(self.avg_pool(x), 192, 1, f"{name}_branch_pool", train)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)

    @nn.compact
    def __call__(self, x, train: bool = False):
        self.check_options()
        x = self.conv_bn(x, 32, 3, "Conv2d_1a_3x3", train, strides=2, padding="valid")
        x = self.conv_bn(x, 32, 3, "Conv2d_2a_3x3", train, padding="valid")
        x = layers.max_pool(self.conv_bn(x, 64, 3, "Conv2d_2b_3x3", train), 3, 2)
        x = self.conv_bn(x, 80, 1, "Conv2d_3b_1x1", train, padding="valid")
        x = layers.max_pool(self.conv_bn(x, 192, 3, "Conv2d_4a_3x3", train, padding="valid"), 3, 2)
        self.sow("intermediates", "stem_act", x)
        blocks = [lambda x, name: self.block_35(x, 32, name, train),
                  lambda x, name: self.block_35(x, 64, name, train),
                  lambda x, name: self.block_35(x, 64, name, train),
                  lambda x, name: self.reduction_35(x, name, train),
                  lambda x, name: self.block_17(x, 128, name, train),
                  lambda x, name: self.block_17(x, 160, name, train),
                  lambda x, name: self.block_17(x, 160, name, train),
                  lambda x, name: self.block_17(x, 192, name, train),
                  lambda x, name: self.reduction_17(x, name, train),
                  lambda x, name: self.block_8(x, name, train),
                  lambda x, name: self.block_8(x, name, train)]
        for i, block in enumerate(blocks):
            x = block(x, f"mixed{i}")
            self.sow("intermediates", f"mixed{i}_act", x)
        return self.top(x, train)


register("inception_v3", InceptionV3, input_shape=(299, 299, 3))
