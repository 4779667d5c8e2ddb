"""The embedded default: the course's classic CNN on scikit-learn's 8x8 digits.

    jaxcnn train                                   # this run, offline
    jaxcnn train --config experiments/digits_cnn.py

Conv(32, 3x3, ReLU) -> MaxPool 2x2 -> Flatten -> Dense(128, ReLU) -> Dense(10), Adam 1e-3,
batch 16, 30 epochs; 1,437 train images (142 of them, 10% of each class, held out for validation), 360 test.
Expected: >= 97% test accuracy in well under a minute on 2 CPU cores.
"""

from jaxcnn.config import get_config  # noqa: F401  (the default lives in the package)

TARGET = ">= 97%"
