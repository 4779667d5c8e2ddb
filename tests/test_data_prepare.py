"""`jaxcnn data prepare` for CIFAR-10 and class-per-folder trees: the real copies in
../shared/data against their README's canonical numbers and their raw files, and bad
input on small trees made here."""

import os
import tarfile

import numpy as np
import pytest
from PIL import Image

from conftest import CIFAR10_SOURCE, INTEL_SCENES_SOURCE
from jaxcnn import cli
from jaxcnn import config as config_lib
from jaxcnn import data as data_lib
from jaxcnn.data import cifar10, folders, prepare
from jaxcnn.errors import UserError

# ../shared/data/README.md
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SCENES = ["buildings", "forest", "glacier", "mountain", "sea", "street"]
SCENES_TEST_COUNTS = [344, 317, 384, 324, 385, 404]


def tfds_split(name, split, data_dir, **kwargs):
    import tensorflow_datasets as tfds
    return tfds.as_numpy(tfds.load(name, split=split, data_dir=data_dir, download=False, batch_size=-1, **kwargs))


# --- CIFAR-10 -------------------------------------------------------------------

@pytest.fixture(scope="module")
def cifar_train(cifar10_data_dir):
    """The prepared train split, read once: {'id', 'image', 'label'}."""
    return tfds_split("cifar10", "train", cifar10_data_dir)


def test_prepared_cifar10_is_the_stock_dataset_with_the_canonical_counts(cifar10_data_dir, cifar_train):
    import tensorflow_datasets as tfds
    builder = tfds.builder("cifar10", data_dir=cifar10_data_dir)
    assert str(builder.info.version) == "3.0.2"
    assert builder.info.features["label"].names == CIFAR_CLASSES
    test_images, test_labels = tfds_split("cifar10", "test", cifar10_data_dir, as_supervised=True)
    for images, labels, per_class in ((cifar_train["image"], cifar_train["label"], 5000),
                                      (test_images, test_labels, 1000)):
        assert images.shape == (10 * per_class, 32, 32, 3) and images.dtype == np.uint8
        np.testing.assert_array_equal(np.bincount(labels), [per_class] * 10)


def test_prepared_cifar10_holds_the_archives_records_pixel_for_pixel(cifar_train):
    with tarfile.open(os.path.join(CIFAR10_SOURCE, "cifar-10-binary.tar.xz"), "r|xz") as tar:
        member = next(m for m in tar if m.name.endswith(".bin"))  # streams only up to the first batch
        raw = np.frombuffer(tar.extractfile(member).read(), np.uint8).reshape(10000, 3073)
    first_id = (int(member.name[-5]) - 1) * 10000  # the stock ids number train records through batches 1..5
    expected_images = raw[:, 1:].reshape(10000, 3, 32, 32).transpose(0, 2, 3, 1)  # colour planes -> HWC
    index = np.array([int(i.decode().removeprefix("train_")) for i in cifar_train["id"]]) - first_id
    ours = (index >= 0) & (index < 10000)
    assert ours.sum() == 10000
    np.testing.assert_array_equal(cifar_train["image"][ours], expected_images[index[ours]])
    np.testing.assert_array_equal(cifar_train["label"][ours], raw[index[ours], 0])


def test_cifar10_pixel_statistics_and_the_he_et_al_validation_split(cifar_train):
    train = data_lib.Split(cifar_train["image"], cifar_train["label"].astype(np.int32))
    dataset = data_lib.Dataset("cifar10", train, None, train, CIFAR_CLASSES, pixel_max=255.0)
    options = config_lib.apply_overrides(config_lib.get_config(), {"preprocess.normalize": "dataset"}).preprocess
    normalized = data_lib.with_preprocess(dataset, options)
    np.testing.assert_allclose(normalized.mean, CIFAR_MEAN, atol=1e-4)
    np.testing.assert_allclose(normalized.std, CIFAR_STD, atol=1e-4)
    for c in range(3):  # independently: numpy in float64, one channel at a time
        channel = train.images[..., c]
        np.testing.assert_allclose(channel.mean(dtype=np.float64) / 255, normalized.mean[c], atol=1e-9)
        np.testing.assert_allclose(channel.std(dtype=np.float64) / 255, normalized.std[c], atol=1e-9)
    description = normalized.describe()
    assert description["mean"] == list(normalized.mean) and description["image_shape"] == [32, 32, 3]

    kept, validation = data_lib.carve_validation(train, 0.1)
    assert (len(kept), len(validation)) == (45000, 5000)
    np.testing.assert_array_equal(np.bincount(validation.labels), [500] * 10)


def test_cifar10_random_access_through_tfds_data_source(cifar10_data_dir):
    import tensorflow_datasets as tfds
    source = tfds.data_source("cifar10:3.0.2", data_dir=cifar10_data_dir, download=False)
    assert (len(source["train"]), len(source["test"])) == (50000, 10000)
    first = tfds_split("cifar10", "test[:2]", cifar10_data_dir)
    for i in range(2):
        np.testing.assert_array_equal(source["test"][i]["image"], first["image"][i])


def fake_cifar_folder(root, first_batch: bytes):
    root.mkdir()
    (root / "data_batch_1.bin").write_bytes(first_batch)
    for name in ("data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"):
        (root / name).write_bytes(b"")
    return str(root)


def test_cifar10_bad_batches_fail_cleanly(tmp_path):
    out = tmp_path / "out"
    truncated = fake_cifar_folder(tmp_path / "truncated", bytes(3073 * 10))
    with pytest.raises(UserError, match="data_batch_1.bin has 30,730 bytes"):
        prepare.prepare("cifar10", truncated, str(out))
    records = np.zeros((10000, 3073), np.uint8)
    records[17, 0] = 10
    bad_label = fake_cifar_folder(tmp_path / "label", records.tobytes())
    with pytest.raises(UserError, match="record 17 has label 10, outside 0..9"):
        prepare.prepare("cifar10", bad_label, str(out))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no CIFAR-10 binary batches"):
        prepare.prepare("cifar10", str(tmp_path / "empty"), str(out))
    assert not out.exists() or os.listdir(out) == []


def test_cifar10_archive_without_the_batches_is_refused(tmp_path):
    archive = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        readme = tmp_path / "readme.html"
        readme.write_text("not the data")
        tar.add(readme, arcname="cifar-10-batches-bin/readme.html")
    with pytest.raises(UserError, match="lacks data_batch_1.bin"):
        prepare.prepare("cifar10", str(archive), str(tmp_path / "out"))
    assert os.listdir(tmp_path / "out") == []
    assert cifar10.find_source(str(tmp_path)) == (None, str(archive))


# --- the natural-scenes folder tree ----------------------------------------------

def tree_counts(root):
    """{split: {class: number of image files}} by walking the tree (the oracle)."""
    return {split: {c: len(os.listdir(os.path.join(root, split, c))) for c in sorted(os.listdir(os.path.join(root, split)))}
            for split in ("train", "test")}


def test_prepared_scenes_have_the_counts_of_their_tree(intel_scenes_data_dir):
    import tensorflow_datasets as tfds
    counts = tree_counts(INTEL_SCENES_SOURCE)
    assert list(counts["train"].values()) == [400] * 6 and list(counts["test"].values()) == SCENES_TEST_COUNTS
    info = tfds.builder("intel_scenes", data_dir=intel_scenes_data_dir).info
    assert info.features["label"].names == SCENES and info.features["image"].shape == (150, 150, 3)
    for split in ("train", "test"):
        images, labels = tfds_split("intel_scenes", split, intel_scenes_data_dir, as_supervised=True)
        assert images.shape == (sum(counts[split].values()), 150, 150, 3)
        np.testing.assert_array_equal(np.bincount(labels), list(counts[split].values()))
    source = tfds.data_source("intel_scenes", data_dir=intel_scenes_data_dir)
    assert len(source["test"]) == sum(SCENES_TEST_COUNTS)


def test_prepared_scenes_hold_the_source_images(intel_scenes_data_dir):
    import tensorflow as tf
    got = tfds_split("intel_scenes", "test[:60]", intel_scenes_data_dir)
    for image, label, name in zip(got["image"], got["label"], got["image/filename"]):
        path = os.path.join(INTEL_SCENES_SOURCE, name.decode())
        assert name.decode().split(os.sep)[1] == SCENES[label]
        with Image.open(path) as original:
            size = original.size
        if size == (150, 150):  # stored as is: TensorFlow decodes the same bytes
            np.testing.assert_array_equal(image, tf.io.decode_image(tf.io.read_file(path), channels=3).numpy())
        else:
            np.testing.assert_array_equal(image, folders.decode(path, (150, 150)))


def test_scenes_load_for_training_with_a_resize_for_the_model(intel_scenes_data_dir):
    config = config_lib.apply_overrides(config_lib.get_config(), {
        "dataset": "intel_scenes", "data_dir": intel_scenes_data_dir, "preprocess.resize": "(64, 64)"})
    dataset = data_lib.load(config)
    assert dataset.class_names == SCENES and dataset.image_shape == (64, 64, 3)
    assert dataset.train.images.shape[1:] == (150, 150, 3)  # stored size; resized per batch on device
    assert (len(dataset.train), len(dataset.validation), len(dataset.test)) == (2160, 240, 2158)
    assert dataset.describe()["image_shape"] == [64, 64, 3]


# --- folder trees made here: layouts and bad input ------------------------------

def make_tree(root, layout, size=(8, 8), mode="RGB"):
    """layout: {relative class folder: number of images}; image i of a folder has value i."""
    for folder, count in layout.items():
        os.makedirs(root / folder, exist_ok=True)
        for i in range(count):
            Image.new(mode, (size[1], size[0]), color=(i * 10,) * len(mode)).save(root / folder / f"{i}.png")
    return str(root)


def test_a_tree_without_split_folders_holds_out_a_stratified_test_split(tmp_path):
    source = make_tree(tmp_path / "pets", {"cat": 10, "dog": 20}, mode="L")
    path, built = prepare.prepare("folder", source, str(tmp_path / "out"), test_fraction=0.2)
    assert built and path.endswith(os.path.join("pets", "1.0.0"))
    test = tfds_split("pets", "test", str(tmp_path / "out"), as_supervised=True)
    train = tfds_split("pets", "train", str(tmp_path / "out"), as_supervised=True)
    np.testing.assert_array_equal(np.bincount(test[1]), [2, 4])
    np.testing.assert_array_equal(np.bincount(train[1]), [8, 16])
    assert train[0].shape == (24, 8, 8, 1)  # every image grayscale: one channel
    assert "pets 1.0.0: train 24, test 6 images of 8x8x1, 2 classes" in prepare.summary(path)


def test_a_corrupt_image_is_named_or_skipped_and_counted(tmp_path, capsys):
    source = make_tree(tmp_path / "src", {"train/a": 3, "train/b": 3, "test/a": 1, "test/b": 1})
    (tmp_path / "src" / "train" / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    out = str(tmp_path / "out")
    with pytest.raises(UserError, match=r"corrupt or unreadable image .*train/b/broken.jpg.*--skip_corrupt"):
        prepare.prepare("folder", source, out, dataset_name="toy")
    assert not os.path.exists(out) or os.listdir(out) == []
    code = cli.main(["data", "prepare", "folder", "--source", source, "--data_dir", out, "--name", "toy"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "broken.jpg" in err
    code = cli.main(["data", "prepare", "folder", "--source", source, "--data_dir", out, "--name", "toy",
                     "--skip_corrupt"])
    assert code == 0
    assert "train 6, test 2 images of 8x8x3, 2 classes; skipped 1 corrupt image (train/b/broken.jpg)" in \
        capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["toy"]


@pytest.mark.parametrize("layout, message", [
    ({"train/a": 2, "train/b": 0, "test/a": 1}, r"class folder .*train/b has no images"),
    ({"train/a": 2, "test/a": 1, "test/z": 1}, r"class folders that train/ lacks: z"),
    ({"train/a": 2, "test/a": 1, "extra/a": 1}, r"mixes split folders"),
])
def test_bad_trees_fail_with_one_line_and_leave_nothing(tmp_path, layout, message):
    source = make_tree(tmp_path / "src", layout)
    with pytest.raises(UserError, match=message):
        prepare.prepare("folder", source, str(tmp_path / "out"), dataset_name="toy")
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


def test_images_of_different_sizes_need_a_resize(tmp_path):
    source = make_tree(tmp_path / "src", {"train/a": 3, "test/a": 1})
    make_tree(tmp_path / "src", {"train/b": 2}, size=(6, 9))
    with pytest.raises(UserError, match=r"images differ in size \(2 sizes\): 4 are 8x8, 2 are 6x9 .*--resize 8x8"):
        prepare.prepare("folder", source, str(tmp_path / "out"), dataset_name="toy")
    prepare.prepare("folder", source, str(tmp_path / "out"), dataset_name="toy", resize=(8, 8))
    images, labels = tfds_split("toy", "train", str(tmp_path / "out"), as_supervised=True)
    assert images.shape == (5, 8, 8, 3) and sorted(labels) == [0, 0, 0, 1, 1]


def test_prepare_options_are_checked(tmp_path):
    source = make_tree(tmp_path / "src", {"train/a": 1, "test/a": 1})
    with pytest.raises(UserError, match="is a TFDS dataset's name"):
        prepare.prepare("folder", source, str(tmp_path / "out"), dataset_name="mnist")
    with pytest.raises(UserError, match="is not a dataset name"):
        prepare.prepare("folder", source, str(tmp_path / "out"), dataset_name="My Scenes")
    with pytest.raises(UserError, match="--resize applies to folder datasets only"):
        prepare.prepare("cifar10", source, str(tmp_path / "out"), resize=(8, 8))
    with pytest.raises(UserError, match="no offline builder for 'imagenet'.*data prepare folder"):
        prepare.prepare("imagenet", source, str(tmp_path / "out"))
    with pytest.raises(UserError, match="not a size"):
        prepare.parse_size("big")
    assert prepare.parse_size("150") == (150, 150) and prepare.parse_size("32x48") == (32, 48)


def test_an_unprepared_folder_dataset_names_the_prepare_command(tmp_path):
    config = config_lib.apply_overrides(config_lib.get_config(), {"dataset": "my_scenes", "data_dir": str(tmp_path)})
    with pytest.raises(UserError, match=r"jaxcnn data prepare folder --source DIR --name my_scenes --data_dir"):
        data_lib.load(config)

