"""A hidden layer without a non-linearity does not help on XOR: it is still linear.

    jaxcnn train --config experiments/xor_linear_mlp.py --workdir results/xor_linear_mlp

experiments/xor_mlp.py with `activation='linear'`: Dense(8) -> Dense(1, sigmoid)
composes to one linear map of the inputs, so it can do no better than the perceptron.
Expected: test loss near ln 2 = 0.693 and at most 75% (3 of 4) test accuracy.
"""

import os

from jaxcnn.config import load

TARGET = "<= 75%: still linear"


def get_config():
    config = load(os.path.join(os.path.dirname(__file__), "xor_mlp.py"))
    config.model_kwargs.activation = "linear"
    return config
