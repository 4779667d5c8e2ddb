"""Each plot is a valid PNG of sensible size whose pixels change with its input; `jaxcnn
visualize` draws a run's curves, filters and feature maps."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from jaxcnn import cli, plots
from jaxcnn.errors import UserError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_pixels(path, min_side=150, max_side=4000):
    """Checks a valid PNG of sensible size; returns its pixels."""
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert min_side <= min(image.size) and max(image.size) <= max_side, image.size
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 5, "a blank image"
    assert not os.path.exists(str(path) + ".tmp")
    return pixels


def assert_differ(a, b):
    assert a.shape != b.shape or np.abs(a.astype(int) - b.astype(int)).sum() > 0


def history(seed, epochs=6):
    rng = np.random.default_rng(seed)
    loss = np.sort(rng.random(epochs))[::-1] + 0.1
    return [{"epoch": e + 1, "step": 10 * (e + 1), "lr": 1e-3 * 0.5 ** e, "train_loss": float(loss[e]),
             "train_accuracy": float(1 - loss[e] / 2), "val_loss": float(loss[e] + 0.05),
             "val_accuracy": float(1 - loss[e] / 2 - 0.02), "seconds": 1.0} for e in range(epochs)]


def test_training_curves_from_metrics_records_or_a_keras_history(tmp_path):
    records = history(0)
    a = png_pixels(plots.training_curves(records, str(tmp_path / "a.png")))
    keras_history = {"loss": [r["train_loss"] for r in records], "accuracy": [r["train_accuracy"] for r in records],
                     "val_loss": [r["val_loss"] for r in records], "val_accuracy": [r["val_accuracy"] for r in records],
                     "learning_rate": [r["lr"] for r in records]}
    same = png_pixels(plots.training_curves(keras_history, str(tmp_path / "same.png")))
    np.testing.assert_array_equal(a, same)
    assert_differ(a, png_pixels(plots.training_curves(history(1), str(tmp_path / "b.png"))))
    without_validation = [{k: v for k, v in r.items() if not k.startswith("val")} for r in records]
    assert_differ(a, png_pixels(plots.training_curves(without_validation, str(tmp_path / "c.png"))))
    in_phases = [{**r, "phase": 1 if r["epoch"] <= 2 else 2} for r in records]  # a run in two phases
    assert_differ(a, png_pixels(plots.training_curves(in_phases, str(tmp_path / "phases.png"))))
    with pytest.raises(UserError, match="history is empty"):
        plots.training_curves([], str(tmp_path / "empty.png"))
    assert not (tmp_path / "empty.png").exists()


def predictions(n, c, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) + 2.0 * np.eye(c)[labels]  # better than chance
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return labels, probs


@pytest.mark.parametrize("c", [2, 5, 40])
def test_confusion_matrix(tmp_path, c):
    names = [f"c{i}" for i in range(c)]
    a = png_pixels(plots.confusion_matrix(*predictions(300, c, 0), names, str(tmp_path / "a.png")))
    b = png_pixels(plots.confusion_matrix(*predictions(300, c, 1), names, str(tmp_path / "b.png")))
    assert_differ(a, b)


@pytest.mark.parametrize("c", [2, 6, 45])
def test_roc_curves(tmp_path, c):
    names = [f"c{i}" for i in range(c)]
    labels, probs = predictions(400, c, 0)
    a = png_pixels(plots.roc_curves(labels, probs, names, str(tmp_path / "a.png")))
    assert_differ(a, png_pixels(plots.roc_curves(*predictions(400, c, 1), names, str(tmp_path / "b.png"))))
    one_class = np.zeros_like(labels)  # AUC undefined for every class (binary) or all but the pooled micro
    assert_differ(a, png_pixels(plots.roc_curves(one_class, probs, names, str(tmp_path / "c.png"))))


def test_roc_curves_of_a_class_absent_from_the_labels(tmp_path):
    labels, probs = predictions(200, 4, 2)
    labels[labels == 1] = 0
    names = ["a", "b", "c", "d"]
    absent = png_pixels(plots.roc_curves(labels, probs, names, str(tmp_path / "a.png")))
    assert_differ(absent, png_pixels(plots.roc_curves(*predictions(200, 4, 2), names, str(tmp_path / "b.png"))))


def test_misclassified_grid(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(50, 12, 12, 3), dtype=np.uint8)
    labels, probs = predictions(50, 3, 0)
    names = ["x", "y", "z"]
    a = png_pixels(plots.misclassified(images, labels, probs, names, str(tmp_path / "a.png")))
    b = png_pixels(plots.misclassified(255 - images, labels, probs, names, str(tmp_path / "b.png")))
    assert_differ(a, b)
    gray = png_pixels(plots.misclassified(images[..., :1], labels, probs, names, str(tmp_path / "g.png")))
    assert_differ(a, gray)
    perfect = np.eye(3)[labels]
    none = png_pixels(plots.misclassified(images, labels, perfect, names, str(tmp_path / "none.png")), min_side=100)
    assert_differ(a, none)


@pytest.mark.parametrize("shape", [(3, 3, 1, 8), (5, 5, 3, 70), (3, 3, 16, 4)])
def test_filters(tmp_path, shape):
    rng = np.random.default_rng(0)
    a = png_pixels(plots.filters(rng.normal(size=shape), str(tmp_path / "a.png")), min_side=100)
    b = png_pixels(plots.filters(rng.normal(size=shape), str(tmp_path / "b.png")), min_side=100)
    assert_differ(a, b)


@pytest.mark.parametrize("shape", [(6, 6, 32), (4, 4, 100), (128,)])
def test_feature_maps(tmp_path, shape):
    rng = np.random.default_rng(0)
    image = rng.random((8, 8, 1))
    a = png_pixels(plots.feature_maps(rng.random(shape), str(tmp_path / "a.png"), image=image))
    b = png_pixels(plots.feature_maps(rng.random(shape), str(tmp_path / "b.png"), image=image))
    assert_differ(a, b)


def test_visualize_draws_curves_and_the_first_convolutions_filters(digits_run, tmp_path, capsys):
    workdir = tmp_path / "run"
    shutil.copytree(digits_run, workdir)
    shutil.rmtree(workdir / "plots")
    assert cli.main(["visualize", "--workdir", str(workdir)]) == 0
    assert sorted(os.listdir(workdir / "plots")) == ["curves.png", "filters_conv1.png"]
    png_pixels(workdir / "plots" / "curves.png")
    filters = png_pixels(workdir / "plots" / "filters_conv1.png")
    # The filters drawn are the checkpoint's: other weights draw another picture.
    from jaxcnn import inference
    name, kernel = inference.load_run(str(workdir)).first_conv_kernel()
    assert name == "conv1" and kernel.shape == (3, 3, 1, 32)
    assert_differ(filters, png_pixels(plots.filters(-kernel, str(tmp_path / "negated.png"))))
    np.testing.assert_array_equal(filters, png_pixels(plots.filters(
        kernel, str(tmp_path / "same.png"), title="simple_cnn: filters of conv1 3x3, 1 in, 32 out (latest, step 162)")))


def test_visualize_a_layers_feature_maps_for_an_image(digits_run, tmp_path, capsys):
    from jaxcnn.data import sources
    workdir = tmp_path / "run"
    shutil.copytree(digits_run, workdir)
    shutil.rmtree(workdir / "plots")
    digits = sources.load_digits().test.images
    for i in (0, 1):
        Image.fromarray(np.round(digits[i, ..., 0] * 255 / 16).astype(np.uint8)).save(tmp_path / f"digit{i}.png")
    assert cli.main(["visualize", "--workdir", str(workdir), "--layer", "conv1",
                     str(tmp_path / "digit0.png"), str(tmp_path / "digit1.png")]) == 0
    assert cli.main(["visualize", "--workdir", str(workdir), "--layer", "dense_act", str(tmp_path / "digit0.png")]) == 0
    assert sorted(os.listdir(workdir / "plots")) == ["feature_maps_conv1_digit0.png", "feature_maps_conv1_digit1.png",
                                                     "feature_maps_dense_digit0.png"]
    zero, one = (png_pixels(workdir / "plots" / f"feature_maps_conv1_digit{i}.png") for i in (0, 1))
    assert_differ(zero, one)
    capsys.readouterr()

    assert cli.main(["visualize", "--workdir", str(workdir), "--layer", "conv7", str(tmp_path / "digit0.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no layer 'conv7'" in err and "its layers: conv1, dense" in err and len(err.splitlines()) == 1
    assert cli.main(["visualize", "--workdir", str(workdir), "--layer", "conv1"]) == 2
    assert "--layer needs an IMAGE" in capsys.readouterr().err
    assert cli.main(["visualize", "--workdir", str(workdir), str(tmp_path / "digit0.png")]) == 2
    assert "IMAGE needs --layer" in capsys.readouterr().err


def test_visualize_a_model_without_convolutions_says_so(tmp_path, capsys):
    from jaxcnn import config as config_lib
    from jaxcnn.train import fit
    config = config_lib.get_config()
    config.model, config.epochs, config.verbose = "mlp", 1, 0
    fit(config, str(tmp_path / "mlp"))
    capsys.readouterr()
    assert cli.main(["visualize", "--workdir", str(tmp_path / "mlp")]) == 0
    out = capsys.readouterr().out
    assert "no filters: mlp has no convolution layer" in out and "curves.png" in out
    records = [json.loads(line) for line in open(tmp_path / "mlp" / "metrics.jsonl")]
    assert len(records) == 1
