"""NASNet-A (Zoph, Vasudevan, Shlens and Le, 2018): Mobile and Large."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn import layers
from jaxcnn.errors import UserError
from jaxcnn.models import register
from jaxcnn.models.base import Classifier

_BN = dict(epsilon=1e-3, momentum=0.9997)


class NASNet(Classifier):
    """A 3x3/2 stem convolution, two reduction cells, then `num_blocks` normal cells, a
    reduction cell, `num_blocks` normal cells, a reduction cell and `num_blocks` normal
    cells (the cells found by architecture search, built from separable convolutions
    and poolings), ReLU, global average pooling and `head`. Each cell combines the
    previous two cells' outputs. NASNet-A Mobile (4 @ 1056, 224x224x3) has 5,326,716
    weights (5,289,978 parameters and 36,738 BatchNorm statistics) as
    keras.applications.NASNetMobile counts; NASNet-A Large (6 @ 4032, 331x331x3)
    88,949,818.

    The port is exact to Keras, including its zero (not -inf) padding before the
    reduction cells' poolings, which sees negative BatchNorm outputs.
    Layer names are Keras' own (e.g. `stem_conv1`, `normal_conv_1_0`,
    `separable_conv_1_normal_left1_0`, `adjust_bn_reduce_4`). Feature maps: `stem_act`,
    `reduction_<id>_act` and `normal_<id>_act` with Keras' cell ids (`stem_1`,
    `stem_2`, `0`, ..., `reduce_4`, ...).
    """
    penultimate_filters: int = 1056
    num_blocks: int = 4
    stem_block_filters: int = 32
    skip_reduction: bool = False
    filter_multiplier: int = 2

    def check_options(self) -> None:
        super().check_options()
        if self.penultimate_filters % (24 * self.filter_multiplier ** 2):
            raise UserError(f"penultimate_filters={self.penultimate_filters} must be a multiple of "
                            f"24 * filter_multiplier ** 2 = {24 * self.filter_multiplier ** 2}")

    def conv_bn(self, x, filters, conv_name, bn_name, train):
        return self.bn(self.conv(x, filters, 1, name=conv_name), train, name=bn_name, **_BN)

    def separable_block(self, x, filters, kernel_size, strides, block_id, train):
        x = self.separable_conv(self.act(x), filters, kernel_size, strides, name=f"separable_conv_1_{block_id}")
        x = self.bn(x, train, name=f"separable_conv_1_bn_{block_id}", **_BN)
        x = self.separable_conv(self.act(x), filters, kernel_size, name=f"separable_conv_2_{block_id}")
        return self.bn(x, train, name=f"separable_conv_2_bn_{block_id}", **_BN)

    def adjust(self, p, ip, filters, block_id, train):
        """Brings the previous-previous output `p` to the shape of `ip` with `filters` channels."""
        if p is None:
            return ip
        if p.shape[2] != ip.shape[2]:  # factorized reduction: two half-width paths, one shifted by a pixel
            p = self.act(p)
            p1 = self.conv(p[:, ::2, ::2], filters // 2, 1, name=f"adjust_conv_1_{block_id}")
            shifted = jnp.pad(p[:, 1:, 1:], [(0, 0), (0, 1), (0, 1), (0, 0)])
            p2 = self.conv(shifted[:, ::2, ::2], filters // 2, 1, name=f"adjust_conv_2_{block_id}")
            return self.bn(jnp.concatenate([p1, p2], axis=-1), train, name=f"adjust_bn_{block_id}", **_BN)
        if p.shape[-1] != filters:
            return self.conv_bn(self.act(p), filters, f"adjust_conv_projection_{block_id}",
                                f"adjust_bn_{block_id}", train)
        return p

    def normal_cell(self, ip, p, filters, block_id, train):
        p = self.adjust(p, ip, filters, block_id, train)
        h = self.conv_bn(self.act(ip), filters, f"normal_conv_1_{block_id}", f"normal_bn_1_{block_id}", train)
        sep = functools.partial(self.separable_block, filters=filters, strides=1, train=train)
        pool = functools.partial(layers.avg_pool, window=3, strides=1, padding="SAME")
        x1 = sep(h, kernel_size=5, block_id=f"normal_left1_{block_id}") + sep(
            p, kernel_size=3, block_id=f"normal_right1_{block_id}")
        x2 = sep(p, kernel_size=5, block_id=f"normal_left2_{block_id}") + sep(
            p, kernel_size=3, block_id=f"normal_right2_{block_id}")
        x3 = pool(h) + p
        x4 = pool(p) + pool(p)
        x5 = sep(h, kernel_size=3, block_id=f"normal_left5_{block_id}") + h
        return jnp.concatenate([p, x1, x2, x3, x4, x5], axis=-1), ip

    def reduction_cell(self, ip, p, filters, block_id, train):
        p = self.adjust(p, ip, filters, block_id, train)
        h = self.conv_bn(self.act(ip), filters, f"reduction_conv_1_{block_id}", f"reduction_bn_1_{block_id}", train)
        h3 = layers.zero_pad(h, layers.same_padding(h.shape[1:3], (3, 3), (2, 2)))
        sep = functools.partial(self.separable_block, filters=filters, train=train)
        x1 = sep(h, kernel_size=5, strides=2, block_id=f"reduction_left1_{block_id}") + sep(
            p, kernel_size=7, strides=2, block_id=f"reduction_right1_{block_id}")
        x2 = layers.max_pool(h3, 3, 2) + sep(p, kernel_size=7, strides=2, block_id=f"reduction_right2_{block_id}")
        x3 = layers.avg_pool(h3, 3, 2) + sep(p, kernel_size=5, strides=2, block_id=f"reduction_right3_{block_id}")
        x4 = layers.avg_pool(x1, 3, 1, "SAME") + x2
        x5 = sep(x1, kernel_size=3, strides=1, block_id=f"reduction_left4_{block_id}") + layers.max_pool(h3, 3, 2)
        return jnp.concatenate([x2, x3, x4, x5], axis=-1), ip

    @nn.compact
    def __call__(self, x, train: bool = False):
        self.check_options()
        filters, multiplier, n = self.penultimate_filters // 24, self.filter_multiplier, self.num_blocks
        x = self.conv(x, self.stem_block_filters, 3, 2, "valid", name="stem_conv1")
        x = self.bn(x, train, name="stem_bn1", **_BN)
        self.sow("intermediates", "stem_act", x)

        def reduction(x, p, filters, block_id):
            x, p = self.reduction_cell(x, p, filters, block_id, train)
            self.sow("intermediates", f"reduction_{block_id}_act", x)
            return x, p

        def normal_cells(x, p, filters, first_id):
            for i in range(n):
                x, p = self.normal_cell(x, p, filters, f"{first_id + i}", train)
                self.sow("intermediates", f"normal_{first_id + i}_act", x)
            return x, p

        x, p = reduction(x, None, filters // multiplier ** 2, "stem_1")
        x, p = reduction(x, p, filters // multiplier, "stem_2")
        x, p = normal_cells(x, p, filters, 0)
        for stage in (1, 2):
            x, p_reduced = reduction(x, p, filters * multiplier ** stage, f"reduce_{stage * n}")
            p = p if self.skip_reduction else p_reduced
            x, p = normal_cells(x, p, filters * multiplier ** stage, stage * n + 1)
        return self.top(self.act(x), train)


register("nasnet_mobile", NASNet)
register("nasnet_large", functools.partial(NASNet, penultimate_filters=4032, num_blocks=6, stem_block_filters=96,
                                           skip_reduction=True), input_shape=(331, 331, 3))
