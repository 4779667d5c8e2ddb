"""CIFAR-10 by transfer learning from Keras' ImageNet ResNet-50: the base frozen with a new
10-class head, then the top stage fine-tuned at a low learning rate (the course's last step).

The weights are Keras' own download (no network here: fetch it where there is one):

    wget https://storage.googleapis.com/tensorflow/keras-applications/resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5
    jaxcnn convert --from keras --arch resnet50 --weights resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 \\
      --out runs/pretrained/resnet50_keras_notop
    jaxcnn data prepare cifar10 --source ../shared/data/cifar10/cifar-10-binary.tar.xz --data_dir ~/tensorflow_datasets
    jaxcnn train --config experiments/cifar10_resnet50_transfer.py --config.data_dir ~/tensorflow_datasets \\
      --workdir runs/cifar10_resnet50_transfer

One run of two phases: phase 1 (epochs 1-5) trains a new 10-class head on the frozen base
(its BatchNorm layers in inference mode), Adam 1e-3; phase 2 (epochs 6-10) fine-tunes stage 5
(conv5_*) and the head with a fresh Adam at 1e-5, every BatchNorm layer kept in inference
mode. `:DIR` starts from another converted workdir than runs/pretrained/resnet50_keras_notop.
(The full-model file, resnet50_weights_tf_dim_ordering_tf_kernels.h5, converts too; its
ImageNet head is replaced by the 10-class one.) Images are upsampled to 224x224, the size
the weights were trained at, and prepared in Keras' caffe mode (`jaxcnn.pretrained`: the
BGR order is folded into conv1 when importing, so the pipeline feeds RGB). This config has
not been run to the end here (a 224x224 ResNet-50 epoch of 45,000 images takes hours on 2
CPU cores). Expected: about 90% test accuracy after fine-tuning, as Keras' tutorials report
at this resolution (not measured here).
"""

from jaxcnn import pretrained
from jaxcnn.config import get_config as base_config

PRETRAINED = "runs/pretrained/resnet50_keras_notop"
TARGET = "about 90% (Keras' tutorials at 224x224)"
NEEDS_GPU = ("Keras' ImageNet weights, which cannot be downloaded here, and 10 epochs of 45k images "
             "through a 224x224 ResNet-50")


def get_config(arg: str = ""):
    config = base_config()
    config.model = "resnet50"  # Keras' layout, the converted weights' own
    config.model_kwargs.dropout_rate = 0.2  # before the new head
    config.dataset = "cifar10"
    prep = pretrained.preprocessing("resnet50", "keras")
    config.preprocess.resize = (224, 224)
    config.preprocess.normalize = "custom"
    config.preprocess.mean, config.preprocess.std = tuple(prep["mean"]), tuple(prep["std"])
    config.augment.flip = True
    config.batch_size = 64
    config.optimizer = "adam"
    config.init_from = arg or PRETRAINED
    config.optimization.freeze = ("base",)  # phase 1's values are the run's own
    config.learning_rate = 1e-3
    config.phases = (
        {"epochs": 5},
        {"epochs": 5, "learning_rate": 1e-5, "optimization.freeze": ("conv1_*", "conv2_*", "conv3_*", "conv4_*"),
         "optimization.batch_norm_inference": ("base",)},
    )
    config.epochs = 10  # the phases' sum
    return config
