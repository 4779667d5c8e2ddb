"""AlexNet on ImageNet-shaped input (Krizhevsky et al. 2012: 40.7% top-1, 18.2% top-5
error for one network with the paper's 10-crop testing). A config only: ImageNet is not
on this machine.

    # ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in ~/tensorflow_datasets/downloads/manual/
    jaxcnn train --config experiments/imagenet_alexnet.py --config.download=true --workdir runs/imagenet_alexnet

TFDS `imagenet2012` (TFDS builds it from the manually downloaded archives; 1.28M train
images, the 50k validation images as the test split, 1% of train held out for
validation); images of every size resized to 227x227 as they are read and streamed from
disk; random zoom and flips instead of the paper's random 224 crops of 256x256 images
and PCA lighting; ImageNet normalization. The paper's optimizer: SGD momentum 0.9,
weight decay 5e-4, batch 128, learning rate 0.01 divided by 10 at epochs 30 and 60 (the
paper divided it when the validation error stopped improving, three times in about 90
epochs), 90 epochs.
Expected: about 57-60% top-1 test accuracy (single crop); needs ImageNet and GPUs.
"""

from jaxcnn.config import get_config as base_config

TARGET = "about 57-60% top-1 (paper: 59.3% with 10 crops)"
NEEDS_GPU = "config only: ImageNet (about 150 GB) is not on this machine, and 90 epochs need GPUs"


def get_config():
    config = base_config()
    config.model = "alexnet"
    config.dataset = "imagenet2012"
    config.validation_split = 0.01
    config.preprocess.resize = (227, 227)
    config.preprocess.normalize = "imagenet"
    config.augment.zoom = 0.1
    config.augment.flip = True
    config.batch_size = 128
    config.eval_batch_size = 256
    config.epochs = 90
    config.optimizer = "momentum"
    config.momentum = 0.9
    config.weight_decay = 5e-4
    config.learning_rate = 0.01
    config.schedule = "piecewise"
    config.lr_boundaries = (30, 60)
    config.lr_decay = 0.1
    config.log_every_steps = 500
    config.checkpoint_every_steps = 5000
    return config
