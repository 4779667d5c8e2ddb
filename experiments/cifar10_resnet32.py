"""ResNet-32 on CIFAR-10 as in He et al. 2016, section 4.2 (7.51% test error).

    jaxcnn train --config experiments/cifar10_resnet32.py --config.data_dir ~/tensorflow_datasets --workdir runs/cifar10_resnet32

experiments/cifar10_resnet20.py (the paper's recipe, 64k iterations) with the 32-layer
network.
Expected: 92.49% test accuracy (paper: 7.51% error); needs a GPU.
"""

import os

from jaxcnn.config import load

TARGET = "92.49% (He et al. 2016: 7.51% error)"
NEEDS_GPU = "64k steps of batch 128, deeper than ResNet-20, which alone takes about 0.5 s a step and 9 hours on this CPU"


def get_config():
    config = load(os.path.join(os.path.dirname(__file__), "cifar10_resnet20.py"))
    config.model = "resnet32"
    return config
