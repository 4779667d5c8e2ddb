"""Evaluating a trained run: the files of `jaxcnn train` and `jaxcnn evaluate`, recomputed
independently (Orbax and the model directly), checkpoint choice, and bad input."""

import json
import os
import shutil

import numpy as np
import orbax.checkpoint as ocp
import pytest
from scipy.special import softmax

from jaxcnn import cli, evaluate, models
from jaxcnn.data import sources
from jaxcnn.evaluate import report

REPORT_KEYS = {"split", "num_examples", "class_names", "accuracy", "top5_accuracy", "loss", "confusion_matrix",
               "per_class", "macro_avg", "weighted_avg", "auc_roc"}
EVAL_PLOTS = ["test_confusion_matrix.png", "test_misclassified.png", "test_roc.png"]


def read_json(path):
    with open(path) as f:
        return json.load(f)


def orbax_probabilities(workdir, images, step=None):
    """The model's test probabilities from the raw Orbax checkpoint, without jaxcnn's loader."""
    manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
    restored = manager.restore(manager.latest_step() if step is None else step)
    model = models.create("simple_cnn", num_classes=10)
    logits = model.apply({"params": restored["state"]["params"]}, images.astype(np.float32) / 16.0, train=False)
    return softmax(np.asarray(logits, np.float64), axis=1)


def test_training_ends_with_the_full_evaluation_files(digits_run):
    results = read_json(os.path.join(digits_run, "eval", "test.json"))
    assert REPORT_KEYS <= set(results) and {"epoch", "step", "wall_seconds", "cpu_seconds"} <= set(results)
    assert results["num_examples"] == 360 and results["epoch"] == 2
    assert sorted(os.listdir(os.path.join(digits_run, "plots"))) == sorted(EVAL_PLOTS + ["curves.png"])
    labels, probs, class_names = evaluate.read_predictions(digits_run, "test")
    assert labels.dtype == np.int32 and probs.shape == (360, 10) and class_names == [str(i) for i in range(10)]

    # The stored predictions are the model's, in the split's order.
    test = sources.load_digits().test
    np.testing.assert_array_equal(labels, test.labels)
    np.testing.assert_allclose(probs, orbax_probabilities(digits_run, test.images), atol=2e-6)

    # Anyone can recompute the report from the .npz: every number but the loss is the same;
    # the loss is the model's (from logits), equal to the log loss of these probabilities.
    recomputed = report(labels, probs, class_names)
    for key in REPORT_KEYS - {"split", "loss"}:
        assert results[key] == recomputed[key], key
    assert results["loss"] == pytest.approx(recomputed["loss"], rel=1e-5)
    assert results["loss"] == pytest.approx(-np.mean(np.log(probs[np.arange(360), labels].astype(np.float64))),
                                            rel=1e-5)


def test_jaxcnn_evaluate_writes_the_same_files_as_training(digits_run, tmp_path, capsys):
    workdir = str(tmp_path / "run")
    shutil.copytree(digits_run, workdir)
    shutil.rmtree(os.path.join(workdir, "eval"))
    shutil.rmtree(os.path.join(workdir, "plots"))
    assert cli.main(["evaluate", "--workdir", workdir]) == 0
    out = capsys.readouterr().out
    assert "test split of digits: 360 images, latest checkpoint (epoch 2, step 162)" in out
    assert "macro avg" in out and "weighted avg" in out and "wrote eval/test.json" in out

    trained = read_json(os.path.join(digits_run, "eval", "test.json"))
    evaluated = read_json(os.path.join(workdir, "eval", "test.json"))
    assert evaluated["checkpoint"] == "latest" and evaluated["step"] == trained["step"] == 162
    for key in REPORT_KEYS - {"loss"}:
        assert evaluated[key] == trained[key], key
    assert evaluated["loss"] == pytest.approx(trained["loss"], rel=1e-6)
    np.testing.assert_array_equal(evaluate.read_predictions(workdir)[1], evaluate.read_predictions(digits_run)[1])
    assert sorted(os.listdir(os.path.join(workdir, "plots"))) == EVAL_PLOTS


def test_evaluate_the_validation_split(digits_run, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(digits_run, workdir)
    assert cli.main(["evaluate", "--workdir", workdir, "--split", "validation"]) == 0
    results = read_json(os.path.join(workdir, "eval", "validation.json"))
    history = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert results["num_examples"] == 142
    # The validation metrics of the last epoch, recomputed from the checkpoint.
    assert results["accuracy"] == pytest.approx(history[-1]["val_accuracy"], abs=1e-6)
    assert results["loss"] == pytest.approx(history[-1]["val_loss"], rel=1e-5)
    assert os.path.isfile(os.path.join(workdir, "plots", "validation_roc.png"))


def save_best_checkpoints(workdir, values, mode="min", record_monitor=True, monitor="val_loss"):
    """best_checkpoints/ as ModelCheckpoint writes it: best-k Orbax retention of the states of
    checkpoints/, each saved with its metrics, the monitor and mode in the root metadata."""
    source = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
    best = ocp.CheckpointManager(os.path.join(workdir, "best_checkpoints"), options=ocp.CheckpointManagerOptions(
        create=True, max_to_keep=2, best_fn=lambda metrics: metrics[monitor], best_mode=mode),
        metadata={"monitor": monitor, "mode": mode} if record_monitor else None)
    for step, value in zip(sorted(source.all_steps()), values):
        restored = source.restore(step)
        best.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(restored["state"]),
                                                meta=ocp.args.JsonSave(restored["meta"])), metrics={monitor: value})
    best.wait_until_finished()
    best.close()


@pytest.mark.parametrize("values,mode,best_step,epoch", [
    ((0.3, 0.5), "min", 81, 1), ((0.3, 0.5), "max", 162, 2), ((0.9, 0.8), "min", 162, 2),
])
def test_checkpoint_best_reads_the_best_step(digits_run, tmp_path, values, mode, best_step, epoch):
    workdir = str(tmp_path / "run")
    shutil.copytree(digits_run, workdir)
    save_best_checkpoints(workdir, values, mode=mode)
    assert cli.main(["evaluate", "--workdir", workdir, "--checkpoint", "best"]) == 0
    results = read_json(os.path.join(workdir, "eval", "test.json"))
    assert (results["checkpoint"], results["step"], results["epoch"]) == ("best", best_step, epoch)
    test = sources.load_digits().test
    probs = evaluate.read_predictions(workdir)[1]
    np.testing.assert_allclose(probs, orbax_probabilities(workdir, test.images, step=best_step), atol=2e-6)


def test_best_checkpoints_without_their_monitor_are_refused(digits_run, tmp_path, capsys):
    workdir = str(tmp_path / "run")
    shutil.copytree(digits_run, workdir)
    save_best_checkpoints(workdir, (0.3, 0.5), record_monitor=False)
    assert cli.main(["evaluate", "--workdir", workdir, "--checkpoint", "best"]) == 2
    assert "does not record which metric" in one_line_error(capsys)


def one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("jaxcnn: error: "), err
    return err


def test_checkpoint_best_without_best_checkpoints_says_so(digits_run, capsys):
    before = sorted(os.listdir(digits_run))
    assert cli.main(["evaluate", "--workdir", digits_run, "--checkpoint", "best"]) == 2
    assert "no best checkpoint" in one_line_error(capsys)
    assert sorted(os.listdir(digits_run)) == before  # nothing created


def test_a_missing_workdir_or_checkpoint_is_one_line_exit_2(tmp_path, digits_run, capsys):
    for command in ("evaluate", "visualize"):
        assert cli.main([command, "--workdir", str(tmp_path / "nope")]) == 2
        assert "does not exist" in one_line_error(capsys)
    assert not (tmp_path / "nope").exists()

    untrained = tmp_path / "untrained"
    untrained.mkdir()
    assert cli.main(["evaluate", "--workdir", str(untrained)]) == 2
    assert "config.json is missing" in one_line_error(capsys)

    for name in ("config.json", "dataset.json"):
        shutil.copy(os.path.join(digits_run, name), untrained / name)
    assert cli.main(["evaluate", "--workdir", str(untrained)]) == 2
    assert "no latest checkpoint" in one_line_error(capsys)
    assert sorted(os.listdir(untrained)) == ["config.json", "dataset.json"]


def truncate_state(checkpoint_dir):
    for root, _, files in os.walk(checkpoint_dir / "state"):
        for name in files:
            with open(os.path.join(root, name), "r+b") as f:
                f.truncate(3)


def test_a_corrupt_latest_checkpoint_falls_back_and_all_corrupt_is_one_line_exit_2(digits_run, tmp_path, capsys):
    workdir = tmp_path / "run"
    shutil.copytree(digits_run, workdir)
    steps = sorted(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit())
    truncate_state(workdir / "checkpoints" / str(steps[-1]))
    shutil.rmtree(workdir / "eval")
    assert cli.main(["evaluate", "--workdir", str(workdir)]) == 0
    err = capsys.readouterr().err
    assert f"checkpoints/{steps[-1]} is corrupt" in err and f"using step {steps[-2]}" in err
    assert read_json(workdir / "eval" / "test.json")["step"] == steps[-2]
    assert sorted(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit()) == steps  # reading moves nothing

    shutil.rmtree(workdir / "eval")
    for step in steps:
        truncate_state(workdir / "checkpoints" / str(step))
    assert cli.main(["evaluate", "--workdir", str(workdir)]) == 2
    assert "can be restored" in one_line_error(capsys)
    assert not (workdir / "eval").exists()


def test_a_binary_run_reports_the_sigmoid_heads_auc(tmp_path):
    from jaxcnn import config as config_lib
    from jaxcnn.data import Dataset, Split
    from jaxcnn.train import Trainer
    from sklearn.metrics import roc_auc_score

    digits = sources.load_digits()
    keep = lambda s: Split(s.images[s.labels >= 8], s.labels[s.labels >= 8] - 8)  # noqa: E731  8 vs 9
    dataset = Dataset("digits89", keep(digits.train), keep(digits.test), keep(digits.test), ["eight", "nine"], 16.0)
    config = config_lib.get_config()
    config.epochs, config.verbose = 2, 0
    trainer = Trainer(config, dataset=dataset)
    trainer.fit()
    assert trainer.head.kind == "sigmoid"
    evaluation = evaluate.Evaluation.compute(trainer.state, trainer.head, trainer.test_data, dataset.describe(), "test")
    logits = np.asarray(trainer.model.apply(trainer.state.variables(), keep(digits.test).images / 16.0, train=False))
    p = 1 / (1 + np.exp(-logits[:, 0].astype(np.float64)))
    np.testing.assert_allclose(evaluation.probs[:, 1], p, atol=1e-6)
    results = evaluation.results
    assert results["auc_roc"] == pytest.approx(roc_auc_score(evaluation.labels, p), abs=1e-9)
    assert "top5_accuracy" not in results and len(results["confusion_matrix"]) == 2
    assert results["accuracy"] == pytest.approx(trainer.evaluate(trainer.test_data)["accuracy"], abs=1e-7)
    assert results["loss"] == pytest.approx(trainer.evaluate(trainer.test_data)["loss"], rel=1e-5)
    evaluation.save(str(tmp_path))
    assert sorted(os.listdir(tmp_path / "plots")) == EVAL_PLOTS
