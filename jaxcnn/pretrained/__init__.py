"""Pretrained networks: Keras and PyTorch weights imported into the model zoo.

    module, variables = jaxcnn.pretrained.from_keras("resnet50_weights_tf_dim_ordering_tf_kernels.h5", "resnet50")
    module, variables = jaxcnn.pretrained.from_torch(torch.load("lite0.pth"), "efficientnet_lite0")
    logits = module.apply(variables, images, train=False)      # images prepared as `preprocessing` says

`jaxcnn convert` writes the same as a workdir (`write_workdir`) that `jaxcnn evaluate`,
`predict` and `train` (`init_from=`) use directly.

The imported module takes RGB images in NHWC, prepared as its source was trained:
`preprocessing(arch, source)` gives the mode and the per-channel `mean` and `std` on the 0-1
scale (an image in [0, 1] is `(x - mean) / std`):

- 'caffe' (Keras' ResNet50/101/152, VGG16/19): 0-255 BGR minus the ImageNet mean. The BGR
  order is folded into the first convolution's kernel when importing, so the module takes
  RGB: mean (123.68, 116.779, 103.939) / 255, std 1/255;
- 'tf' (Keras' Xception, InceptionV3, MobileNetV2, NASNet; torchvision's inception_v3,
  whose `transform_input` does the same; EfficientNet-Lite): [-1, 1], mean 0.5, std 0.5;
- 'torch' (Keras' DenseNet; torchvision; the CIFAR ResNets): ImageNet's mean and std;
- 'none' (Keras' EfficientNet: its `normalization` layer, imported, holds the statistics): [0, 1].

ImageNet's class names ship with the package (`imagenet_classes.tsv`: WordNet id and name,
in the classes' index order; the names are torchvision 0.29's `_IMAGENET_CATEGORIES`, the
ids TFDS' imagenet2012 `labels.txt`).
"""

from __future__ import annotations

import functools
import os
import re

import numpy as np

from jaxcnn.errors import UserError
from jaxcnn.pretrained import keras as keras_lib
from jaxcnn.pretrained import torch as torch_lib
from jaxcnn.pretrained.weights import WeightMismatch, assign, template  # noqa: F401

SOURCES = ("keras", "torch")
KERAS_ARCHS = ("resnet50", "resnet101", "resnet152", "vgg16", "vgg19", "xception", "inception_v3", "densenet121",
               "densenet169", "densenet201", "mobilenet_v2", *(f"efficientnet_b{i}" for i in range(8)),
               "nasnet_mobile", "nasnet_large")
TORCH_ARCHS = torch_lib.TORCH_ARCHS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)  # Keras' imagenet_utils caffe mode (BGR 103.939, 116.779, 123.68)
MODES = {
    "caffe": (tuple(m / 255.0 for m in _CAFFE_MEAN_RGB), (1 / 255.0,) * 3),
    "tf": ((0.5,) * 3, (0.5,) * 3),
    "torch": (IMAGENET_MEAN, IMAGENET_STD),
    "none": (None, None),
}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# The first convolution of Keras' caffe-mode models: its input channels are flipped from BGR to RGB.
_CAFFE_FIRST_CONV = {"resnet50": "conv1_conv", "resnet101": "conv1_conv", "resnet152": "conv1_conv",
                     "vgg16": "block1_conv1", "vgg19": "block1_conv1"}


def preprocessing(arch: str, source: str) -> dict:
    """{'mode', 'mean', 'std'} of the inputs `arch` imported from `source` expects (0-1 scale)."""
    _check(arch, source)
    if source == "keras":
        if arch in _CAFFE_FIRST_CONV:
            mode = "caffe"
        elif arch.startswith("densenet"):
            mode = "torch"
        elif arch.startswith("efficientnet_b"):
            mode = "none"
        else:
            mode = "tf"
    else:
        mode = "tf" if arch == "inception_v3" or arch.startswith("efficientnet_lite") else "torch"
    mean, std = MODES[mode]
    return {"mode": mode, "mean": None if mean is None else list(mean), "std": None if std is None else list(std)}


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> tuple[tuple[str, str], ...]:
    """((WordNet id, name), ...) of ImageNet's 1000 classes, in index order."""
    path = os.path.join(os.path.dirname(__file__), "imagenet_classes.tsv")
    with open(path) as f:
        return tuple(tuple(line.rstrip("\n").split("\t")) for line in f if line.strip())


def class_names(num_classes: int | None, arch: str) -> list[str]:
    """ImageNet's names for 1000 classes, CIFAR-10's for a CIFAR model's 10, else class_<i>."""
    if num_classes == 1000:
        return [name for _, name in imagenet_classes()]
    if num_classes == 10 and re.fullmatch(r"resnet(20|32|44|56|110)", arch):
        return list(CIFAR10_CLASSES)
    return [f"class_{i}" for i in range(num_classes or 0)]


def _check(arch: str, source: str) -> None:
    from jaxcnn import models
    if source not in SOURCES:
        raise UserError(f"unknown source {source!r}; use one of {', '.join(SOURCES)}")
    models.input_shape(arch)  # an unknown name fails with the list of models
    archs = KERAS_ARCHS if source == "keras" else TORCH_ARCHS
    if arch not in archs:
        raise UserError(f"jaxcnn has no {source} layout for {arch}; {source} weights import into: {', '.join(archs)}")


def _build(arch: str, num_classes: int | None, input_shape, options: dict):
    """(module, options, variable shapes, layer names in call order) of `arch` with a head
    of `num_classes` (None: no top)."""
    from jaxcnn import models
    from jaxcnn.models.summary import trace_layers
    options = dict(options)
    if num_classes is None:
        options.update(include_top=False, pooling="avg")
    module = models.create(arch, num_classes=num_classes, **options)
    shape = tuple(input_shape) if input_shape else models.input_shape(arch)
    layers, variables = trace_layers(module, shape, arch)
    return module, options, variables, [layer.path[0] for layer in layers if layer.path]


class Imported:
    """What an import made: the module, its variables, the options it was built with, and
    the source's preprocessing (see `from_keras`, `from_torch`, `write_workdir`)."""

    def __init__(self, arch, source, module, variables, options, num_classes, description):
        self.arch, self.source, self.module, self.variables = arch, source, module, variables
        self.options, self.num_classes, self.description = options, num_classes, description

    @property
    def preprocessing(self) -> dict:
        return preprocessing(self.arch, self.source)


def import_keras(model_or_path, arch: str, input_shape=None) -> Imported:
    """Keras weights (a keras.Model, or a .keras/.h5 file) as `arch`; see `from_keras`."""
    _check(arch, "keras")
    layers, what = keras_lib.read(model_or_path)
    head = next((layer for layer in layers if layer.name == "predictions"), None)
    num_classes = dict(head.weights)["kernel"].shape[-1] if head is not None else None
    if input_shape is None and not isinstance(model_or_path, (str, os.PathLike)):
        shape = tuple(model_or_path.input_shape[1:])
        input_shape = shape if None not in shape else None
    module, options, shapes, order = _build(arch, num_classes, input_shape, {})
    variables = assign(keras_lib.entries(layers, shapes, order), shapes, arch, what)
    if arch in _CAFFE_FIRST_CONV:  # BGR -> RGB: the module takes RGB like every jaxcnn model
        first = variables["params"][_CAFFE_FIRST_CONV[arch]]
        first["kernel"] = np.ascontiguousarray(first["kernel"][:, :, ::-1, :])
    return Imported(arch, "keras", module, variables, options, num_classes, what)


def import_torch(state_dict_or_path, arch: str, input_shape=None) -> Imported:
    """PyTorch weights (a state dict, or a file holding one) as `arch`; see `from_torch`."""
    _check(arch, "torch")
    if isinstance(state_dict_or_path, (str, os.PathLike)):
        what = os.fspath(state_dict_or_path)
        state_dict = torch_lib.load(what)
    else:
        what, state_dict = "the state dict", {k[7:] if k.startswith("module.") else k: v
                                               for k, v in dict(state_dict_or_path).items()}
    _, options = torch_lib.family(arch, state_dict)
    head_key = {"resnet": "fc.weight", "vgg": "classifier.6.weight", "densenet": "classifier.weight",
                "inception_v3": "fc.weight", "mobilenet_v2": "classifier.1.weight",
                "efficientnet_b": "classifier.1.weight", "efficientnet_lite": "_fc.weight"}
    key = next(v for k, v in head_key.items() if arch.startswith(k))
    if re.fullmatch(r"resnet(20|32|44|56|110)", arch):
        key = "linear.weight"
    num_classes = int(np.shape(state_dict[key])[0]) if key in state_dict else None
    module, options, shapes, _ = _build(arch, num_classes, input_shape, options)
    variables = assign(torch_lib.entries(state_dict, arch, shapes), shapes, arch, what)
    return Imported(arch, "torch", module, variables, options, num_classes, what)


def from_keras(model_or_path, arch: str, input_shape=None):
    """(module, variables) of zoo model `arch` holding the weights of a Keras model (a
    keras.Model of any backend, or a `.keras`/`.h5` file). The head's size follows the
    weights (without `predictions`, a model without top, pooling 'avg'). Inputs are RGB
    prepared as `preprocessing(arch, 'keras')` says. `input_shape` (H, W, C) matters only
    for models whose weights depend on it (VGG's fc1); by default the Keras model's, or
    the architecture's."""
    imported = import_keras(model_or_path, arch, input_shape)
    return imported.module, imported.variables


def from_torch(state_dict, arch: str, input_shape=None):
    """(module, variables) of zoo model `arch` holding a PyTorch state dict (or the file
    that holds it); see the layouts in jaxcnn/pretrained/torch.py. Inputs are RGB prepared
    as `preprocessing(arch, 'torch')` says."""
    imported = import_torch(state_dict, arch, input_shape)
    return imported.module, imported.variables


def write_workdir(imported: Imported, out: str, weights: str = "") -> None:
    """Writes `out` as a workdir of the imported model: config.json (the model, its options
    and the source's preprocessing as `preprocess.normalize=custom`), dataset.json (ImageNet's
    class names and input description) and an Orbax checkpoint at step 0 in the format training
    writes. Nothing is left behind on failure; an existing non-empty `out` is refused."""
    import shutil
    import tempfile

    import jax

    from jaxcnn import config as config_lib
    from jaxcnn import models, optim
    from jaxcnn.train import checkpoint as checkpoint_lib
    from jaxcnn.train import state as state_lib
    from jaxcnn.train import workdir as workdir_lib

    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise UserError(f"{out} exists and is not empty; pass a new --out directory")
    arch, prep = imported.arch, imported.preprocessing
    image_shape = list(models.input_shape(arch))
    config = config_lib.get_config()
    config.model = arch
    config.model_kwargs = dict(imported.options)
    config.dataset = "imagenet2012" if imported.num_classes == 1000 else "cifar10" \
        if imported.num_classes == 10 and arch in ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110") \
        else "pretrained"
    config.head = "softmax"
    config.optimizer = "sgd"  # no optimizer state to store: the checkpoint is the weights (and the step)
    if prep["mean"] is not None:
        config.preprocess.normalize = "custom"
        config.preprocess.mean, config.preprocess.std = tuple(prep["mean"]), tuple(prep["std"])
    config_lib.validate(config)
    names = class_names(imported.num_classes, arch)
    info = {"name": config.dataset, "image_shape": image_shape, "class_names": names, "pixel_max": 255.0,
            **({"mean": prep["mean"], "std": prep["std"]} if prep["mean"] is not None else {}),
            "num_examples": {"train": 1, "test": 0},
            "pretrained": {"source": imported.source, "weights": os.path.abspath(weights) if weights else
                           imported.description, "preprocessing": prep["mode"]}}
    tx, _ = optim.create(config, 1, imported.variables["params"])
    state = state_lib.TrainState.create(apply_fn=imported.module.apply, params=imported.variables["params"], tx=tx,
                                        batch_stats=imported.variables.get("batch_stats", {}))
    state = jax.device_put(state)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".convert-", dir=parent)
    try:
        workdir_lib.write_json(os.path.join(tmp, "config.json"), config_lib.to_json(config))
        workdir_lib.write_json(os.path.join(tmp, "dataset.json"), info)
        checkpointer = checkpoint_lib.Checkpointer(os.path.join(tmp, checkpoint_lib.LATEST_DIR), 1)
        checkpointer.save(0, {"state": state}, {"epoch": 0, "batch": 0, "history": {}, "callbacks": {},
                                                "stopped": False, "epoch_seconds": 0.0})
        checkpointer.close()
        if os.path.isdir(out):
            os.rmdir(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def convert(source: str, arch: str, weights: str, out: str) -> Imported:
    """`jaxcnn convert`: imports `weights` of `source` ('keras' or 'torch') as `arch` into workdir `out`."""
    _check(arch, source)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise UserError(f"{out} exists and is not empty; pass a new --out directory")
    imported = import_keras(weights, arch) if source == "keras" else import_torch(weights, arch)
    write_workdir(imported, out, weights)
    return imported
