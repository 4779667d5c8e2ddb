"""What every classifier family shares: its Keras-style options and layer helpers.

Keras' `applications` options mean the same here:

- `include_top=True`: the family's own classifier ends the model (named `head`, the
  layer transfer learning replaces), returning `num_classes` logits;
- `include_top=False`: the model returns its features, and `pooling` says how:
  None (the last feature map, NHWC), 'avg' or 'max' (global pooling to (N, C)).

Layers are named as in `keras.applications` wherever Keras has the model (e.g.
ResNet50's `conv2_block1_1_conv`), so Keras weights map by layer name and a base can be
frozen by name; torchvision key mappings are in each family's docstring.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn import layers
from jaxcnn.errors import UserError

POOLINGS = (None, "avg", "max")
LAYOUTS = ("keras", "torch")


def check_choice(option: str, value, allowed) -> None:
    if value not in allowed:
        raise UserError(f"{option}={value!r} is not one of {', '.join(map(repr, allowed))}; pick one of them")


class Classifier(nn.Module):
    """Fields common to all families; a family adds its own after these."""
    num_classes: int = 1000
    include_top: bool = True
    pooling: str | None = None
    activation: str = "relu"
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def dense(self, features: int, name: str) -> nn.Dense:
        return nn.Dense(features, dtype=self.dtype, param_dtype=self.param_dtype, dot_general=layers.dense_product,
                        name=name)

    def dropout(self, x, train: bool):
        return layers.dropout(x, self.dropout_rate, train)

    def act(self, x):
        return layers.activation(self.activation)(x)

    def hidden_dense(self, x, features: int, name: str, train: bool):
        """Dense -> activation (sown as `<name>_act`) -> dropout: a classifier's hidden layer."""
        x = self.act(self.dense(features, name)(x))
        self.sow("intermediates", f"{name}_act", x)
        return self.dropout(x, train)

    def conv(self, x, filters: int, kernel_size, strides=1, padding: layers.Padding = "same", *, name: str,
             use_bias: bool = False, groups: int = 1, kernel_init=layers.he_normal, split_bias: bool = False):
        """A convolution without activation (a BatchNorm usually follows, hence no bias; with
        `split_bias`, (output without bias, bias): `layers.Conv2D`)."""
        conv = layers.Conv2D(filters, kernel_size, strides, padding, use_bias=use_bias, groups=groups,
                             kernel_init=kernel_init, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
        if not split_bias:
            return conv(x)
        return conv(x, add_bias=False), conv.variables["params"]["bias"]

    def conv_act(self, x, filters: int, kernel_size, strides=1, padding: layers.Padding = "same", *, name: str,
                 sow: str | None, pool: tuple | None = None, groups: int = 1, kernel_init=layers.he_normal):
        """A convolution with bias and the model's activation, sown as `<sow>_act` (when `sow`
        is set), then the max pooling `pool` = (window, strides) if given, which the layer
        takes before its bias and activation where that is the same (`layers.Conv2D`)."""
        window, pool_strides = pool if pool is not None else (None, None)
        conv = layers.Conv2D(filters, kernel_size, strides, padding, activation=self.activation, groups=groups,
                             kernel_init=kernel_init, dtype=self.dtype, param_dtype=self.param_dtype,
                             pool_size=window, pool_strides=pool_strides, name=name)
        y = conv(x)
        if sow is not None and self.is_mutable_collection("intermediates"):
            self.sow("intermediates", f"{sow}_act", y if pool is None else conv.unpooled(x))
        return y

    def separable_conv(self, x, filters: int, kernel_size, strides=1, padding: layers.Padding = "same", *,
                       name: str, use_bias: bool = False):
        return layers.SeparableConv2D(filters, kernel_size, strides, padding, use_bias=use_bias,
                                      kernel_init=layers.he_normal, dtype=self.dtype,
                                      param_dtype=self.param_dtype, name=name)(x)

    def depthwise_conv(self, x, kernel_size, strides=1, padding: layers.Padding = "same", *, name: str,
                       use_bias: bool = False):
        return layers.DepthwiseConv2D(kernel_size, strides, padding, use_bias=use_bias,
                                      kernel_init=layers.he_normal, dtype=self.dtype,
                                      param_dtype=self.param_dtype, name=name)(x)

    def bn(self, x, train: bool, *, name: str, epsilon: float, momentum: float, use_scale: bool = True,
           shift=None):
        """BatchNorm with running statistics in `batch_stats`. `momentum` is Keras' (and
        Flax's): the running average keeps `momentum` of itself per step; PyTorch's
        `momentum=0.1` is 0.9 here."""
        return layers.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=epsilon,
                            use_scale=use_scale, dtype=self.dtype, param_dtype=self.param_dtype, name=name)(
            x, shift=shift)

    def conv_bn(self, x, filters, kernel_size, strides, name, bn_name, train, depthwise=False):
        """A convolution (`depthwise`: one filter per channel) then BatchNorm, for the families
        with a `layout` field and a `bn_settings()` method: padded 'same' as Keras, or by
        kernel_size // 2 as torchvision."""
        padding = "same" if self.layout == "keras" else kernel_size // 2
        if depthwise:
            x = self.depthwise_conv(x, kernel_size, strides, padding, name=name)
        else:
            x = self.conv(x, filters, kernel_size, strides, padding, name=name)
        return self.bn(x, train, name=bn_name, **self.bn_settings())

    def check_options(self) -> None:
        check_choice("pooling", self.pooling, POOLINGS)
        if self.include_top and self.pooling is not None:
            raise UserError(f"pooling={self.pooling!r} applies to the features only: pass include_top=False "
                            "with it (the classifier pools on its own)")
        if not 0 <= self.dropout_rate < 1:
            raise UserError(f"dropout_rate={self.dropout_rate} must be in [0, 1)")

    def pool_features(self, x):
        """The features as `pooling` asks (include_top=False)."""
        if self.pooling == "avg":
            return layers.global_avg_pool(x)
        if self.pooling == "max":
            return layers.global_max_pool(x)
        return x

    def flatten_top(self, x, hidden: tuple[tuple[str, int], ...], train: bool):
        """The classic top: flatten, the `hidden` (name, units) Dense layers, each with
        dropout, and the `head`; or, without the top, the pooled features."""
        if not self.include_top:
            return self.pool_features(x)
        x = layers.flatten(x)
        for name, features in hidden:
            x = self.hidden_dense(x, features, name, train)
        return self.dense(self.num_classes, "head")(x)

    def top(self, x, train: bool):
        """Keras' top of a modern network: global average pooling, dropout, the `head`
        Dense; or, without the top, the pooled features."""
        if not self.include_top:
            return self.pool_features(x)
        x = self.dropout(layers.global_avg_pool(x), train)
        return self.dense(self.num_classes, "head")(x)
