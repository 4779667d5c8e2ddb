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
        convs = [  # name, filters, kernel, stride, padding, groups, what follows the ReLU
            ("conv1", 96, 11, 4, "valid", 1, "lrn, pool"),
            ("conv2", 256, 5, 1, 2, self.groups, "lrn, pool"),
            ("conv3", 384, 3, 1, 1, 1, None),
            ("conv4", 384, 3, 1, 1, self.groups, None),
            ("conv5", 256, 3, 1, 1, self.groups, "pool"),
        ]
        for name, filters, kernel, stride, padding, groups, after in convs:
            normalized = after == "lrn, pool" and self.lrn
            x = self.conv_act(x, filters, kernel, stride, padding, name=name, sow=name, groups=groups,
                              pool=(3, 2) if after and not normalized else None)
            if normalized:
                x = layers.max_pool(layers.local_response_normalization(x), 3, 2)
        return self.flatten_top(x, (("fc6", 4096), ("fc7", 4096)), train)


register("alexnet", AlexNet, input_shape=(227, 227, 3))
