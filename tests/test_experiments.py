"""Every experiment config loads, validates, and builds its model for its dataset's shapes
(jax.eval_shape: nothing is initialized or trained); the built-in XOR dataset; the
Results table tool."""

import ast
import glob
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import config as config_lib
from jaxcnn import models, optim
from jaxcnn.data import sources
from jaxcnn.heads import Head
from jaxcnn.train import steps

from conftest import REPO

EXPERIMENTS = sorted(glob.glob(os.path.join(REPO, "experiments", "*.py")))

# (image shape as stored, classes) of each dataset an experiment names; None: varies.
DATASETS = {
    "xor": ((1, 2, 1), 2),
    "digits": ((8, 8, 1), 10),
    "mnist": ((28, 28, 1), 10),
    "cifar10": ((32, 32, 3), 10),
    "intel_scenes": ((150, 150, 3), 6),
    "imagenet2012": ((None, None, 3), 1000),
}


def _name(path):
    return os.path.splitext(os.path.basename(path))[0]


def _docstring(path):
    with open(path) as f:
        return ast.get_docstring(ast.parse(f.read()))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=_name)
def test_experiment_builds_its_model(path):
    config = config_lib.load(path)  # loads and validates
    doc = _docstring(path)
    assert doc and f"experiments/{_name(path)}.py" in doc, "the docstring shows the command that runs it"
    assert "Expected" in doc, "the docstring states the expected result"
    if config.dataset not in DATASETS:
        pytest.fail(f"add {config.dataset}'s image shape and class count to DATASETS in {__file__}")
    shape, classes = DATASETS[config.dataset]
    if config.preprocess.resize:
        shape = (*config.preprocess.resize, shape[-1])
    assert None not in shape, f"{config.dataset}'s images vary in size: the config must resize them"
    head = Head.create(config.head, classes)
    model = models.create(config.model, num_classes=head.units, dtype=config.dtype, **config.model_kwargs.to_dict())
    x = jnp.zeros((2, *shape), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    logits = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
    assert logits.shape == (2, head.units)
    for phase in config_lib.phase_configs(config):  # each phase's patterns resolve on the model
        tx, lr = optim.create(phase, steps_per_epoch=100, params=variables["params"])
        jax.eval_shape(tx.init, variables["params"])
        assert float(lr(0)) > 0
        steps.StepOptions.for_config(phase, variables)


def test_xor_is_the_truth_table():
    ds = sources.load("xor")
    assert ds.class_names == ["0", "1"] and ds.pixel_max == 1.0 and ds.validation is None
    x = ds.test.images.reshape(4, 2)
    np.testing.assert_array_equal(ds.test.labels, x[:, 0] ^ x[:, 1])
    np.testing.assert_array_equal(ds.test.images.shape, (4, 1, 2, 1))
    assert len(ds.train) == 4 * 256 and np.bincount(ds.train.labels).tolist() == [512, 512]
    train_points = {tuple(img.ravel()) + (int(y),) for img, y in zip(ds.train.images, ds.train.labels)}
    assert train_points == {tuple(img.ravel()) + (int(y),) for img, y in zip(ds.test.images, ds.test.labels)}


def test_results_table_has_a_row_per_experiment():
    out = subprocess.run([sys.executable, os.path.join(REPO, "tools", "results_table.py")], capture_output=True,
                         text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ")][2:]
    experiments = {_name(p) for p in EXPERIMENTS} - {"digits_cnn"}
    for name in experiments:
        assert any(f"experiments/{name}.py" in row for row in rows), name
