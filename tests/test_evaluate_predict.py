"""`jaxcnn predict`: image files of any format and size, prepared as the training data was,
checked against the model's probabilities on the dataset's own arrays."""

import json

import numpy as np
import pytest
from PIL import Image

from jaxcnn import cli, inference
from jaxcnn.data import sources
from jaxcnn.errors import UserError

DIGITS_INFO = {"image_shape": [8, 8, 1], "class_names": [str(i) for i in range(10)], "pixel_max": 16.0}


@pytest.fixture(scope="module")
def run(digits_run):
    return inference.load_run(digits_run)


@pytest.fixture(scope="module")
def test_digits():
    return sources.load_digits().test


def as_8bit(image_0_16):
    """A digits image (0..16) at an image file's full 8-bit scale (0..255)."""
    return np.round(image_0_16[..., 0].astype(np.float64) * 255 / 16).astype(np.uint8)


def test_load_run_restores_the_trained_state(run, digits_run):
    assert run.step == 162 and run.epoch == 2 and run.checkpoint == "latest"
    assert run.class_names == DIGITS_INFO["class_names"] and run.image_shape == (8, 8, 1)
    assert run.head.kind == "softmax" and run.config.model == "simple_cnn"
    import orbax.checkpoint as ocp
    manager = ocp.CheckpointManager(f"{digits_run}/checkpoints")
    raw = manager.restore(162)["state"]["params"]
    np.testing.assert_array_equal(np.asarray(run.state.params["conv1"]["kernel"]), raw["conv1"]["kernel"])


def test_a_png_of_the_trained_size_gives_the_models_probabilities(run, test_digits, tmp_path):
    images = test_digits.images[:20]
    paths = []
    for i, image in enumerate(images):
        path = tmp_path / f"{i}.png"
        Image.fromarray(as_8bit(image)).save(path)
        paths.append(str(path))
    from_files = run.probabilities(inference.load_images(paths, run.dataset_info))
    from_arrays = run.probabilities(images.astype(np.float32) / 16.0)
    # 8-bit rounding moves a pixel by at most 0.5/255 of the range.
    np.testing.assert_allclose(from_files, from_arrays, atol=5e-3)
    np.testing.assert_array_equal(from_files.argmax(1), from_arrays.argmax(1))


def test_jpeg_rgb_and_other_sizes_are_converted_and_resized(run, test_digits, tmp_path):
    images = test_digits.images[:30]
    expected = run.probabilities(images.astype(np.float32) / 16.0).argmax(1)
    paths = []
    for i, image in enumerate(images):
        big = Image.fromarray(as_8bit(image)).resize((64, 64), Image.Resampling.NEAREST)
        path = tmp_path / (f"{i}.jpg" if i % 2 else f"{i}.png")
        (big.convert("RGB") if i % 2 else big).save(path, **({"quality": 95} if i % 2 else {}))
        paths.append(str(path))
    got = inference.load_images(paths, run.dataset_info)
    assert got.shape == (30, 8, 8, 1) and got.dtype == np.float32 and 0 <= got.min() and got.max() <= 1
    # Shrinking averages areas: 8 -> 64 (nearest) -> 8 gives the PNGs' pixels back exactly;
    # JPEG compression moves them a little. The classes agree.
    np.testing.assert_allclose(got[::2, ..., 0], np.stack([as_8bit(im) for im in images[::2]]) / 255, atol=1e-6)
    assert np.abs(got[1::2] - images[1::2] / 16.0).mean() < 0.02
    agree = np.mean(run.probabilities(got).argmax(1) == expected)
    assert agree >= 0.9, agree


def test_image_modes_16_bit_rgba_palette_and_rgb_models(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "g16.png")  # 16-bit grayscale
    Image.fromarray(gray).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(gray).convert("P").save(tmp_path / "palette.gif")
    expected = gray.astype(np.float32)[..., None] / 255
    for name in ("g16.png", "rgba.png", "palette.gif"):
        np.testing.assert_allclose(inference.load_image(str(tmp_path / name), DIGITS_INFO), expected, atol=1 / 255)
    rgb_info = {**DIGITS_INFO, "image_shape": [8, 8, 3]}
    for name in ("g16.png", "rgba.png"):
        np.testing.assert_allclose(inference.load_image(str(tmp_path / name), rgb_info),
                                   np.repeat(expected, 3, axis=-1), atol=1 / 255)


def test_mean_and_std_in_dataset_json_normalize_after_scaling(tmp_path):
    pixels = np.array([[[0, 128, 255]] * 4] * 4, np.uint8)
    Image.fromarray(pixels).save(tmp_path / "rgb.png")
    info = {"image_shape": [4, 4, 3], "class_names": ["a", "b"], "pixel_max": 255.0,
            "mean": [0.5, 0.25, 0.0], "std": [0.5, 0.25, 2.0]}
    got = inference.load_image(str(tmp_path / "rgb.png"), info)
    np.testing.assert_allclose(got[0, 0], [(0 - 0.5) / 0.5, (128 / 255 - 0.25) / 0.25, (1.0 - 0.0) / 2.0], rtol=1e-6)


def test_predict_cli_prints_the_top_k(digits_run, test_digits, tmp_path, capsys, run):
    png, jpeg = tmp_path / "a.png", tmp_path / "b.jpeg"
    Image.fromarray(as_8bit(test_digits.images[0])).save(png)
    Image.fromarray(as_8bit(test_digits.images[1])).resize((24, 24)).convert("RGB").save(jpeg, quality=95)
    assert cli.main(["predict", "--workdir", digits_run, str(png), str(jpeg)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(png) and lines[6] == str(jpeg) and len(lines) == 12  # k = min(5, 10)
    probs = run.probabilities(inference.load_images([str(png)], run.dataset_info))[0]
    order = np.argsort(-probs)[:5]
    assert lines[1:6] == [f"  {rank}. {order[rank - 1]}  {probs[order[rank - 1]]:.4f}" for rank in range(1, 6)]

    assert cli.main(["predict", "--workdir", digits_run, str(png), "--json", "--top_k", "3"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["image"] == str(png)
    assert [c["class"] for c in result["top_k"]] == [str(i) for i in order[:3]]
    assert [c["probability"] for c in result["top_k"]] == pytest.approx(probs[order[:3]], abs=1e-7)


def test_top_k_is_at_most_the_class_count():
    probs = np.array([0.1, 0.7, 0.2])
    assert inference.top_k(probs, ["a", "b", "c"]) == [("b", 0.7), ("c", 0.2), ("a", 0.1)]
    assert inference.top_k(probs, ["a", "b", "c"], k=10) == inference.top_k(probs, ["a", "b", "c"])
    assert inference.top_k(probs, ["a", "b", "c"], k=1) == [("b", 0.7)]


def test_unreadable_or_missing_images_are_one_line_exit_2(digits_run, tmp_path, capsys):
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 20)
    for name, message in (("text.png", "cannot read image"), ("cut.jpg", "cannot read image"),
                          ("missing.png", "does not exist")):
        assert cli.main(["predict", "--workdir", digits_run, str(tmp_path / name)]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and str(tmp_path / name) in err and len(err.splitlines()) == 1, err
    with pytest.raises(UserError, match="1 .grayscale. or 3 .RGB."):
        inference.load_image(str(tmp_path / "text.png"), {**DIGITS_INFO, "image_shape": [8, 8, 4]})
