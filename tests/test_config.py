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


def phased(*phases, epochs=None):
    c = config_lib.get_config()
    c.phases = phases
    c.epochs = epochs if epochs is not None else sum(p.get("epochs", 0) for p in phases)
    return c


def test_phases_are_the_config_with_their_keys_replaced():
    c = phased({"epochs": 2, "optimization.freeze": "base"},
               {"epochs": 1, "learning_rate": 1e-5, "optimization.freeze": ["conv*"], "optimizer": "sgd"})
    c.weight_decay = 1e-4
    config_lib.validate(c)
    first, second = config_lib.phase_configs(c)
    assert (first.epochs, first.optimization.freeze, first.learning_rate, first.optimizer) == (2, ("base",), 1e-3, "adam")
    assert (second.epochs, second.optimization.freeze, second.learning_rate, second.optimizer) == (1, ("conv*",), 1e-5, "sgd")
    assert first.weight_decay == second.weight_decay == 1e-4 and first.phases == second.phases == ()
    assert c.optimization.freeze == () and c.learning_rate == 1e-3  # the run's config untouched


@pytest.mark.parametrize("phases,epochs,message", [
    (({"epochs": 2}, {"epochs": 1}), 30, r"config.epochs=30 but the phases last 2 \+ 1 = 3 epochs; set --config.epochs=3"),
    (({"epochs": 2}, {"learning_rate": 1e-5}), 2, r"config.phases\[1\] has no 'epochs'"),
    (({"epochs": 2, "learning_rat": 1e-5},), 2, r"config.phases\[0\] has unknown key 'learning_rat' \(did you mean "
                                                r"'learning_rate'\?\); a phase may set epochs, optimizer"),
    (({"epochs": 2, "model": "mlp"},), 2, r"config.phases\[0\] has unknown key 'model'"),
    (({"epochs": 2}, {"epochs": 1, "optimizer": "adamax"}), 3, r"config.phases\[1\]: config.optimizer='adamax' is not"),
    (({"epochs": 0}, {"epochs": 1}), 1, r"config.phases\[0\]: config.epochs must be a positive integer"),
    (({"epochs": 1, "learning_rate": "fast"},), 1, r"config.phases\[0\].learning_rate='fast' must be a float"),
    (([1, 2],), 1, r"config.phases\[0\] must be a dict"),
])
def test_bad_phases_are_user_errors(phases, epochs, message):
    with pytest.raises(UserError, match=message):
        config_lib.validate(phased(*phases, epochs=epochs))


def test_phases_round_trip_through_config_json_and_the_command_line(tmp_path):
    from jaxcnn.train import workdir
    text = "({'epochs': 2, 'optimization.freeze': ('conv*',)}, {'epochs': 1, 'learning_rate': 1e-4})"
    c = config_lib.apply_overrides(config_lib.get_config(), {"phases": text, "epochs": "3"})
    assert c.phases[0] == {"epochs": 2, "optimization.freeze": ("conv*",)}
    (tmp_path / "config.json").write_text(config_lib.to_json(c))
    back = config_lib.from_json_file(str(tmp_path / "config.json"))
    workdir.check_resume(back, c)  # the same run: it resumes
    assert [p.to_dict() for p in config_lib.phase_configs(back)] == [p.to_dict() for p in config_lib.phase_configs(c)]


def test_a_phase_pattern_that_names_nothing_fails_before_anything_is_written(tmp_path):
    from jaxcnn.train import fit
    c = phased({"epochs": 1}, {"epochs": 1, "optimization.freeze": ("conv9",)})
    c.verbose, c.callbacks.tensorboard.enabled = 0, False
    with pytest.raises(UserError, match="optimization.freeze pattern 'conv9' matches no parameter"):
        fit(c, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
