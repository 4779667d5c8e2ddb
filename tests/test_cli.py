"""The `jaxcnn` command end to end, and the workdir contract of ../shared/DESIGN.md."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxcnn import cli
from conftest import REPO

METRICS_KEYS = {"epoch", "step", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short run of the embedded default through the CLI."""
    workdir = str(tmp_path_factory.mktemp("run") / "digits")
    code = cli.main(["train", "--workdir", workdir, "--config.epochs=3", "--config.verbose", "2"])
    assert code == 0
    return workdir


def test_train_writes_the_workdir_contract(trained):
    assert sorted(os.listdir(trained)) == ["checkpoints", "config.json", "dataset.json", "eval", "lock",
                                           "metrics.jsonl", "plots", "tensorboard"]
    config = json.load(open(os.path.join(trained, "config.json")))
    dataset = json.load(open(os.path.join(trained, "dataset.json")))
    assert dataset == {"name": "digits", "image_shape": [8, 8, 1], "class_names": [str(i) for i in range(10)],
                       "pixel_max": 16.0, "num_examples": {"train": 1295, "validation": 142, "test": 360}}
    assert config["model"] == "simple_cnn" and config["epochs"] == 3 and config["verbose"] == 2
    records = [json.loads(line) for line in open(os.path.join(trained, "metrics.jsonl"))]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert all(set(r) == METRICS_KEYS for r in records)
    assert records[-1]["step"] == 3 * 81  # 1,295 train images in batches of 16
    evaluation = json.load(open(os.path.join(trained, "eval", "test.json")))
    assert evaluation["split"] == "test" and evaluation["num_examples"] == 360
    assert 0.8 < evaluation["accuracy"] <= 1.0 and evaluation["loss"] > 0


def test_tensorboard_reads_the_per_epoch_scalars(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    records = [json.loads(line) for line in open(os.path.join(trained, "metrics.jsonl"))]
    for sub, tags in (("train", {"loss": "train_loss", "accuracy": "train_accuracy", "learning_rate": "lr"}),
                      ("validation", {"loss": "val_loss", "accuracy": "val_accuracy"})):
        events = EventAccumulator(os.path.join(trained, "tensorboard", sub), size_guidance={"tensors": 0}).Reload()
        for tag, key in tags.items():
            tensors = events.Tensors(tag)
            assert [t.step for t in tensors] == [1, 2, 3]
            values = [float(np.asarray(__import__("tensorflow").make_ndarray(t.tensor_proto))) for t in tensors]
            np.testing.assert_allclose(values, [r[key] for r in records], rtol=1e-6)


def test_the_checkpoint_is_readable_with_orbax_and_reproduces_the_evaluation(trained):
    import orbax.checkpoint as ocp
    from jaxcnn import config as config_lib
    from jaxcnn.train import Trainer
    manager = ocp.CheckpointManager(os.path.join(trained, "checkpoints"))
    assert manager.latest_step() == 3 * 81
    restored = manager.restore(manager.latest_step())
    assert restored["meta"]["epoch"] == 3
    assert restored["state"]["params"]["conv1"]["kernel"].shape == (3, 3, 1, 32)
    trainer = Trainer(config_lib.from_json_file(os.path.join(trained, "config.json")))
    trainer.state, _ = __import__("jaxcnn.train.checkpoint", fromlist=["x"]).Checkpointer(
        os.path.join(trained, "checkpoints")).restore(trainer.state)
    evaluation = json.load(open(os.path.join(trained, "eval", "test.json")))
    assert trainer.evaluate(trainer.test_data)["accuracy"] == pytest.approx(evaluation["accuracy"], abs=1e-7)


def test_train_on_an_existing_workdir_resumes_and_may_extend(trained, capsys):
    assert cli.main(["train", "--workdir", trained, "--config.epochs=4", "--config.verbose=2"]) == 0
    out = capsys.readouterr().out
    assert "Resuming" in out and "Epoch 4/4" in out and "Epoch 3/4" not in out
    records = [json.loads(line) for line in open(os.path.join(trained, "metrics.jsonl"))]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]


def test_resuming_with_a_different_config_is_refused(trained, capsys):
    assert cli.main(["train", "--workdir", trained, "--config.learning_rate=0.1"]) == 2
    assert "different config (learning_rate" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["--config.model=resnet7"], "unknown model 'resnet7'"),
    (["--config.epoch=3"], "did you mean 'epochs'"),
    (["--config.epochs=three"], "expected an integer"),
    (["--config", "experiments/nope.py"], "config file not found"),
    (["--config.dataset=mnist", "--config.data_dir=DATA"], "jaxcnn data prepare mnist"),
    (["--bogus"], "unrecognized argument"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, args, message):
    workdir = tmp_path / "run"
    args = [a.replace("DATA", str(tmp_path / "data")) for a in args]
    assert cli.main(["train", "--workdir", str(workdir), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not workdir.exists() and not (tmp_path / "data").exists()


def test_a_workdir_that_is_a_file_is_refused(tmp_path, capsys):
    path = tmp_path / "file"
    path.write_text("x")
    assert cli.main(["train", "--workdir", str(path)]) == 2
    assert "is a file" in capsys.readouterr().err
    assert path.read_text() == "x"


def test_a_run_failing_before_its_first_checkpoint_leaves_no_workdir(tmp_path, capsys):
    workdir = tmp_path / "run"
    # A huge learning rate with SGD overflows to inf/NaN within the first epoch.
    assert cli.main(["train", "--workdir", str(workdir), "--config.optimizer=sgd", "--config.learning_rate=1e30",
                     "--config.epochs=1"]) == 2
    assert "loss became" in capsys.readouterr().err
    assert not workdir.exists()


def test_the_console_script_lists_models_and_reports_errors(tmp_path):
    bin_dir = os.path.dirname(sys.executable)
    jaxcnn = os.path.join(bin_dir, "jaxcnn")
    listing = subprocess.run([jaxcnn, "models"], capture_output=True, text=True, cwd=REPO)
    assert listing.returncode == 0 and {"mlp", "simple_cnn"} <= set(listing.stdout.split())
    bad = subprocess.run([jaxcnn, "train", "--workdir", str(tmp_path / "w"), "--config.model=nope"],
                         capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("jaxcnn: error: unknown model 'nope'")
    assert not (tmp_path / "w").exists()


def test_data_prepare_via_the_cli_reports_a_missing_source(tmp_path, capsys):
    assert cli.main(["data", "prepare", "mnist", "--source", str(tmp_path / "none"),
                     "--data_dir", str(tmp_path / "d")]) == 2
    assert "is not a folder" in capsys.readouterr().err
