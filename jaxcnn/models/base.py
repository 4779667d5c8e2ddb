"""What every classifier family shares: its Keras-style options and dense layers."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class Classifier(nn.Module):
    """Fields common to all families; a family adds its own after these."""
    num_classes: int = 1000
    activation: str = "relu"
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def dense(self, features: int, name: str) -> nn.Dense:
        return nn.Dense(features, dtype=self.dtype, param_dtype=self.param_dtype, name=name)

    def dropout(self, x, train: bool):
        return nn.Dropout(self.dropout_rate, deterministic=not train)(x) if self.dropout_rate else x
