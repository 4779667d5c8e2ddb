"""The course's "different CNNs on CIFAR-10": AlexNet on CIFAR-10 images upscaled to 227x227.

    jaxcnn data prepare cifar10 --source ../shared/data/cifar10 --data_dir ~/tensorflow_datasets
    jaxcnn train --config experiments/cifar10_alexnet.py --config.data_dir ~/tensorflow_datasets --workdir runs/cifar10_alexnet

Krizhevsky et al.'s network as published (`jaxcnn/models/alexnet.py`: grouped
convolutions, LRN, overlapping pooling, dropout 0.5) with a 10-way head, each 32x32 image
resized to 227x227 on the device (bilinear), random crops (padding 4, before the resize)
and flips, inputs normalized by the training set's channel statistics; SGD momentum 0.9,
weight decay 5e-4, batch 128, learning rate 0.01 divided by 10 at epochs 20 and 27, 30
epochs. The other networks of the exercise: experiments/cifar10_vgg16.py and
experiments/cifar10_resnet20.py.
Expected: about 80-85% test accuracy (upscaled-CIFAR AlexNets in course write-ups; no
paper number); needs a GPU.
"""

from jaxcnn.config import get_config as base_config

TARGET = "about 80-85% (no published number)"
NEEDS_GPU = "a 57M-parameter network on 227x227 inputs, 30 epochs of 45k images"


def get_config():
    config = base_config()
    config.model = "alexnet"
    config.dataset = "cifar10"
    config.preprocess.resize = (227, 227)
    config.preprocess.normalize = "dataset"
    config.augment.crop_padding = 4
    config.augment.flip = True
    config.batch_size = 128
    config.epochs = 30
    config.optimizer = "momentum"
    config.momentum = 0.9
    config.weight_decay = 5e-4
    config.learning_rate = 0.01
    config.schedule = "piecewise"
    config.lr_boundaries = (20, 27)
    config.lr_decay = 0.1
    config.log_every_steps = 100
    config.callbacks.tensorboard.enabled = False
    return config
