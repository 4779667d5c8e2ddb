"""Data sources, the on-device pipeline, and offline MNIST preparation."""

import os

import numpy as np
import pytest
import jax

from jaxcnn import config as config_lib
from jaxcnn import data as data_lib
from jaxcnn.data import Split, pipeline, prepare, sources
from jaxcnn.errors import UserError

# ../shared/data/README.md
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_digits_is_a_stratified_seeded_split():
    a, b = sources.load_digits(), sources.load_digits()
    assert (len(a.train), len(a.test)) == (1437, 360)
    assert a.image_shape == (8, 8, 1) and a.pixel_max == 16 and a.num_classes == 10
    np.testing.assert_array_equal(a.test.labels, b.test.labels)
    test_share = np.bincount(a.test.labels) / np.bincount(np.concatenate([a.train.labels, a.test.labels]))
    np.testing.assert_allclose(test_share, 0.2, atol=0.02)


def test_validation_is_carved_from_train_stratified_and_disjoint():
    images = np.arange(1000).reshape(1000, 1, 1, 1)
    labels = np.repeat(np.arange(4), 250).astype(np.int32)
    train, val = data_lib.carve_validation(Split(images, labels), 0.1)
    assert (len(train), len(val)) == (900, 100)
    np.testing.assert_array_equal(np.bincount(val.labels), [25] * 4)
    assert not set(train.images.ravel()) & set(val.images.ravel())
    again, _ = data_lib.carve_validation(Split(images, labels), 0.1)
    np.testing.assert_array_equal(train.images, again.images)


def indexed_split(n=103):
    """Images whose single pixel is the example's index, so batches reveal the order."""
    return Split(np.arange(n, dtype=np.int32).reshape(n, 1, 1, 1), np.arange(n, dtype=np.int32) % 7)


def epoch_indices(split, key, epoch):
    seen = []
    for batch in split.batches(key, epoch):
        mask = np.asarray(batch["mask"]) > 0
        seen.append(np.asarray(batch["image"])[mask].ravel())
    return np.concatenate(seen).astype(int)


def test_each_example_is_seen_exactly_once_per_epoch_in_a_seeded_order():
    split = pipeline.DeviceSplit(indexed_split(), pipeline.make_mesh(), batch_size=16, pixel_max=1.0)
    assert split.num_batches == 7  # 103 = 6 * 16 + 7: the last batch is padded and masked
    key = jax.random.key(0)
    first = epoch_indices(split, key, 0)
    np.testing.assert_array_equal(np.sort(first), np.arange(103))
    np.testing.assert_array_equal(first, epoch_indices(split, key, 0))  # same seed and epoch: same order
    assert not np.array_equal(first, epoch_indices(split, key, 1))  # a new order each epoch
    np.testing.assert_array_equal(epoch_indices(split, None, 0), np.arange(103))  # eval order


def test_batches_are_scaled_masked_and_keep_their_shape():
    split = pipeline.DeviceSplit(indexed_split(20), pipeline.make_mesh(), batch_size=8, pixel_max=20.0)
    batches = list(split.batches())
    assert [b["image"].shape for b in batches] == [(8, 1, 1, 1)] * 3
    np.testing.assert_array_equal(batches[-1]["mask"], [1, 1, 1, 1, 0, 0, 0, 0])
    assert float(batches[0]["image"].max()) <= 1.0 and batches[0]["image"].dtype == np.float32


def test_resuming_inside_an_epoch_continues_the_same_order():
    split = pipeline.DeviceSplit(indexed_split(), pipeline.make_mesh(), batch_size=16, pixel_max=1.0)
    key = jax.random.key(3)
    full = [np.asarray(b["image"]) for b in split.batches(key, 2)]
    rest = [np.asarray(b["image"]) for b in split.batches(key, 2, start=4)]
    np.testing.assert_array_equal(np.stack(full[4:]), np.stack(rest))


def test_missing_prepared_dataset_names_the_prepare_command(tmp_path):
    with pytest.raises(UserError, match=r"jaxcnn data prepare mnist .*--data_dir"):
        sources.load_tfds("mnist", data_dir=str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_unknown_dataset_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="unknown dataset 'no_such_set'"):
        sources.load_tfds("no_such_set", data_dir=str(tmp_path))


def test_prepared_mnist_has_the_canonical_sizes_and_label_counts(mnist_data_dir):
    import tensorflow_datasets as tfds
    for split, counts in (("train", MNIST_TRAIN_COUNTS), ("test", MNIST_TEST_COUNTS)):
        images, labels = tfds.as_numpy(tfds.load("mnist", split=split, data_dir=mnist_data_dir, download=False,
                                                 batch_size=-1, as_supervised=True))
        assert images.shape == (sum(counts), 28, 28, 1) and images.dtype == np.uint8
        np.testing.assert_array_equal(np.bincount(labels), counts)
    builder = tfds.builder("mnist", data_dir=mnist_data_dir)
    assert str(builder.info.version) == "3.0.1"
    assert builder.info.features["label"].num_classes == 10


def test_prepared_mnist_matches_the_official_pixel_statistics(mnist_data_dir):
    config = config_lib.apply_overrides(config_lib.get_config(), {
        "dataset": "mnist", "data_dir": mnist_data_dir, "validation_split": "0.0", "preprocess.normalize": "dataset"})
    dataset = data_lib.load(config)
    pixels = dataset.train.images / dataset.pixel_max
    assert abs(pixels.mean() - 0.1307) < 1e-4 and abs(pixels.std() - 0.3081) < 1e-4
    # normalize=dataset measured the same statistics, and dataset.json records them
    np.testing.assert_allclose(dataset.mean + dataset.std, (pixels.mean(), pixels.std()), atol=1e-9)
    assert dataset.describe()["mean"] == list(dataset.mean)


def test_prepared_mnist_gives_random_access_through_tfds_data_source(mnist_data_dir):
    import tensorflow_datasets as tfds
    source = tfds.data_source("mnist:3.0.1", data_dir=mnist_data_dir, download=False)
    assert (len(source["train"]), len(source["test"])) == (60000, 10000)
    images, labels = tfds.as_numpy(tfds.load("mnist", split="test[:3]", data_dir=mnist_data_dir, download=False,
                                             batch_size=-1, as_supervised=True))
    for i in range(3):
        np.testing.assert_array_equal(source["test"][i]["image"], images[i])
        assert source["test"][i]["label"] == labels[i]


def test_preparing_again_keeps_the_dataset_and_leaves_no_temporaries(mnist_data_dir):
    from conftest import MNIST_SOURCE
    path, built = prepare.prepare("mnist", MNIST_SOURCE, mnist_data_dir)
    assert not built and os.path.isdir(path)
    assert sorted(os.listdir(mnist_data_dir)) == ["mnist"]


def test_prepare_from_a_wrong_folder_fails_cleanly(tmp_path):
    (tmp_path / "src").mkdir()
    with pytest.raises(UserError, match="not found"):
        prepare.prepare("mnist", str(tmp_path / "src"), str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out" / "mnist")
    assert os.listdir(tmp_path / "out") == []


def test_prepare_rejects_a_file_that_is_not_mnist(tmp_path):
    import gzip, shutil
    from conftest import MNIST_SOURCE
    src = tmp_path / "src"
    src.mkdir()
    for name in os.listdir(MNIST_SOURCE):
        shutil.copy(os.path.join(MNIST_SOURCE, name), src / name)
    with gzip.open(src / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"\x00\x00\x08\x01" + (123).to_bytes(4, "big") + bytes(123))
    with pytest.raises(UserError, match="not the official MNIST test labels"):
        prepare.prepare("mnist", str(src), str(tmp_path / "out"))
