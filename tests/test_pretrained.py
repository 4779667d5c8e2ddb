"""Imported weights against their source frameworks: Keras (keras.applications with
random weights and BatchNorm statistics, run in a subprocess on its TensorFlow backend and
saved in Keras' HDF5 layout) and PyTorch (the efficientnet-lite-pytorch package's model,
a CIFAR ResNet); bad weights on the command line; transfer learning's freezing."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn as tnn
import torch.nn.functional as F

from jaxcnn import cli, config as config_lib, data as data_lib, models, optim, pretrained
from jaxcnn.errors import UserError
from jaxcnn.pretrained import transfer
from jaxcnn.train import steps
from jaxcnn.train import state as state_lib

import keras_oracle

# --- Keras --------------------------------------------------------------------------

KERAS_SCRIPT = r"""
import json, os, sys
import h5py, numpy as np
import keras
from keras.src.legacy.saving import legacy_h5_format
sys.path.insert(0, sys.argv[1])
import keras_oracle
out = sys.argv[2]
results = {}
for spec in sys.argv[3:]:
    app, module, size, top = spec.split(":")
    size, top = int(size), top == "top"
    kwargs = dict(classes=keras_oracle.ORACLE_CLASSES, classifier_activation=None) if top else dict(pooling="avg")
    model = getattr(keras.applications, app)(weights=None, input_shape=(size, size, 3), include_top=top, **kwargs)
    for layer in model.layers:  # random weights, random BatchNorm statistics
        if layer.weights:
            layer.set_weights([keras_oracle.oracle_value(layer.name, w.name, w.shape).astype(w.dtype)
                               for w in layer.weights])
    images = np.random.default_rng(size).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    inputs = getattr(keras.applications, module).preprocess_input(images.copy())
    path = os.path.join(out, f"{app}_{size}_{'top' if top else 'notop'}.h5")
    with h5py.File(path, "w") as f:  # the layout of the weight files keras.applications downloads
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    results[spec] = {"path": path, "outputs": np.asarray(model(inputs, training=False)).tolist()}
    keras.backend.clear_session()
json.dump(results, open(os.path.join(out, "results.json"), "w"))
"""


def keras_weights(tmp_path, specs: list[str]) -> dict:
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", KERAS_SCRIPT, os.path.dirname(keras_oracle.__file__),
                           str(tmp_path), *specs], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((tmp_path / "results.json").read_text())


def prepared(images: np.ndarray, arch: str, source: str) -> np.ndarray:
    """0-255 RGB images as `pretrained.preprocessing` prepares them for the imported model."""
    prep = pretrained.preprocessing(arch, source)
    x = images / 255.0
    return x if prep["mean"] is None else (x - np.asarray(prep["mean"])) / np.asarray(prep["std"])


def spec(app, module, size, top=True) -> str:
    return f"{app}:{module}:{size}:{'top' if top else 'notop'}"


def check_keras(arch, size, result):
    model, variables = pretrained.from_keras(result["path"], arch, input_shape=(size, size, 3))
    images = np.random.default_rng(size).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    outputs = jax.jit(functools.partial(model.apply, train=False))(variables, prepared(images, arch, "keras"))
    expected = np.asarray(result["outputs"])
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


# (our name, Keras application, its preprocessing module, input size): one per family.
KERAS_FAST = [("resnet50", "ResNet50", "resnet50", 32),  # caffe mode: BGR folded into conv1
              ("mobilenet_v2", "MobileNetV2", "mobilenet_v2", 32)]  # depthwise kernels, tf mode
KERAS_SLOW = [("vgg16", "VGG16", "vgg16", 32), ("xception", "Xception", "xception", 71),
              ("inception_v3", "InceptionV3", "inception_v3", 75), ("densenet121", "DenseNet121", "densenet", 32),
              ("efficientnet_b0", "EfficientNetB0", "efficientnet", 32), ("nasnet_mobile", "NASNetMobile", "nasnet", 32)]


NOTOP = ("ResNet50", "resnet50", 32, False)  # the file cifar10_resnet50_transfer.py starts from


@pytest.fixture(scope="module")
def keras_fast(tmp_path_factory):  # one Keras process for all
    return keras_weights(tmp_path_factory.mktemp("keras"), [spec(*k[1:]) for k in KERAS_FAST] + [spec(*NOTOP)])


@pytest.mark.parametrize("arch,app,module,size", KERAS_FAST, ids=[k[0] for k in KERAS_FAST])
def test_keras_weights_give_keras_outputs(arch, app, module, size, keras_fast):
    check_keras(arch, size, keras_fast[spec(app, module, size)])


@pytest.mark.slow
@pytest.mark.parametrize("arch,app,module,size", KERAS_SLOW, ids=[k[0] for k in KERAS_SLOW])
def test_keras_weights_of_every_family_give_keras_outputs(arch, app, module, size, tmp_path):
    check_keras(arch, size, keras_weights(tmp_path, [spec(app, module, size)])[spec(app, module, size)])


# --- PyTorch ------------------------------------------------------------------------

def randomized_batch_norm(net: tnn.Module, seed: int = 0) -> tnn.Module:
    """Random running statistics and affine parameters in every BatchNorm2d, in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, tnn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return net.eval()


def torch_outputs(net, images_nhwc: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2)))).numpy()


def check_torch(net, arch, images):
    expected = torch_outputs(net, images)
    model, variables = pretrained.from_torch(net.state_dict(), arch, input_shape=images.shape[1:])
    outputs = jax.jit(functools.partial(model.apply, train=False))(variables, images)
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def torchvision_models():
    """torchvision's model definitions. Its PyPI wheel's compiled operators (nms, roi_align)
    are linked against CUDA torch and cannot register beside the CPU build, which makes
    `import torchvision` fail while registering their fake kernels; the models use none of
    them, so that registration module is skipped."""
    import types
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    import torchvision.models
    return torchvision.models


# (torchvision builder, zoo arch, input side); VGG's classifier needs 224. Two run in the fast
# set; every family runs with `pytest -m slow` (8 in about 90 s on 2 cores).
TORCHVISION = [
    ("resnet50", "resnet50", 64), ("mobilenet_v2", "mobilenet_v2", 64),
    *(pytest.param(*case, marks=pytest.mark.slow) for case in [
        ("resnet18", "resnet18", 64), ("vgg11_bn", "vgg11", 224), ("vgg16", "vgg16", 224),
        ("densenet121", "densenet121", 64), ("inception_v3", "inception_v3", 107),
        ("efficientnet_b0", "efficientnet_b0", 64)]),
]


@pytest.mark.parametrize("builder,arch,size", TORCHVISION)
def test_torchvision_weights_give_torchvision_outputs(builder, arch, size):
    torch.manual_seed(0)
    kwargs = {"init_weights": False, "aux_logits": False} if builder == "inception_v3" else {}
    net = randomized_batch_norm(getattr(torchvision_models(), builder)(**kwargs))
    images = np.random.default_rng(0).normal(0, 1, (2, size, size, 3)).astype(np.float32)
    check_torch(net, arch, images)


def test_efficientnet_lite_package_weights_give_its_outputs():
    from efficientnet_lite_pytorch import EfficientNet
    torch.manual_seed(0)
    net = randomized_batch_norm(EfficientNet.from_name("efficientnet-lite0"))
    images = np.random.default_rng(0).normal(0, 1, (2, 224, 224, 3)).astype(np.float32)
    check_torch(net, "efficientnet_lite0", images)


class CifarBlock(tnn.Module):
    """The CIFAR ResNet basic block of the PyTorch reproduction whose weights are in
    ../shared/pretrained/cifar_resnet (option A: strided identity, zero channels both sides)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False), tnn.BatchNorm2d(cout)
        self.conv2, self.bn2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False), tnn.BatchNorm2d(cout)
        self.project = stride != 1 or cin != cout
        self.cout = cout

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.cout // 4, self.cout // 4)) if self.project else x
        return F.relu(y + shortcut)


class CifarResNet(tnn.Module):
    def __init__(self, n):
        super().__init__()
        self.conv1, self.bn1 = tnn.Conv2d(3, 16, 3, 1, 1, bias=False), tnn.BatchNorm2d(16)
        cin = 16
        for stage, cout in enumerate((16, 32, 64), start=1):
            blocks = []
            for i in range(n):
                blocks.append(CifarBlock(cin, cout, 2 if stage > 1 and i == 0 else 1))
                cin = cout
            setattr(self, f"layer{stage}", tnn.Sequential(*blocks))
        self.linear = tnn.Linear(64, 10)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(F.relu(self.bn1(self.conv1(x))))))
        return self.linear(F.adaptive_avg_pool2d(x, 1).flatten(1))


def test_cifar_resnet_weights_give_the_pytorch_models_outputs():
    torch.manual_seed(1)
    net = randomized_batch_norm(CifarResNet(3))
    check_torch(net, "resnet20", np.random.default_rng(1).normal(0, 1, (2, 32, 32, 3)).astype(np.float32))


# --- bad input --------------------------------------------------------------------------

def cifar_state_dict(n=3):
    torch.manual_seed(2)
    return {f"module.{k}": v for k, v in CifarResNet(n).state_dict().items()}


@pytest.mark.parametrize("arch,edit,message", [
    ("resnet20", lambda sd: sd.update({"module.conv1.weight": torch.zeros(16, 1, 3, 3)}),
     r"layer conv1 \(conv1.weight\) has shape \(3, 3, 1, 16\) in the weights and \(3, 3, 3, 16\) in resnet20"),
    ("resnet32", lambda sd: None, r"no weights for layer stage1_block4_\w+ .* and 59 more variables"),
    ("resnet20", lambda sd: sd.update({"module.layer1.3.conv1.weight": torch.zeros(16, 16, 3, 3)}),
     r"has layer1.3.conv1.weight .*which resnet20 lacks"),
])
def test_weights_that_do_not_fit_end_with_one_line_exit_2_and_nothing_written(arch, edit, message, tmp_path, capsys):
    state_dict = cifar_state_dict()
    edit(state_dict)
    path = tmp_path / "weights.pth"
    torch.save(state_dict, path)
    out = tmp_path / "converted"
    assert cli.main(["convert", "--from", "torch", "--arch", arch, "--weights", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err
    assert not out.exists() and sorted(os.listdir(tmp_path)) == ["weights.pth"]


# --- transfer learning ---------------------------------------------------------------------

def small_config(**changes):
    config = config_lib.get_config()
    config.model, config.model_kwargs = "resnet20", {"depth": 8}
    for key, value in changes.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def test_frozen_base_gets_no_update_and_its_batch_norm_runs_in_inference_mode():
    config = small_config(**{"optimizer": "sgd", "learning_rate": 0.1, "weight_decay": 0.1,
                             "optimization.freeze": ("base",)})
    model = models.create("resnet20", num_classes=3, depth=8)
    shapes = state_lib.abstract(model, (32, 32, 3))
    tx, _ = optim.create(config, 10, shapes["params"])
    state = state_lib.create(model, tx, (32, 32, 3), jax.random.key(0))
    rng = np.random.default_rng(0)  # statistics far from the batch's, so batch mode would differ
    state = state.replace(batch_stats=jax.tree.map(lambda s: jnp.asarray(rng.uniform(0.5, 2.0, s.shape), s.dtype),
                                                   state.batch_stats))
    batch = {"image": jnp.asarray(rng.normal(0, 1, (8, 32, 32, 3)), jnp.float32),
             "label": jnp.arange(8) % 3, "mask": jnp.ones(8)}
    from jaxcnn.heads import Head
    head = Head.create("softmax", 3)
    options = steps.StepOptions(frozen_stats=optim.frozen_mask(("base",), shapes["batch_stats"]),
                                batch_norm_inference=("base",))
    new, metrics = jax.jit(functools.partial(steps.train_step, head=head, options=options))(
        state, batch, jax.random.key(1))
    for path, before in jax.tree_util.tree_flatten_with_path(state.params)[0]:
        after = new.params
        for k in path:
            after = after[k.key]
        changed = not np.array_equal(before, after)
        assert changed == (path[0].key == "head"), optim.param_path(path)  # weight decay too: none on the base
    jax.tree.map(np.testing.assert_array_equal, new.batch_stats, state.batch_stats)
    eval_metrics = steps.eval_step(state, batch, head=head)  # inference mode, the same params
    np.testing.assert_allclose(steps.to_host(metrics)["loss"], steps.to_host(eval_metrics)["loss"], rtol=1e-5)
    unfrozen, _ = steps.train_step(state, batch, jax.random.key(1), head=head)  # the base in training mode
    assert not np.isclose(steps.to_host(_)["loss"], steps.to_host(eval_metrics)["loss"], rtol=1e-3)


def test_init_from_takes_every_layer_but_a_head_of_other_classes(tmp_path):
    torch.manual_seed(3)
    net = randomized_batch_norm(CifarResNet(1))
    state_dict = dict(net.state_dict())  # a depth-8 CIFAR ResNet (not registered: built with depth=8)
    rename_model = models.create("resnet20", depth=8, num_classes=10)
    shapes = pretrained.template(rename_model, (32, 32, 3))
    from jaxcnn.pretrained import torch as torch_lib
    variables = pretrained.assign(torch_lib.entries(state_dict, "resnet20", shapes), shapes, "resnet20", "test")
    imported = pretrained.Imported("resnet20", "torch", rename_model, variables, {"depth": 8}, 10, "test")
    pretrained.write_workdir(imported, str(tmp_path / "pre"))
    images = np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    split = data_lib.Split(images, np.arange(40) % 4)
    dataset = data_lib.Dataset("tiny", split, split, split, ["a", "b", "c", "d"], 255.0)
    config = small_config(init_from=str(tmp_path / "pre"), verbose=0, batch_size=8)
    from jaxcnn.train import Trainer
    trainer = Trainer(config, dataset=dataset)
    params, stats = trainer.state.params, trainer.state.batch_stats
    np.testing.assert_array_equal(params["conv1"]["kernel"], variables["params"]["conv1"]["kernel"])
    np.testing.assert_array_equal(stats["stage3_block1_bn2"]["var"], variables["batch_stats"]["stage3_block1_bn2"]["var"])
    assert params["head"]["kernel"].shape == (64, 4)


def test_resnet50_transfer_experiment_starts_from_converted_keras_notop_weights(keras_fast, tmp_path):
    result = keras_fast[spec(*NOTOP)]
    check_keras("resnet50", 32, result)  # pooled features, as Keras' include_top=False, pooling='avg'
    out = tmp_path / "resnet50_keras_notop"
    assert cli.main(["convert", "--from", "keras", "--arch", "resnet50", "--weights", result["path"],
                     "--out", str(out)]) == 0
    converted = transfer.load_weights(str(out))
    experiment = os.path.join(os.path.dirname(__file__), "..", "experiments", "cifar10_resnet50_transfer.py")
    run = config_lib.load(f"{experiment}:{out}")
    assert run.init_from == str(out)
    model = models.create(run.model, num_classes=10, **run.model_kwargs.to_dict())
    shapes = state_lib.abstract(model, (*run.preprocess.resize, 3))  # 224x224, by shapes only
    for phase, config in enumerate(config_lib.phase_configs(run)):  # head only, then stage 5 too
        labels = optim.freeze_labels(config.optimization.freeze, shapes["params"])
        assert labels["head"]["kernel"] == "trainable" and labels["conv1_conv"]["kernel"] == "frozen"
        assert (labels["conv5_block3_3_conv"]["kernel"] == "frozen") == (phase == 0)
    params, kept = transfer.merge(shapes["params"], converted["params"], str(out))
    stats, _ = transfer.merge(shapes["batch_stats"], converted["batch_stats"], str(out))
    assert kept == ["head"] and params["head"] is shapes["params"]["head"]
    np.testing.assert_array_equal(params["conv1_conv"]["kernel"], converted["params"]["conv1_conv"]["kernel"])
    np.testing.assert_array_equal(stats["conv5_block3_3_bn"]["var"], converted["batch_stats"]["conv5_block3_3_bn"]["var"])


def tiny_dataset(n=16, classes=4):
    images = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    split = data_lib.Split(images, np.arange(n) % classes)
    return data_lib.Dataset("tiny", split, split, split, [str(i) for i in range(classes)], 255.0)


def test_each_phase_trains_only_its_layers_and_runs_its_batch_norm_layers_as_told():
    """Three phases, each with other frozen layers, SGD with weight decay (so a frozen parameter
    that got any update would move): one train step in each. Oracles written out by hand: the
    layers each phase trains, and the loss of inference mode (eval_step) for a step whose
    BatchNorm layers all use their moving statistics."""
    phases = ({"epochs": 1, "optimization.freeze": "base"},
              {"epochs": 1, "optimization.freeze": ("conv1", "bn1", "stage1_*"),
               "optimization.batch_norm_inference": ("base",)},  # Keras' fine-tuning: base(x, training=False)
              {"epochs": 1, "optimization.freeze": ("stage3_block1_conv2", "stage1_block1_bn1")})
    config = small_config(**{"optimizer": "sgd", "learning_rate": 0.1, "weight_decay": 0.1, "epochs": 3,
                             "phases": phases, "batch_size": 8, "verbose": 0})
    from jaxcnn.train import Trainer
    trainer = Trainer(config, dataset=tiny_dataset())
    rng = np.random.default_rng(1)  # statistics far from the batch's, so batch mode would differ
    trainer.state = trainer.state.replace(batch_stats=jax.device_put(jax.tree.map(
        lambda s: np.asarray(rng.uniform(0.5, 2.0, s.shape), s.dtype), trainer.state.batch_stats), trainer.replicated))
    layers = set(trainer.state.params)
    batch_norms = set(trainer.state.batch_stats)
    stage1 = {name for name in layers if name.startswith("stage1_")}
    trained = [{"head"}, layers - {"conv1", "bn1"} - stage1, layers - {"stage3_block1_conv2", "stage1_block1_bn1"}]
    stats_kept = [batch_norms, batch_norms, {"stage1_block1_bn1"}]  # phase 3: the frozen one only
    batch = next(iter(trainer.train_data.batches(trainer.shuffle_rng, 0)))
    for phase, expected, kept in zip(trainer.phases, trained, stats_kept):
        trainer._enter_phase(phase)
        before = jax.device_get(trainer.state)
        eval_loss = steps.to_host(trainer._eval_step(trainer.state, batch))["loss"]
        trainer.state, metrics = trainer._train_step(trainer.state, batch, trainer.dropout_rng)
        after = jax.device_get(trainer.state)
        moved = {name for name in layers if any(not np.array_equal(a, b) for a, b in zip(
            jax.tree.leaves(after.params[name]), jax.tree.leaves(before.params[name])))}
        assert moved == expected, phase.index
        same = {name for name in batch_norms if all(np.array_equal(a, b) for a, b in zip(
            jax.tree.leaves(after.batch_stats[name]), jax.tree.leaves(before.batch_stats[name])))}
        assert same == kept, phase.index
        train_loss = steps.to_host(metrics)["loss"]
        assert np.isclose(train_loss, eval_loss, rtol=1e-5) == (kept == batch_norms), (phase.index, train_loss, eval_loss)
    assert {"stage2_block1_bn1", "stage3_block1_bn2"} <= trained[1]  # BatchNorm scale and bias trained in inference mode


def test_batch_norm_inference_patterns_must_name_a_batch_norm_layer():
    from jaxcnn.train import Trainer
    config = small_config(**{"optimization.batch_norm_inference": ("stage1_block1_conv1",), "verbose": 0})
    with pytest.raises(UserError, match="batch_norm_inference pattern 'stage1_block1_conv1' names no BatchNorm layer; "
                                        "the model's BatchNorm layers are: bn1, stage1_block1_bn1"):
        Trainer(config, dataset=tiny_dataset())
