"""AlexNet (Krizhevsky, Sutskever and Hinton, 2012), the two-GPU model of the paper."""

from __future__ import annotations

import flax.linen as nn

from jaxcnn import layers
from jaxcnn.models import register
from jaxcnn.models.base import Classifier


class AlexNet(Classifier):
    """Five convolutions and three Dense layers on 227x227x3, 60,965,224 parameters:

        conv1 96@11x11/4 -> ReLU -> LRN -> max pool 3x3/2
        conv2 256@5x5 (2 groups) -> ReLU -> LRN -> max pool 3x3/2
        conv3 384@3x3 -> conv4 384@3x3 (2 groups) -> conv5 256@3x3 (2 groups) -> max pool 3x3/2
        fc6 4096 -> dropout -> fc7 4096 -> dropout -> head

    The groups are the paper's two GPUs: conv2, conv4 and conv5 see only the maps on
    their own GPU, conv3 and the Dense layers see both. Pooling overlaps (3x3 windows,
    stride 2) and local response normalization uses the paper's n=5, k=2, alpha=1e-4,
    beta=0.75 (`layers.local_response_normalization`). Options: `groups` (1 for the
    single-GPU model), `lrn` (False drops the normalization, as most later
    re-implementations do), `dropout_rate` (the paper's 0.5). Weights start He-initialized
    rather than the paper's N(0, 0.01), which trains only with the paper's schedule.
    """
    dropout_rate: float = 0.5
    groups: int = 2
    lrn: bool = True

    @nn.compact
    def __call__(self, x, train: bool = False):
        self.check_options()
        convs = [  # name, filters, kernel, stride, padding, groups, LRN + pool after it
            ("conv1", 96, 11, 4, "valid", 1, True),
            ("conv2", 256, 5, 1, 2, self.groups, True),
            ("conv3", 384, 3, 1, 1, 1, False),
            ("conv4", 384, 3, 1, 1, self.groups, False),
            ("conv5", 256, 3, 1, 1, self.groups, False),
        ]
        for name, filters, kernel, stride, padding, groups, normalize in convs:
            x = self.act(self.conv(x, filters, kernel, stride, padding, use_bias=True, groups=groups, name=name))
            self.sow("intermediates", f"{name}_act", x)
            if normalize:
                x = layers.local_response_normalization(x) if self.lrn else x
                x = layers.max_pool(x, 3, 2)
        x = layers.max_pool(x, 3, 2)
        return self.flatten_top(x, (("fc6", 4096), ("fc7", 4096)), train)


register("alexnet", AlexNet, input_shape=(227, 227, 3))
