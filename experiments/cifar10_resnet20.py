"""ResNet-20 on CIFAR-10 as in He et al. 2016, section 4.2 (8.75% test error).

    jaxcnn data prepare cifar10 --source ../shared/data/cifar10 --data_dir ~/tensorflow_datasets
    jaxcnn train --config experiments/cifar10_resnet20.py --config.data_dir ~/tensorflow_datasets --workdir runs/cifar10_resnet20

The paper's recipe: 45k train / 5k validation; random crops of the image padded by 4
pixels and horizontal flips; SGD with momentum 0.9, weight decay 1e-4 (L2 on the
gradient), batch 128, learning rate 0.1 divided by 10 at 32k and 48k iterations, 64k
iterations. With 352 steps an epoch (45,000 / 128, the last batch padded) that is epochs
91 and 136 (32,032 and 47,872 steps) and 182 epochs (64,064 steps). Option A (zero-padded
identity) shortcuts, He initialization, inputs normalized by the training set's channel
mean and std (the paper subtracted the per-pixel mean).
Expected: 91.25% test accuracy (paper: 8.75% error), to within 0.5 point; needs a GPU
(`tools/bench_train_step.py` measured 1.48 s a step on the 2-core CPU: about 26 hours).
Deeper variants: experiments/cifar10_resnet{32,44,56,110}.py.
"""

from jaxcnn.config import get_config as base_config

TARGET = "91.25% +- 0.5 (He et al. 2016: 8.75% error)"
NEEDS_GPU = "64k steps of batch 128; on this CPU one step takes 0.5-0.6 s, 9-10 hours in all (tools/bench_peers.py: 213-248 img/s)"


def get_config():
    config = base_config()
    config.model = "resnet20"
    config.dataset = "cifar10"
    config.validation_split = 0.1  # 45k / 5k
    config.preprocess.normalize = "dataset"
    config.augment.crop_padding = 4
    config.augment.flip = True
    config.batch_size = 128
    config.epochs = 182
    config.optimizer = "momentum"
    config.momentum = 0.9
    config.weight_decay = 1e-4
    config.learning_rate = 0.1
    config.schedule = "piecewise"
    config.lr_boundaries = (91, 136)
    config.lr_decay = 0.1
    config.log_every_steps = 100
    config.callbacks.tensorboard.enabled = False
    return config
