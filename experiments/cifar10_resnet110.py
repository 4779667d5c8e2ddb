"""ResNet-110 on CIFAR-10 as in He et al. 2016, section 4.2 (6.43% test error).

    jaxcnn train --config experiments/cifar10_resnet110.py --config.data_dir ~/tensorflow_datasets --workdir runs/cifar10_resnet110

experiments/cifar10_resnet20.py (the paper's recipe, 64k iterations) with the 110-layer
network.
The paper warmed ResNet-110 up at lr 0.01 until training error fell below 80% (about 400
iterations) before 0.1; this config starts at 0.1 (piecewise schedules here have no warmup).
Expected: 93.57% test accuracy (paper: 6.43% error); needs a GPU.
"""

import os

from jaxcnn.config import load

TARGET = "93.57% (He et al. 2016: 6.43% error)"
NEEDS_GPU = "64k steps of batch 128, deeper than ResNet-20, which alone takes about 0.5 s a step and 9 hours on this CPU"


def get_config():
    config = load(os.path.join(os.path.dirname(__file__), "cifar10_resnet20.py"))
    config.model = "resnet110"
    return config
