"""The natural-scenes challenge from scratch: a small CNN on Intel Image Classification.

    jaxcnn data prepare folder --source ../shared/data/intel_scenes --name intel_scenes --resize 150x150 --data_dir ~/tensorflow_datasets
    jaxcnn train --config experiments/intel_scenes_cnn.py --config.data_dir ~/tensorflow_datasets --workdir runs/intel_scenes_cnn

Six classes (buildings, forest, glacier, mountain, sea, street); the subset in
../shared/data/intel_scenes has 2,400 training images (2,160 train / 240 validation
here) and 2,158 test images, 150x150 RGB, shrunk to 80x80 on the device. The course's
Conv-ReLU-Pool stages, four of them (32, 64, 128, 128 filters of 3x3) -> Dense(256,
ReLU) -> Dense(6), dropout 0.4 before the Dense layers; random flips, zoom, shifts and
brightness/contrast jitter; Adam 1e-3 with cosine decay, batch 32, 30 epochs. No
pretrained weights (the pretrained counterpart is experiments/intel_scenes_efficientnet_lite0.py).
Expected: >= 80% test accuracy (about 80% is what small CNNs trained from scratch get on
the full 14k-image set).
"""

from jaxcnn.config import get_config as base_config

TARGET = ">= 80% (small CNNs from scratch: about 80%)"


def get_config():
    config = base_config()
    config.model = "simple_cnn"
    config.model_kwargs.filters = (32, 64, 128, 128)
    config.model_kwargs.hidden = 256
    config.model_kwargs.dropout_rate = 0.4
    config.dataset = "intel_scenes"
    config.preprocess.resize = (80, 80)
    config.augment.flip = True
    config.augment.zoom = 0.15
    config.augment.translation = 0.1
    config.augment.fill = "reflect"
    config.augment.brightness = 0.1
    config.augment.contrast = 0.15
    config.batch_size = 32
    config.epochs = 30
    config.optimizer = "adam"
    config.learning_rate = 1e-3
    config.schedule = "cosine"
    return config
