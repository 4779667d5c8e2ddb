"""Classification heads: how logits become a loss, probabilities and predictions.

- softmax (multi-class): `num_classes` logits, softmax cross-entropy; labels are
  integer class ids or one-hot / soft rows.
- sigmoid (binary): one logit, binary cross-entropy with the label as the target;
  probabilities are reported for both classes, `[1 - p, p]`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from jaxcnn.errors import UserError


@dataclasses.dataclass(frozen=True)
class Head:
    kind: str  # 'softmax' or 'sigmoid'
    num_classes: int

    @classmethod
    def create(cls, kind: str, num_classes: int) -> Head:
        """`kind='auto'` picks one sigmoid unit for two classes, softmax otherwise."""
        if kind == "auto":
            kind = "sigmoid" if num_classes == 2 else "softmax"
        if kind == "sigmoid" and num_classes != 2:
            raise UserError(f"a sigmoid (binary) head needs 2 classes, the dataset has {num_classes}; "
                            "use --config.head=softmax")
        if kind not in ("softmax", "sigmoid"):
            raise UserError(f"unknown head {kind!r}; use auto, softmax or sigmoid")
        return cls(kind, num_classes)

    @property
    def units(self) -> int:
        """Number of output units the model needs."""
        return 1 if self.kind == "sigmoid" else self.num_classes

    def loss(self, logits, labels, label_smoothing: float = 0.0):
        """Per-example loss. `labels`: integer ids (N,) or one-hot/soft rows (N, C)."""
        logits = logits.astype(jnp.float32)
        if self.kind == "sigmoid":
            target = labels[:, 1] if labels.ndim == 2 else labels
            target = target.astype(jnp.float32)
            if label_smoothing:
                target = target * (1 - label_smoothing) + 0.5 * label_smoothing
            return optax.sigmoid_binary_cross_entropy(logits[:, 0], target)
        if labels.ndim == 2:
            target = labels.astype(jnp.float32)
        else:
            target = jax.nn.one_hot(labels, self.num_classes)
        if label_smoothing:
            target = optax.smooth_labels(target, label_smoothing)
        if labels.ndim == 1 and not label_smoothing:
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        return optax.softmax_cross_entropy(logits, target)

    def probabilities(self, logits):
        """Class probabilities, shape (N, num_classes)."""
        logits = logits.astype(jnp.float32)
        if self.kind == "sigmoid":
            p = jax.nn.sigmoid(logits[:, 0])
            return jnp.stack([1 - p, p], axis=-1)
        return jax.nn.softmax(logits, axis=-1)

    def predictions(self, logits):
        """Predicted class ids, shape (N,)."""
        if self.kind == "sigmoid":
            return (logits[:, 0] > 0).astype(jnp.int32)
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)

    def correct(self, logits, labels):
        """1.0 where the prediction equals the (integer or one-hot) label."""
        ids = jnp.argmax(labels, axis=-1) if labels.ndim == 2 else labels
        return (self.predictions(logits) == ids).astype(jnp.float32)
