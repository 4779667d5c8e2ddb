"""The input pipeline with preprocessing and augmentation, in memory and streamed."""

import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

from conftest import run_python
from jaxcnn import config as config_lib
from jaxcnn import data as data_lib
from jaxcnn.data import Split, StreamedSplit, pipeline, prepare, sources
from jaxcnn.data.augment import Augment
from jaxcnn import inference
from jaxcnn.data.preprocess import Preprocess, read_image
from jaxcnn.errors import UserError

N = 103  # not a multiple of the batch size: the last batch is padded


def indexed(n=N, size=8):
    """Images whose pixels all equal the example's index (< 256), so batches reveal the order."""
    images = np.repeat(np.arange(n, dtype=np.uint8), size * size).reshape(n, size, size, 1)
    return Split(images, (np.arange(n) % 7).astype(np.int32))


def collect(split, key=None, epoch=0, start=0):
    return [{k: np.asarray(v) for k, v in b.items()} for b in split.batches(key, epoch, start)]


def seen(batches, pixel_max=255.0):
    """The example indices of real (unmasked) examples, in order."""
    return np.concatenate([np.rint(b["image"][b["mask"] > 0, 0, 0, 0] * pixel_max) for b in batches]).astype(int)


FLIP_CROP = Augment(crop_padding=2, flip=True)


def test_augmented_batches_depend_only_on_seed_epoch_and_batch_index():
    split = pipeline.DeviceSplit(Split(np.random.default_rng(0).integers(0, 256, (40, 8, 8, 3), np.uint8),
                                       np.zeros(40, np.int32)), pipeline.make_mesh(), 16, 255.0, augment=FLIP_CROP)
    key = jax.random.key(0)
    first, again, other = collect(split, key, 1), collect(split, key, 1), collect(split, key, 2)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a["image"], b["image"])
    assert not np.array_equal(first[0]["image"], other[0]["image"])
    resumed = collect(split, key, 1, start=1)  # exact resume inside an epoch: same augmented batches
    for a, b in zip(first[1:], resumed):
        np.testing.assert_array_equal(a["image"], b["image"])
    plain = collect(split)  # evaluation batches: never augmented
    np.testing.assert_array_equal(plain[0]["image"], split.images[:16] / np.float32(255))


def test_the_augmentation_changes_images_but_not_which_examples_an_epoch_holds():
    split = pipeline.DeviceSplit(indexed(), pipeline.make_mesh(), 16, 255.0, augment=Augment(flip=True))
    key = jax.random.key(1)
    plain = pipeline.DeviceSplit(indexed(), pipeline.make_mesh(), 16, 255.0)
    np.testing.assert_array_equal(seen(collect(split, key, 0)), seen(collect(plain, key, 0)))


def test_mixup_makes_soft_training_labels_and_leaves_evaluation_labels_alone():
    augment = Augment(mixup=0.4, num_classes=7)
    split = pipeline.DeviceSplit(indexed(), pipeline.make_mesh(), 16, 255.0, augment=augment)
    train = collect(split, jax.random.key(2))
    assert train[0]["label"].shape == (16, 7) and train[0]["label"].dtype == np.float32
    np.testing.assert_allclose(train[0]["label"].sum(1), 1.0, rtol=1e-6)
    evaluation = collect(split)
    assert evaluation[0]["label"].shape == (16,) and evaluation[0]["label"].dtype == np.int32


def test_dataset_json_reproduces_the_pipelines_preprocessing(tmp_path):
    rng = np.random.default_rng(3)
    train = Split(rng.integers(0, 256, (20, 12, 12, 3), np.uint8), np.arange(20, dtype=np.int32) % 2)
    dataset = data_lib.Dataset("toy", train, None, train, ["a", "b"], 255.0)
    options = config_lib.apply_overrides(config_lib.get_config(), {
        "preprocess.normalize": "dataset", "preprocess.resize": "(6, 9)"}).preprocess
    dataset = data_lib.with_preprocess(dataset, options)
    assert dataset.image_shape == (6, 9, 3)
    description = json.loads(json.dumps(dataset.describe()))  # as the workdir stores it
    assert description["image_shape"] == [6, 9, 3] and len(description["mean"]) == 3
    batch = collect(pipeline.DeviceSplit(train, pipeline.make_mesh(), 20, preprocess=dataset.preprocess))[0]
    assert batch["image"].shape == (20, 6, 9, 3)
    again = Preprocess.from_description(description)(train.images)
    np.testing.assert_allclose(batch["image"], again, atol=1e-5)
    scaled = Preprocess(255.0, size=(6, 9))(train.images)  # normalized: per-channel mean 0, std 1
    np.testing.assert_allclose((np.asarray(scaled) - dataset.mean) / dataset.std, again, atol=1e-5)
    # A new image file, as `jaxcnn predict` reads one.
    Image.fromarray(train.images[4]).save(tmp_path / "new.png")
    read, full_scale = read_image(str(tmp_path / "new.png"), channels=3)
    np.testing.assert_array_equal(read, train.images[4])
    assert full_scale == 255.0
    np.testing.assert_allclose(inference.load_image(str(tmp_path / "new.png"), description), batch["image"][4],
                               atol=1e-5)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(UserError, match="cannot read image .*bad.jpg"):
        read_image(str(tmp_path / "bad.jpg"), channels=3)


def test_preprocess_options_are_checked():
    base = config_lib.get_config()
    for overrides, message in [({"preprocess.normalize": "zscore"}, "is not one of"),
                               ({"preprocess.normalize": "custom"}, "needs preprocess.mean"),
                               ({"preprocess.mean": "(0.5,)", "preprocess.std": "(0.5,)"}, "only with"),
                               ({"preprocess.resize": "(0, 3)"}, "must be \\(height, width\\)"),
                               ({"in_memory_limit_mb": "-1.0"}, "in_memory_limit_mb")]:
        with pytest.raises(UserError, match=message):
            config_lib.apply_overrides(base, overrides)


def test_augmentation_does_not_depend_on_the_number_of_devices():
    code = """
import jax, numpy as np
from jaxcnn.data import Split, pipeline
from jaxcnn.data.augment import Augment
images = np.random.default_rng(0).integers(0, 256, (64, 8, 8, 3), np.uint8)
split = pipeline.DeviceSplit(Split(images, np.zeros(64, np.int32)), pipeline.make_mesh(), 32, 255.0,
                             augment=Augment(crop_padding=2, flip=True, brightness=0.1, cutout=3))
batch = next(split.batches(jax.random.key(5), 3))
print(len(jax.devices()), float(np.asarray(batch['image'], np.float64).sum()))
"""
    results = []
    for devices in (1, 2):
        out = run_python(code, env={"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"})
        assert out.returncode == 0, out.stderr[-2000:]
        count, total = out.stdout.split()
        results.append((int(count), float(total)))
    assert [c for c, _ in results] == [1, 2]
    assert results[0][1] == pytest.approx(results[1][1], rel=1e-6)


# --- streaming ----------------------------------------------------------------

@pytest.fixture(scope="module")
def indexed_data_dir(tmp_path_factory):
    """A folder dataset 'indexed' of 8x8 grayscale images whose pixels equal their index."""
    root = tmp_path_factory.mktemp("indexed_src")
    split = indexed()
    for i, (image, label) in enumerate(zip(split.images, split.labels)):
        for part in ("train",) + (("test",) if i < 14 else ()):
            folder = root / part / f"c{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[..., 0]).save(folder / f"{i:03d}.png")
    data_dir = str(tmp_path_factory.mktemp("indexed_tfds"))
    prepare.prepare("folder", str(root), data_dir, dataset_name="indexed")
    return data_dir


def streamed_config(data_dir, **overrides):
    return config_lib.apply_overrides(config_lib.get_config(), {
        "dataset": "indexed", "data_dir": data_dir, "in_memory_limit_mb": "0", **overrides})


def test_a_dataset_over_the_memory_limit_streams_each_example_once_per_epoch(indexed_data_dir):
    dataset = data_lib.load(streamed_config(indexed_data_dir, validation_split="0.0"))
    assert isinstance(dataset.train, StreamedSplit) and len(dataset.train) == N
    split = pipeline.make_split(dataset.train, pipeline.make_mesh(), 16, dataset.preprocess)
    assert isinstance(split, pipeline.StreamSplit) and split.num_batches == 7
    key = jax.random.key(0)
    batches = collect(split, key, 0)
    assert [b["image"].shape for b in batches] == [(16, 8, 8, 1)] * 7
    np.testing.assert_array_equal(batches[-1]["mask"], [1] * 7 + [0] * 9)
    first = seen(batches)
    np.testing.assert_array_equal(np.sort(first), np.arange(N))
    labels = np.concatenate([b["label"][b["mask"] > 0] for b in batches])
    np.testing.assert_array_equal(labels, first % 7)  # each image keeps its label
    np.testing.assert_array_equal(first, seen(collect(split, key, 0)))  # same seed and epoch: same order
    assert not np.array_equal(first, seen(collect(split, key, 1)))  # a new order each epoch
    np.testing.assert_array_equal(seen(collect(split, key, 0, start=3)), first[3 * 16:])  # resume inside an epoch
    np.testing.assert_array_equal(seen(collect(split)), seen(collect(split)))  # evaluation: the stored order


def test_streamed_batches_are_augmented_like_in_memory_ones(indexed_data_dir):
    dataset = data_lib.load(streamed_config(indexed_data_dir, validation_split="0.0"))
    mesh, key = pipeline.make_mesh(), jax.random.key(4)
    augment = Augment(crop_padding=1, flip=True)
    streamed = collect(pipeline.make_split(dataset.train, mesh, 16, dataset.preprocess, augment), key, 2)
    again = collect(pipeline.make_split(dataset.train, mesh, 16, dataset.preprocess, augment), key, 2)
    for a, b in zip(streamed, again):
        np.testing.assert_array_equal(a["image"], b["image"])
    # Same images in the same order through the in-memory pipeline's batch function: same augmentation.
    order = seen(collect(pipeline.make_split(dataset.train, mesh, 16, dataset.preprocess), key, 2))
    in_memory = pipeline.DeviceSplit(Split(indexed().images[np.resize(order, 7 * 16)], np.zeros(7 * 16, np.int32)),
                                     mesh, 16, 255.0, augment=augment)
    aug_key = pipeline.augment_key(key, 2)
    for i, batch in enumerate(streamed):
        expected = in_memory._take(in_memory.images, in_memory.labels, np.arange(7 * 16, dtype=np.int32),
                                   np.ones(7 * 16, np.float32), i, aug_key)
        real = batch["mask"] > 0  # padding rows differ: each pipeline pads in its own way
        np.testing.assert_array_equal(batch["image"][real], np.asarray(expected["image"])[real])


def test_streamed_validation_is_the_end_of_train(indexed_data_dir):
    dataset = data_lib.load(streamed_config(indexed_data_dir, validation_split="0.2"))
    assert (len(dataset.train), len(dataset.validation), len(dataset.test)) == (82, 21, 14)
    mesh = pipeline.make_mesh()
    train = seen(collect(pipeline.make_split(dataset.train, mesh, 16, dataset.preprocess)))
    validation = seen(collect(pipeline.make_split(dataset.validation, mesh, 16, dataset.preprocess)))
    np.testing.assert_array_equal(np.sort(np.concatenate([train, validation])), np.arange(N))


def test_streamed_normalization_statistics(indexed_data_dir):
    dataset = data_lib.load(streamed_config(indexed_data_dir, validation_split="0.0",
                                            **{"preprocess.normalize": "dataset"}))
    values = np.arange(N) / 255.0
    np.testing.assert_allclose(dataset.mean, [values.mean()], atol=1e-9)
    np.testing.assert_allclose(dataset.std, [values.std()], atol=1e-9)


def test_training_on_a_streamed_dataset(indexed_data_dir, tmp_path):
    from jaxcnn.train import fit
    config = streamed_config(indexed_data_dir, **{"epochs": "1", "verbose": "0", "model": "mlp",
                                                  "augment.flip": "true", "augment.mixup": "0.2"})
    history = fit(config, str(tmp_path / "run"))
    assert np.isfinite(history.history["loss"][0]) and "val_loss" in history.history
    evaluation = json.load(open(tmp_path / "run" / "eval" / "test.json"))
    assert evaluation["num_examples"] == 14


# --- TFDS datasets whose images vary in size -----------------------------------

@pytest.fixture(scope="module")
def ragged_data_dir(tmp_path_factory):
    """A TFDS dataset 'ragged_toy' with images of two sizes (as tf_flowers or imagenet2012)."""
    import tensorflow_datasets as tfds

    class RaggedToy(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)), "label": tfds.features.ClassLabel(num_classes=2)}),
                supervised_keys=("image", "label"))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(12), "test": self._generate_examples(4)}

        def _generate_examples(self, n):
            for i in range(n):
                size = (6, 10) if i % 2 else (12, 12)
                yield i, {"image": np.full((*size, 3), 20 * i, np.uint8), "label": i % 2}

    sources.import_tensorflow()
    data_dir = str(tmp_path_factory.mktemp("ragged"))
    RaggedToy(data_dir=data_dir).download_and_prepare()
    return data_dir


def test_images_of_varying_size_are_resized_as_they_are_read(ragged_data_dir):
    with pytest.raises(UserError, match=r"vary in size; set --config.preprocess.resize"):
        sources.load_tfds("ragged_toy", data_dir=ragged_data_dir)
    dataset = sources.load_tfds("ragged_toy", data_dir=ragged_data_dir, resize=(8, 8))
    assert dataset.train.images.shape == (12, 8, 8, 3)
    constant = dataset.train.images.reshape(12, -1)  # a constant image stays constant when resized
    np.testing.assert_array_equal(np.sort(constant[:, 0]), np.arange(12) * 20)
    assert (constant == constant[:, :1]).all()
    streamed = sources.load_tfds("ragged_toy", data_dir=ragged_data_dir, resize=(8, 8), in_memory_limit_mb=0)
    batches = collect(pipeline.make_split(streamed.train, pipeline.make_mesh(), 4, Preprocess(255.0)))
    assert [b["image"].shape for b in batches] == [(4, 8, 8, 3)] * 3
