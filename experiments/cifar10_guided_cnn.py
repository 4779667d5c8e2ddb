"""The guided CIFAR-10 CNN: three Conv-ReLU-Pool stages and a Dense layer, with augmentation.

    jaxcnn data prepare cifar10 --source ../shared/data/cifar10 --data_dir ~/tensorflow_datasets
    jaxcnn train --config experiments/cifar10_guided_cnn.py --config.data_dir ~/tensorflow_datasets --workdir runs/cifar10_guided_cnn

Conv(32) -> Pool -> Conv(64) -> Pool -> Conv(128) -> Pool ('same' 3x3 convolutions,
ReLU, 2x2 max pooling) -> Dense(256, ReLU) -> Dense(10), dropout 0.25 before the Dense
layers (620,362 parameters, about 11M multiply-adds an image); inputs normalized by the
training set's channel statistics; random crops (4-pixel padding) and horizontal flips;
Adam 1e-3 with cosine decay, batch 64, 20 epochs, 45k train / 5k validation.
Expected: >= 80% test accuracy within an hour on 2 CPU cores.
"""

from jaxcnn.config import get_config as base_config

TARGET = ">= 80% within an hour of CPU"


def get_config():
    config = base_config()
    config.model = "simple_cnn"
    config.model_kwargs.filters = (32, 64, 128)
    config.model_kwargs.padding = "SAME"
    config.model_kwargs.hidden = 256
    config.model_kwargs.dropout_rate = 0.25
    config.dataset = "cifar10"
    config.preprocess.normalize = "dataset"
    config.augment.crop_padding = 4
    config.augment.flip = True
    config.batch_size = 64
    config.epochs = 20
    config.optimizer = "adam"
    config.learning_rate = 1e-3
    config.schedule = "cosine"
    return config
