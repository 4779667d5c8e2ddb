"""XOR solved: one hidden layer with a non-linearity, Dense(8, tanh) -> Dense(1, sigmoid).

    jaxcnn train --config experiments/xor_mlp.py --workdir results/xor_mlp

The built-in `xor` dataset: the four points of the truth table (256 copies of each to
train on, the four once to test), binary cross-entropy on one sigmoid unit, Adam 0.01,
batch 32, 30 epochs (960 updates). Compare experiments/xor_perceptron.py (no hidden
layer) and experiments/xor_linear_mlp.py (the same hidden layer without its
non-linearity): both are linear in the inputs, and no line separates XOR's classes.
Expected: 100% test accuracy (4 of 4), test loss near 0, in seconds.
"""

from jaxcnn.config import get_config as base_config

TARGET = "4/4 points (100%)"


def get_config():
    config = base_config()
    config.model = "mlp"
    config.model_kwargs.hidden = (8,)
    config.model_kwargs.activation = "tanh"
    config.dataset = "xor"
    config.validation_split = 0.0  # the test points are the only distinct inputs there are
    config.batch_size = 32
    config.epochs = 30
    config.optimizer = "adam"
    config.learning_rate = 0.01
    config.callbacks.tensorboard.enabled = False
    return config
