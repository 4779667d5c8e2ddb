"""The model zoo against independent oracles.

- keras.applications itself (tests/keras_oracle.py, in a subprocess): parameter counts,
  BatchNorm settings, and the logits of each family's model with the same weights;
- the published parameter counts of every variant (Keras, torchvision, timm, the papers),
  by `jax.eval_shape` (nothing is allocated);
- real forward and backward passes on small inputs.
"""

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
import optax
import pytest

from jaxcnn import cli, models, pretrained
from jaxcnn.errors import UserError
from jaxcnn.models.summary import trace_layers
from jaxcnn.pretrained import keras as pretrained_keras
from jaxcnn.train.state import count_params

import keras_oracle

ISSUE_NAMES = (
    "mlp simple_cnn lenet5 alexnet vgg11 vgg13 vgg16 vgg19 resnet18 resnet34 resnet50 resnet101 resnet152 "
    "resnet20 resnet32 resnet44 resnet56 resnet110 xception inception_v3 densenet121 densenet169 densenet201 "
    "mobilenet_v2 " + " ".join(f"efficientnet_b{i}" for i in range(8)) + " "
    + " ".join(f"efficientnet_lite{i}" for i in range(5)) + " nasnet_mobile").split()


@functools.lru_cache(maxsize=None)
def shapes(name: str, options: tuple = (), input_shape: tuple | None = None, num_classes: int | None = None):
    """(params, batch_stats) counts and the traced layers of a model, by eval_shape."""
    model = models.create(name, num_classes=num_classes, **dict(options))
    layers, variables = trace_layers(model, input_shape or models.input_shape(name))
    return count_params(variables.get("params", {})), count_params(variables.get("batch_stats", {})), layers, variables


def test_every_model_the_issue_names_is_registered():
    assert set(ISSUE_NAMES) <= set(models.names())


# --- published parameter counts ------------------------------------------------
# "all": every weight, as keras.Model.count_params() counts (BatchNorm statistics and
# EfficientNet's input Normalization included); "params": trainable parameters, as
# torchvision's and timm's sum(p.numel() for p in model.parameters()) and the papers count.
KERAS = "all"
PARAMS = "params"
PUBLISHED = [  # name, options, what is counted, count, source
    ("resnet50", {}, KERAS, 25_636_712, "keras.applications.ResNet50"),
    ("resnet101", {}, KERAS, 44_707_176, "keras.applications.ResNet101"),
    ("resnet152", {}, KERAS, 60_419_944, "keras.applications.ResNet152"),
    ("vgg16", {}, KERAS, 138_357_544, "keras.applications.VGG16"),
    ("vgg19", {}, KERAS, 143_667_240, "keras.applications.VGG19"),
    ("xception", {}, KERAS, 22_910_480, "keras.applications.Xception"),
    ("inception_v3", {}, KERAS, 23_851_784, "keras.applications.InceptionV3"),
    ("densenet121", {}, KERAS, 8_062_504, "keras.applications.DenseNet121"),
    ("densenet169", {}, KERAS, 14_307_880, "keras.applications.DenseNet169"),
    ("densenet201", {}, KERAS, 20_242_984, "keras.applications.DenseNet201"),
    ("mobilenet_v2", {}, KERAS, 3_538_984, "keras.applications.MobileNetV2"),
    ("efficientnet_b0", {}, KERAS, 5_330_571, "keras.applications.EfficientNetB0"),
    ("efficientnet_b1", {}, KERAS, 7_856_239, "keras.applications.EfficientNetB1"),
    ("efficientnet_b2", {}, KERAS, 9_177_569, "keras.applications.EfficientNetB2"),
    ("efficientnet_b3", {}, KERAS, 12_320_535, "keras.applications.EfficientNetB3"),
    ("efficientnet_b4", {}, KERAS, 19_466_823, "keras.applications.EfficientNetB4"),
    ("efficientnet_b5", {}, KERAS, 30_562_527, "keras.applications.EfficientNetB5"),
    ("efficientnet_b6", {}, KERAS, 43_265_143, "keras.applications.EfficientNetB6"),
    ("efficientnet_b7", {}, KERAS, 66_658_687, "keras.applications.EfficientNetB7"),
    ("nasnet_mobile", {}, KERAS, 5_326_716, "keras.applications.NASNetMobile"),
    ("nasnet_large", {}, KERAS, 88_949_818, "keras.applications.NASNetLarge"),
    ("resnet18", {}, PARAMS, 11_689_512, "torchvision.models.resnet18"),
    ("resnet34", {}, PARAMS, 21_797_672, "torchvision.models.resnet34"),
    ("resnet50", {"layout": "torch"}, PARAMS, 25_557_032, "torchvision.models.resnet50"),
    ("resnet101", {"layout": "torch"}, PARAMS, 44_549_160, "torchvision.models.resnet101"),
    ("resnet152", {"layout": "torch"}, PARAMS, 60_192_808, "torchvision.models.resnet152"),
    ("vgg11", {}, PARAMS, 132_863_336, "torchvision.models.vgg11"),
    ("vgg13", {}, PARAMS, 133_047_848, "torchvision.models.vgg13"),
    ("vgg16", {"batch_norm": True}, PARAMS, 138_365_992, "torchvision.models.vgg16_bn"),
    ("vgg19", {"batch_norm": True}, PARAMS, 143_678_248, "torchvision.models.vgg19_bn"),
    ("densenet121", {"layout": "torch"}, PARAMS, 7_978_856, "torchvision.models.densenet121"),
    ("densenet201", {"layout": "torch"}, PARAMS, 20_013_928, "torchvision.models.densenet201"),
    ("inception_v3", {"layout": "torch"}, PARAMS, 23_834_568, "torchvision inception_v3(aux_logits=False)"),
    ("mobilenet_v2", {"layout": "torch"}, PARAMS, 3_504_872, "torchvision.models.mobilenet_v2"),
    ("efficientnet_b0", {"layout": "torch", "include_preprocessing": False}, PARAMS, 5_288_548,
     "torchvision.models.efficientnet_b0"),
    ("efficientnet_b7", {"layout": "torch", "include_preprocessing": False}, PARAMS, 66_347_960,
     "torchvision.models.efficientnet_b7"),
    ("efficientnet_lite0", {}, PARAMS, 4_652_008, "timm tf_efficientnet_lite0"),
    ("efficientnet_lite1", {}, PARAMS, 5_416_680, "timm tf_efficientnet_lite1"),
    ("efficientnet_lite2", {}, PARAMS, 6_092_072, "timm tf_efficientnet_lite2"),
    ("efficientnet_lite3", {}, PARAMS, 8_197_096, "timm tf_efficientnet_lite3"),
    ("efficientnet_lite4", {}, PARAMS, 13_006_568, "timm tf_efficientnet_lite4"),
    ("alexnet", {}, PARAMS, 60_965_224, "Krizhevsky et al. 2012, two-GPU model, 227x227x3"),
    ("lenet5", {}, PARAMS, 61_706, "LeCun et al. 1998, 32x32x1, 10 classes"),
    ("resnet20", {}, PARAMS, 269_722, "He et al. 2016, section 4.2, option A, 10 classes"),
    ("resnet32", {}, PARAMS, 464_154, "He et al. 2016"),
    ("resnet44", {}, PARAMS, 658_586, "He et al. 2016"),
    ("resnet56", {}, PARAMS, 853_018, "He et al. 2016"),
    ("resnet110", {}, PARAMS, 1_727_962, "He et al. 2016"),
]


@pytest.mark.parametrize("name,options,counted,expected,source", PUBLISHED,
                         ids=[f"{p[0]}{'-' + '-'.join(f'{k}={v}' for k, v in p[1].items()) if p[1] else ''}"
                              for p in PUBLISHED])
def test_parameter_counts_equal_the_published_ones(name, options, counted, expected, source):
    params, state, layers, _ = shapes(name, tuple(options.items()))
    assert (params + state if counted == KERAS else params) == expected, source
    assert layers[-1].path == ("head",) and layers[-1].kind == "Dense"  # the layer transfer learning replaces


def test_cifar_and_mnist_models_default_to_ten_classes_and_imagenet_ones_to_1000():
    assert models.default_num_classes("resnet20") == models.default_num_classes("lenet5") == 10
    assert models.create("resnet20").num_classes == 10
    assert models.create("resnet50").num_classes == 1000
    assert models.input_shape("inception_v3") == (299, 299, 3) and models.input_shape("alexnet") == (227, 227, 3)


# --- keras.applications as the oracle --------------------------------------------
# One model per family: counts, BatchNorm settings and logits with identical weights,
# at small inputs whose sizes exercise both parities of 'same' padding.
KERAS_FAMILIES = {  # our name: (Keras application, input size)
    "resnet50": ("ResNet50", 40),
    "vgg16": ("VGG16", 32),
    "xception": ("Xception", 71),
    "inception_v3": ("InceptionV3", 75),
    "densenet121": ("DenseNet121", 40),
    "mobilenet_v2": ("MobileNetV2", 40),
    "efficientnet_b0": ("EfficientNetB0", 40),
    "nasnet_mobile": ("NASNetMobile", 40),
}
# The other Keras variants, counted at 1000 classes (slow: about a minute of builds).
KERAS_VARIANTS = {
    "resnet101": ("ResNet101", 32), "resnet152": ("ResNet152", 32), "vgg19": ("VGG19", 224),
    "densenet169": ("DenseNet169", 32), "densenet201": ("DenseNet201", 32),
    **{f"efficientnet_b{i}": (f"EfficientNetB{i}", 32) for i in range(1, 8)},
    "nasnet_large": ("NASNetLarge", 32),
}


def run_keras_oracle(specs: list[str], tmp_path) -> dict:
    out = tmp_path / "keras.json"
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, keras_oracle.__file__, str(out), *specs], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def keras_families(tmp_path_factory):
    specs = {name: f"{app}:{size}:forward" for name, (app, size) in KERAS_FAMILIES.items()}
    results = run_keras_oracle(list(specs.values()), tmp_path_factory.mktemp("keras"))
    return {name: results[spec] for name, spec in specs.items()}


def keras_layers(reference: list[dict], values: bool = True) -> list[pretrained_keras.KerasLayer]:
    """The oracle's layers as the importer reads them, holding `keras_oracle.oracle_value`."""
    return [pretrained_keras.KerasLayer(layer["name"], layer["class"], [
        (w, keras_oracle.oracle_value(layer["name"], w, shape) if values else np.zeros(shape))
        for w, shape in layer["weights"]]) for layer in reference]


def call_order(our_layers) -> list[str]:
    return [layer.path[0] for layer in our_layers if layer.path]


def keras_filled_variables(reference: list[dict], our_layers, variables) -> dict:
    """Our variables holding the oracle's values, placed by jaxcnn.pretrained's Keras importer
    (every variable filled, every shape checked)."""
    entries = pretrained_keras.entries(keras_layers(reference), variables, call_order(our_layers))
    return pretrained.assign(entries, variables, "the model", "Keras")


@pytest.mark.parametrize("name", KERAS_FAMILIES)
def test_family_counts_and_batch_norm_settings_equal_keras(name, keras_families):
    size = KERAS_FAMILIES[name][1]
    params, state, layers, variables = shapes(name, (), (size, size, 3), keras_oracle.ORACLE_CLASSES)
    reference = keras_families[name]
    assert (params + state, params) == (reference["count"], reference["trainable"])
    mapping = pretrained_keras.layer_map(keras_layers(reference["layers"], values=False), variables,
                                         call_order(layers))
    ours = {layer.path[0]: layer.module for layer in layers}
    batch_norms = [layer for layer in reference["layers"] if layer["class"] == "BatchNormalization"]
    assert batch_norms or name == "vgg16"
    for layer in batch_norms:
        module = ours[mapping[layer["name"]]]
        assert (module.epsilon, module.momentum, module.use_scale) == pytest.approx(
            (layer["epsilon"], layer["momentum"], layer["scale"])), layer["name"]


@pytest.mark.parametrize("name", KERAS_FAMILIES)
def test_family_outputs_equal_keras_with_the_same_weights(name, keras_families):
    size = KERAS_FAMILIES[name][1]
    _, _, layers, variables = shapes(name, (), (size, size, 3), keras_oracle.ORACLE_CLASSES)
    reference = keras_families[name]
    filled = keras_filled_variables(reference["layers"], layers, variables)
    model = models.create(name, num_classes=keras_oracle.ORACLE_CLASSES)
    logits = jax.jit(functools.partial(model.apply, train=False))(filled, keras_oracle.oracle_input(size))
    expected = np.asarray(reference["logits"])
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@pytest.mark.slow
def test_every_keras_variant_counts_equal_keras(tmp_path):
    specs = {name: f"{app}:{size}" for name, (app, size) in KERAS_VARIANTS.items()}
    results = run_keras_oracle(list(specs.values()), tmp_path)
    for name, spec in specs.items():
        size = KERAS_VARIANTS[name][1]
        params, state, _, _ = shapes(name, (), (size, size, 3), 1000)
        assert (params + state, params) == (results[spec]["count"], results[spec]["trainable"]), name


# --- layouts ---------------------------------------------------------------------

def conv_settings(name, options=()):
    _, _, layers, _ = shapes(name, tuple(options))
    return {layer.path[0]: layer.module for layer in layers if layer.kind in ("Conv2D", "DepthwiseConv2D")}


def test_resnet_layouts_put_the_stride_and_the_biases_where_each_framework_does():
    keras, torch = conv_settings("resnet50"), conv_settings("resnet50", {"layout": "torch"}.items())
    assert keras["conv3_block1_1_conv"].strides == 2 and keras["conv3_block1_2_conv"].strides == 1
    assert torch["conv3_block1_1_conv"].strides == 1 and torch["conv3_block1_2_conv"].strides == 2
    assert all(conv.use_bias for conv in keras.values()) and not any(conv.use_bias for conv in torch.values())


def test_torch_layouts_pad_stride_2_convolutions_symmetrically():
    for name in ("mobilenet_v2", "efficientnet_b0"):
        keras, torch = conv_settings(name), conv_settings(name, {"layout": "torch"}.items())
        strided = [n for n, conv in keras.items() if conv.strides == 2]
        assert strided and all(keras[n].padding == "same" for n in strided)
        assert all(torch[n].padding == torch[n].kernel_size // 2 for n in strided)


def test_torch_layout_of_inception_counts_the_padding_in_its_average_pools():
    x = jnp.ones((1, 5, 5, 1))
    keras, torch = (models.create("inception_v3", layout=layout) for layout in ("keras", "torch"))
    assert float(keras.avg_pool(x)[0, 0, 0, 0]) == 1.0  # the corner averages its 4 real cells
    assert float(torch.avg_pool(x)[0, 0, 0, 0]) == pytest.approx(4 / 9)


# --- Keras-style options ---------------------------------------------------------

# Families with a top of their own; the others share Classifier.top (resnet20 checks it).
@pytest.mark.parametrize("name,features", [("resnet20", (8, 8, 64)), ("vgg16", (7, 7, 512)),
                                           ("alexnet", (6, 6, 256)), ("lenet5", (1, 1, 120)),
                                           ("simple_cnn", (13, 13, 32))])
def test_without_the_top_models_return_features_pooled_as_asked(name, features):
    shape = models.input_shape(name)
    for pooling, expected in ((None, (2, *features)), ("avg", (2, features[-1])), ("max", (2, features[-1]))):
        model = models.create(name, include_top=False, pooling=pooling)
        out, variables = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), jnp.zeros((2, *shape))))
        assert out.shape == expected, (name, pooling)
        assert "head" not in variables["params"]


def test_pooled_features_are_the_global_average_and_maximum_of_the_feature_map():
    x = jax.random.uniform(jax.random.key(0), (2, 28, 28, 1))
    base = models.create("simple_cnn", include_top=False)
    variables = base.init(jax.random.key(1), x)
    features = base.apply(variables, x)
    for pooling, reduce in (("avg", jnp.mean), ("max", jnp.max)):
        pooled = models.create("simple_cnn", include_top=False, pooling=pooling).apply(variables, x)
        np.testing.assert_allclose(pooled, reduce(features, axis=(1, 2)), rtol=1e-6)


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="pooling='mean'"):
        models.create("resnet50", include_top=False, pooling="mean")
    with pytest.raises(UserError, match="include_top=False"):
        models.create("resnet50", pooling="avg")
    with pytest.raises(UserError, match="layout='tf'"):
        models.create("densenet121", layout="tf")
    with pytest.raises(UserError, match="depth=21"):
        models.create("resnet20", depth=21)
    with pytest.raises(UserError, match="dropout_rate"):
        models.create("vgg16", dropout_rate=1.5)
    with pytest.raises(UserError, match="alphaa"):
        models.create("mobilenet_v2", alphaa=0.5)


ONE_PER_FAMILY = ["mlp", "simple_cnn", "lenet5", "alexnet", "vgg11", "resnet18", "resnet20", "xception",
                  "inception_v3", "densenet121", "mobilenet_v2", "efficientnet_lite0", "nasnet_mobile"]


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_feature_maps_are_exposed_by_block_name(name):
    model = models.create(name)
    _, _, _, variables = shapes(name)
    x = jnp.zeros((1, *models.input_shape(name)))
    _, state = jax.eval_shape(lambda v: model.apply(v, x, mutable=["intermediates"]), variables)
    maps = state["intermediates"]
    assert maps and all(key.endswith("_act") for key in maps), sorted(maps)
    assert name == "mlp" or (len(maps) >= 2 and any(value[0].ndim == 4 for value in maps.values()))


def test_dtype_bfloat16_computes_in_bfloat16_with_float32_parameters():
    model = models.create("resnet20", dtype=jnp.bfloat16)
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
    assert jax.eval_shape(model.apply, variables, x).dtype == jnp.bfloat16


# --- real training steps on small inputs -----------------------------------------

def host_variables(model, x) -> dict:
    """Variables made on the host (`keras_oracle.oracle_value` by path): compiling the
    random initializers of a deep model costs XLA far more than the model itself."""
    shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
    return jax.tree_util.tree_map_with_path(
        lambda path, s: keras_oracle.oracle_value("/".join(k.key for k in path[:-1]), path[-1].key, s.shape), shapes)


def fit_one_batch(model, x, labels, steps: int, learning_rate: float, own_init: bool = False):
    """Adam steps on one batch (training mode, BatchNorm statistics updated): the losses.
    The start is `host_variables`, or with `own_init` the model's own initializers."""
    variables = (jax.jit(functools.partial(model.init, train=False))(jax.random.key(0), x) if own_init
                 else host_variables(model, x))
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    tx = optax.adam(learning_rate)

    @jax.jit
    def step(params, batch_stats, opt_state, rng):
        def loss_fn(params):
            logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                          rngs={"dropout": rng}, mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updates
        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates_, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates_), updates.get("batch_stats", {}), opt_state, loss

    opt_state, losses = tx.init(params), []
    for i in range(steps):
        params, new_stats, opt_state, loss = step(params, batch_stats, opt_state, jax.random.key(i))
        if batch_stats:
            assert not all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(batch_stats), jax.tree.leaves(new_stats)))
        batch_stats = new_stats
        losses.append(float(loss))
    return losses


SMALL_TRAINING = [  # name, options, input shape, Adam's learning rate
    ("lenet5", {}, (28, 28, 1), 3e-3),  # MNIST's size, padded to 32x32 as in the paper
    ("resnet20", {}, (32, 32, 3), 3e-3),
]
SLOW_TRAINING = [  # from the family's own initializers; the networks without BatchNorm need a smaller step
    ("alexnet", {"dropout_rate": 0.0}, (227, 227, 3), 1e-4),
    ("vgg11", {"dropout_rate": 0.0}, (32, 32, 3), 1e-4),
    ("resnet18", {}, (32, 32, 3), 3e-3),
    ("resnet50", {"layout": "torch"}, (32, 32, 3), 3e-3),
    ("mobilenet_v2", {"alpha": 0.35}, (32, 32, 3), 3e-3),
    ("xception", {}, (71, 71, 3), 3e-3),
    ("inception_v3", {}, (75, 75, 3), 3e-3),
    ("densenet121", {}, (32, 32, 3), 3e-3),
    ("efficientnet_b0", {"drop_connect_rate": 0.0, "dropout_rate": 0.0}, (32, 32, 3), 3e-3),
    ("efficientnet_lite0", {"dropout_rate": 0.0}, (32, 32, 3), 3e-3),
    ("nasnet_mobile", {}, (32, 32, 3), 3e-3),
    ("resnet56", {"shortcut": "B"}, (32, 32, 3), 3e-3),
]


def check_learns(name, options, input_shape, learning_rate, steps=10, own_init=False):
    x = jax.random.uniform(jax.random.key(2), (8, *input_shape))
    labels = jnp.arange(8) % 4
    model = models.create(name, num_classes=4, **options)
    losses = fit_one_batch(model, x, labels, steps, learning_rate, own_init)
    assert all(np.isfinite(losses)) and losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("name,options,input_shape,learning_rate", SMALL_TRAINING, ids=[t[0] for t in SMALL_TRAINING])
def test_small_models_learn_a_batch(name, options, input_shape, learning_rate):
    check_learns(name, options, input_shape, learning_rate)


@pytest.mark.slow
@pytest.mark.parametrize("name,options,input_shape,learning_rate", SLOW_TRAINING, ids=[t[0] for t in SLOW_TRAINING])
def test_every_family_learns_a_batch(name, options, input_shape, learning_rate):
    check_learns(name, options, input_shape, learning_rate, steps=30, own_init=True)


def test_batch_norm_uses_running_statistics_in_evaluation():
    model = models.create("resnet20", depth=8)  # one block per stage: a short compilation

    @jax.jit
    def run(variables, x):
        _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
        return (model.apply(variables, x), model.apply({**variables, **updates}, x),
                model.apply(variables, x[:1]))

    x = jax.random.uniform(jax.random.key(0), (4, 32, 32, 3))
    before, after, first = run(host_variables(model, x), x)
    assert not np.allclose(before, after)  # evaluation reads batch_stats, not the batch
    np.testing.assert_allclose(first, before[:1], rtol=1e-5, atol=1e-6)


def test_stochastic_depth_and_dropout_act_only_in_training():
    # A narrow, shallow EfficientNet (one block per stage) keeps compilation short.
    model = models.create("efficientnet_b0", num_classes=3, width_coefficient=0.25, depth_coefficient=0.1,
                          drop_connect_rate=0.5, dropout_rate=0.5)

    @jax.jit
    def run(variables, x):
        train = [model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(i)}, mutable=["batch_stats"])[0]
                 for i in (2, 3)]
        return model.apply(variables, x), model.apply(variables, x), *train

    x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
    eval_a, eval_b, train_a, train_b = run(host_variables(model, x), x)
    np.testing.assert_array_equal(eval_a, eval_b)
    assert not np.allclose(train_a, train_b)


# --- `jaxcnn models summary` ------------------------------------------------------

def test_summary_prints_every_layer_the_totals_and_xla_flops(capsys):
    assert cli.main(["models", "summary", "resnet20"]) == 0
    out = capsys.readouterr().out
    assert "Model: resnet20, input 32x32x3" in out
    assert re.search(r"stage3_block3_conv2 \(Conv2D\)\s+\(None, 8, 8, 64\)\s+36,864", out)
    assert re.search(r"head \(Dense\)\s+\(None, 10\)\s+650", out)
    assert re.search(r"Total weights:\s+271,098", out) and re.search(r"Trainable parameters:\s+269,722", out)
    assert re.search(r"Non-trainable:\s+1,376", out)
    # XLA counts the multiply-adds of the convolutions and the head (2 FLOPs each) that
    # touch real pixels: within 10% of the nominal 2 x H x W x kernel count of each layer.
    _, _, layers, variables = shapes("resnet20")
    nominal = sum(2 * np.prod(layer.output_shape[1:-1]) * variables["params"][layer.path[0]]["kernel"].size
                  for layer in layers if layer.kind in ("Conv2D", "Dense"))
    flops = float(re.search(r"FLOPs.*: ([\d.,]+) MFLOPs", out).group(1).replace(",", "")) * 1e6
    assert 0.9 * nominal < flops < 1.1 * nominal


def test_summary_takes_an_input_shape_and_classes_and_reports_bad_ones(capsys):
    assert cli.main(["models", "summary", "resnet50", "--input", "64x64x3", "--classes", "5"]) == 0
    out = capsys.readouterr().out
    assert "input 64x64x3" in out and "(None, 2, 2, 2048)" in out and re.search(r"head \(Dense\)\s+\(None, 5\)", out)
    for argv, message in ((["resnet50", "--input", "64x64"], "is not HxWxC"),
                          (["inception_v3", "--input", "32x32x3"], "cannot take a 32x32x3 input"),
                          (["resnet5O"], "unknown model 'resnet5O'")):
        assert cli.main(["models", "summary", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
