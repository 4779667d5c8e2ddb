"""XOR is not linearly separable: a perceptron (no hidden layer) cannot learn it.

    jaxcnn train --config experiments/xor_perceptron.py --workdir results/xor_perceptron

experiments/xor_mlp.py without its hidden layer: Dense(1, sigmoid) on the two inputs,
a logistic-regression perceptron, trained the same way. The best linear boundary gets 3
of the 4 points, and minimizing the cross-entropy drives the weights towards 0, where
every point gets probability 0.5.
Expected: test loss stuck near ln 2 = 0.693 and at most 75% (3 of 4) test accuracy.
"""

import os

from jaxcnn.config import load

TARGET = "<= 75%: not separable by a line"


def get_config():
    config = load(os.path.join(os.path.dirname(__file__), "xor_mlp.py"))
    config.model_kwargs.hidden = ()
    return config
