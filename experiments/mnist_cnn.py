"""The course's classic CNN on MNIST, trained with Adam and light augmentation.

    jaxcnn data prepare mnist --source ../shared/data/mnist --data_dir ~/tensorflow_datasets
    jaxcnn train --config experiments/mnist_cnn.py --config.data_dir ~/tensorflow_datasets --workdir runs/mnist_cnn

Conv(32, 3x3, ReLU) -> MaxPool 2x2 -> Flatten -> Dense(128, ReLU) -> Dense(10) (693,962
parameters) with dropout 0.25 before each Dense layer; Adam 1e-3 with cosine decay,
batch 64, 15 epochs, 54k train / 6k validation; training digits are randomly rotated
(up to 8 degrees), zoomed (up to 8%) and shifted (up to 8% of the side).
Expected: >= 99.0% test accuracy. (Without augmentation, 10 epochs gave 98.89-98.95%
over seeds 2-4, and one seed in five ended at 98.70% without dropout.)
"""

from jaxcnn.config import get_config as base_config

TARGET = ">= 99.0%"


def get_config():
    config = base_config()
    config.model = "simple_cnn"
    config.model_kwargs.dropout_rate = 0.25
    config.dataset = "mnist"
    config.batch_size = 64
    config.epochs = 15
    config.optimizer = "adam"
    config.learning_rate = 1e-3
    config.schedule = "cosine"
    config.augment.rotation_degrees = 8.0
    config.augment.zoom = 0.08
    config.augment.translation = 0.08
    return config
