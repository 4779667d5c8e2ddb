"""VGG-16 on CIFAR-10 (about 92.6% in common reproductions, e.g. kuangliu/pytorch-cifar's 92.64%).

    jaxcnn data prepare cifar10 --source ../shared/data/cifar10 --data_dir ~/tensorflow_datasets
    jaxcnn train --config experiments/cifar10_vgg16.py --config.data_dir ~/tensorflow_datasets --workdir runs/cifar10_vgg16

Configuration D's thirteen 3x3 convolutions with BatchNorm (`batch_norm=True`,
torchvision's vgg16_bn) on 32x32 inputs, so the last map is 1x1x512; then the model's own
fc1 4096 -> fc2 4096 -> head with dropout 0.5 (the reproductions use one 512 -> 10 layer).
45k train / 5k validation, random crops (padding 4) and flips, inputs normalized by the
training set's channel statistics; SGD momentum 0.9, weight decay 5e-4, batch 128,
learning rate 0.05 with cosine decay over 200 epochs.
Expected: about 92.6% test accuracy; needs a GPU.
"""

from jaxcnn.config import get_config as base_config

TARGET = "about 92.6% (common reproductions)"
NEEDS_GPU = "200 epochs of 45k images through VGG-16 (34M parameters)"


def get_config():
    config = base_config()
    config.model = "vgg16"
    config.model_kwargs.batch_norm = True
    config.dataset = "cifar10"
    config.preprocess.normalize = "dataset"
    config.augment.crop_padding = 4
    config.augment.flip = True
    config.batch_size = 128
    config.epochs = 200
    config.optimizer = "momentum"
    config.momentum = 0.9
    config.weight_decay = 5e-4
    config.learning_rate = 0.05
    config.schedule = "cosine"
    config.log_every_steps = 100
    config.callbacks.tensorboard.enabled = False
    return config
