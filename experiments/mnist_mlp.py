"""The course's MLP on MNIST: Dense(100, ReLU) -> Dense(10) on the flattened image.

    jaxcnn data prepare mnist --source ../shared/data/mnist --data_dir ~/tensorflow_datasets
    jaxcnn train --config experiments/mnist_mlp.py --config.data_dir ~/tensorflow_datasets

79,510 parameters, Adam 1e-3, batch 128, 20 epochs, 54k train / 6k validation.
Expected: >= 97.5% test accuracy.
"""

from jaxcnn.config import get_config as base_config

TARGET = ">= 97.5%"


def get_config():
    config = base_config()
    config.model = "mlp"
    config.dataset = "mnist"
    config.batch_size = 128
    config.epochs = 20
    config.optimizer = "adam"
    config.learning_rate = 1e-3
    return config
