"""Config files, overrides and validation."""

import glob
import os

import pytest

from jaxcnn import config as config_lib
from jaxcnn.errors import UserError
from conftest import REPO


def test_default_is_the_digits_cnn():
    c = config_lib.get_config()
    assert (c.model, c.dataset) == ("simple_cnn", "digits")
    config_lib.validate(c)


def test_overrides_take_the_type_of_the_value_they_replace():
    c = config_lib.apply_overrides(config_lib.get_config(), {
        "epochs": "7", "learning_rate": "1", "download": "true", "lr_boundaries": "(30, 60)",
        "model": "mlp", "model_kwargs.hidden": "(64, 32)", "model_kwargs.activation": "tanh"})
    assert c.epochs == 7 and isinstance(c.epochs, int)
    assert c.learning_rate == 1.0 and isinstance(c.learning_rate, float)
    assert c.download is True
    assert c.lr_boundaries == (30, 60)
    assert c.model == "mlp"
    assert c.model_kwargs.to_dict() == {"hidden": (64, 32), "activation": "tanh"}


def test_overrides_do_not_touch_the_given_config():
    base = config_lib.get_config()
    config_lib.apply_overrides(base, {"epochs": "2"})
    assert base.epochs == config_lib.get_config().epochs


@pytest.mark.parametrize("overrides,message", [
    ({"epoch": "3"}, "did you mean 'epochs'"),
    ({"epochs": "three"}, "expected an integer"),
    ({"epochs": "1.5"}, "expected an integer"),
    ({"learning_rate": "fast"}, "expected a number"),
    ({"download": "maybe"}, "expected true or false"),
    ({"optimizer": "adamax"}, "not one of"),
    ({"batch_size": "0"}, "positive integer"),
    ({"validation_split": "1.5"}, "validation_split"),
    ({"model.depth": "3"}, "unknown config key"),
])
def test_bad_overrides_are_user_errors(overrides, message):
    with pytest.raises(UserError, match=message):
        config_lib.apply_overrides(config_lib.get_config(), overrides)


def test_every_experiment_file_loads_and_validates():
    files = sorted(glob.glob(os.path.join(REPO, "experiments", "*.py")))
    assert {"digits_cnn.py", "mnist_cnn.py", "mnist_mlp.py"} <= {os.path.basename(f) for f in files}
    for f in files:
        c = config_lib.load(f)
        assert c.model and c.dataset
        module_doc = open(f).read()
        assert "jaxcnn train" in module_doc, f"{f}: the docstring shows the command that runs it"


def write(tmp_path, text):
    path = tmp_path / "exp.py"
    path.write_text(text)
    return str(path)


def test_config_file_argument_is_passed_to_get_config(tmp_path):
    path = write(tmp_path, "from jaxcnn.config import get_config as base\n"
                           "def get_config(arg=None):\n    c = base(); c.epochs = int(arg or 1); return c\n")
    assert config_lib.load(path + ":5").epochs == 5
    assert config_lib.load(path).epochs == 1


@pytest.mark.parametrize("text,message", [
    ("from jaxcnn.config import get_config as base\n"
     "def get_config():\n    c = base(); c.learnig_rate = 0.1; return c\n", "did you mean 'learning_rate'"),
    ("def get_config():\n    raise RuntimeError('boom')\n", "raised RuntimeError: boom"),
    ("x = 1\n", "defines no get_config"),
    ("def get_config():\n    return {'model': 'mlp'}\n", "not a ConfigDict"),
])
def test_broken_config_files_are_user_errors(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        config_lib.load(write(tmp_path, text))


def test_missing_config_file_is_a_user_error():
    with pytest.raises(UserError, match="not found"):
        config_lib.load("experiments/nope.py")


def test_config_json_round_trip(tmp_path):
    c = config_lib.apply_overrides(config_lib.get_config(), {"lr_boundaries": "(3, 4)", "model_kwargs.filters": "8"})
    (tmp_path / "config.json").write_text(config_lib.to_json(c))
    back = config_lib.from_json_file(str(tmp_path / "config.json"))
    assert back.to_dict() == c.to_dict()
