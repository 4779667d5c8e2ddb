"""The Keras mnist_cnn example (keras/examples/mnist_cnn.py): 99.25% test accuracy after 12 epochs.

    jaxcnn data prepare mnist --source ../shared/data/mnist --data_dir ~/tensorflow_datasets
    jaxcnn train --config experiments/keras_mnist_cnn.py --config.data_dir ~/tensorflow_datasets --workdir runs/keras_mnist_cnn

Conv(32, 3x3, ReLU) -> Conv(64, 3x3, ReLU) -> MaxPool 2x2 -> Dropout 0.25 -> Flatten ->
Dense(128, ReLU) -> Dropout 0.5 -> Dense(10, softmax): 1,199,882 parameters, as Keras counts
them (tests/test_models.py). As the example: Adadelta with Keras' defaults (learning rate 1.0,
rho 0.95, epsilon 1e-7), batch 128, 12 epochs on all 60,000 training images (the example
validates on the test set; here nothing is held out and the test set is scored once, at the
end), pixels scaled to [0, 1], no augmentation.
Expected: >= 99.0% test accuracy (the example reports 99.25%).
"""

from jaxcnn.config import get_config as base_config

TARGET = ">= 99.0% (published 99.25%)"


def get_config():
    config = base_config()
    config.model = "simple_cnn"
    config.model_kwargs.filters = ((32, 64),)
    config.model_kwargs.dropout_rate = 0.25
    config.model_kwargs.head_dropout_rate = 0.5
    config.dataset = "mnist"
    config.validation_split = 0.0
    config.batch_size = 128
    config.epochs = 12
    config.optimizer = "adadelta"
    config.learning_rate = 1.0
    return config
