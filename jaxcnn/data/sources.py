"""Where images come from: scikit-learn's bundled digits, the XOR truth table, or any TFDS dataset.

TFDS datasets are read with `download=False` unless the config allows downloading:
on a machine without the network a stock `tfds.load` would hang for minutes.
Offline copies are built with `jaxcnn data prepare` (see `jaxcnn.data.prepare`).
"""

from __future__ import annotations

import os

import numpy as np

from jaxcnn.data import Dataset, Split, StreamedSplit
from jaxcnn.errors import UserError

# How to build each dataset offline, for the error message when it is missing.
PREPARE_HINTS = {
    "mnist": "jaxcnn data prepare mnist --source DIR_WITH_IDX_FILES",
    "cifar10": "jaxcnn data prepare cifar10 --source DIR_WITH_CIFAR10_BINARY_OR_ARCHIVE",
}
# Examples a streamed split's shuffle buffer holds: the order is a buffer shuffle of
# shuffled files (as in the TFDS and big_vision ImageNet pipelines).
SHUFFLE_BUFFER = 16_384
# Examples of a streamed train split read to estimate normalize=dataset's statistics.
STATS_EXAMPLES = 20_000


def load(name: str, data_dir: str = "", download: bool = False, *, resize: tuple[int, int] | None = None,
         in_memory_limit_mb: float = float("inf"), validation_split: float = 0.0) -> Dataset:
    """Dataset `name`: `digits`, `xor`, or any TFDS image-classification dataset (see `load_tfds`)."""
    if name == "digits":
        return load_digits()
    if name == "xor":
        return load_xor()
    return load_tfds(name, data_dir=data_dir, download=download, resize=resize,
                     in_memory_limit_mb=in_memory_limit_mb, validation_split=validation_split)


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's 1,797 8x8 digits (pixels 0..16), stratified seeded train/test split."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split
    digits = sk_digits()
    images = digits.images.astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int32)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=test_fraction, stratify=labels, random_state=seed)
    return Dataset("digits", Split(x_tr, y_tr), None, Split(x_te, y_te),
                   [str(i) for i in range(10)], pixel_max=16.0)


def load_xor(repeats: int = 256) -> Dataset:
    """The XOR truth table as 1x2x1 "images" with pixels 0 or 1: class 1 when exactly one
    input is 1. Train holds the four points `repeats` times each (one epoch is then many
    updates), test the four points once. No line separates the classes, so a perceptron
    (or any stack of linear layers) gets at most 3 of the 4 right; one hidden layer with a
    non-linearity solves it."""
    inputs = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.uint8)
    images = inputs[:, None, :, None]  # (4, 1, 2, 1): NHWC
    labels = (inputs[:, 0] ^ inputs[:, 1]).astype(np.int32)
    train = Split(np.tile(images, (repeats, 1, 1, 1)), np.tile(labels, repeats))
    return Dataset("xor", train, None, Split(images, labels), ["0", "1"], pixel_max=1.0)


def import_tensorflow():
    """Imports TensorFlow for tf.data only: quiet, and never on an accelerator."""
    import tensorflow as tf
    tf.config.set_visible_devices([], "GPU")  # a full TensorFlow install would grab GPU memory
    return tf


def _builder(name: str, data_dir: str | None, download: bool):
    """The TFDS builder of `name`, prepared (downloading only when allowed)."""
    import tensorflow_datasets as tfds
    from absl import logging as absl_logging
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)  # TFDS warns about each folder it probes
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        prepared = builder.is_prepared()
    except tfds.core.DatasetNotFoundError:
        where = f" --data_dir {data_dir}" if data_dir else ""
        raise UserError(f"unknown dataset '{name}': not a TFDS dataset and not prepared in "
                        f"{data_dir or 'the TFDS default data_dir'}; for a class-per-folder image tree run "
                        f"`jaxcnn data prepare folder --source DIR --name {name}{where}`, or pick a name from "
                        "`tfds.list_builders()`") from None
    finally:
        absl_logging.set_verbosity(verbosity)
    if not prepared:
        if not download:
            hint = PREPARE_HINTS.get(name, f"jaxcnn data prepare {name} --source DIR")
            where = f" --data_dir {data_dir}" if data_dir else ""
            raise UserError(f"dataset '{name}' is not prepared in {builder.data_dir}; run `{hint}{where}` "
                            f"(offline), or allow TFDS to download it with --config.download=true")
        builder.download_and_prepare()
    return builder


def load_tfds(name: str, data_dir: str = "", download: bool = False, *, resize: tuple[int, int] | None = None,
              in_memory_limit_mb: float = float("inf"), validation_split: float = 0.0) -> Dataset:
    """A TFDS image-classification dataset (features `image` and `label`).

    Held in memory unless its images (uint8, at their stored size) exceed
    `in_memory_limit_mb`; then every split streams from disk, and the validation
    split, if the dataset has none, is the last `validation_split` of train (TFDS
    shuffled the records when it prepared them). Images of varying size are resized
    to `resize` on the host as they are read; without `resize` they are an error.
    """
    import_tensorflow()
    import tensorflow_datasets as tfds
    builder = _builder(name, data_dir or None, download)
    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise UserError(f"dataset '{name}' has features {list(features)}; an image-classification "
                        "dataset needs 'image' and 'label'")
    splits = builder.info.splits
    test_name = "test" if "test" in splits else "validation" if "validation" in splits else None
    if "train" not in splits or test_name is None:
        raise UserError(f"dataset '{name}' has splits {list(splits)}; it needs 'train' and 'test' (or 'validation')")
    own_validation = test_name == "test" and "validation" in splits

    image = features["image"]
    height, width, channels = image.shape
    host_resize = None
    if height is None or width is None:
        if resize is None:
            raise UserError(f"the images of '{name}' vary in size; set --config.preprocess.resize='(H, W)' "
                            "to resize them as they are read")
        host_resize, (height, width) = tuple(resize), resize
    shape = (height, width, channels)
    dtype = np.dtype(image.np_dtype)
    pixel_max = float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0
    label = features["label"]
    class_names = list(label.names) if getattr(label, "names", None) else [str(i) for i in range(label.num_classes)]

    used = ["train", test_name] + (["validation"] if own_validation else [])
    size_mb = sum(splits[s].num_examples for s in used) * int(np.prod(shape)) * dtype.itemsize / 2**20
    if size_mb > in_memory_limit_mb:
        def streamed(spec: str, count: int) -> StreamedSplit:
            return StreamedSplit(builder, spec, count, shape, host_resize)
        n_train = splits["train"].num_examples
        validation = streamed("validation", splits["validation"].num_examples) if own_validation else None
        train = streamed("train", n_train)
        if not own_validation and validation_split:
            n_val = round(n_train * validation_split)
            train = streamed(f"train[:{n_train - n_val}]", n_train - n_val)
            validation = streamed(f"train[{n_train - n_val}:]", n_val)
        test = streamed(test_name, splits[test_name].num_examples)
        return Dataset(name, train, validation, test, class_names, pixel_max=pixel_max)

    def read(split: str) -> Split:
        if host_resize is None:
            images, labels = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, as_supervised=True))
        else:
            ds = builder.as_dataset(split=split, as_supervised=True).map(
                lambda x, y: (resize_on_host(x, host_resize, dtype), y)).batch(1024)
            parts = list(tfds.as_numpy(ds))
            images = np.concatenate([p[0] for p in parts])
            labels = np.concatenate([p[1] for p in parts])
        bad = (labels < 0) | (labels >= len(class_names))
        if bad.any():
            raise UserError(f"dataset '{name}' split {split} has label {labels[bad][0]} outside 0..{len(class_names) - 1} "
                            f"({int(bad.sum())} examples); rebuild the dataset with `jaxcnn data prepare`")
        return Split(images, labels.astype(np.int32))

    # A dataset's own validation split is used as is; otherwise one is carved from train.
    validation = read("validation") if own_validation else None
    return Dataset(name, read("train"), validation, read(test_name), class_names, pixel_max=pixel_max)


def resize_on_host(image, size: tuple[int, int], dtype):
    """tf.image.resize (bilinear, antialiased) back to the integer dtype, for images of varying size."""
    import tensorflow as tf
    resized = tf.image.resize(image, size, method="bilinear", antialias=True)
    limit = np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 1.0
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, limit), dtype)


def stream(split: StreamedSplit, seed: int | None = None, skip: int = 0):
    """A tf.data.Dataset of (image, label) pairs of `split`: in the stored order without
    a seed; with one, its files and then a buffer of SHUFFLE_BUFFER examples are
    shuffled, deterministically: the same seed gives the same order. `skip` drops the
    first examples (resuming inside an epoch)."""
    tf = import_tensorflow()
    import tensorflow_datasets as tfds
    options = tf.data.Options()
    options.deterministic = True
    read_config = tfds.ReadConfig(shuffle_seed=seed, try_autocache=False, options=options)
    ds = split.builder.as_dataset(split=split.split, shuffle_files=seed is not None, as_supervised=True,
                                  read_config=read_config)
    if split.resize:
        dtype = np.dtype(split.builder.info.features["image"].np_dtype)
        ds = ds.map(lambda x, y: (resize_on_host(x, split.resize, dtype), y), num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True)
    if seed is not None:
        ds = ds.shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=False)
    if skip:
        ds = ds.skip(skip)
    return ds.with_options(options)


def streamed_stats(split: StreamedSplit, pixel_max: float) -> tuple[tuple, tuple]:
    """Per-channel mean and std (0-1 scale) of the first STATS_EXAMPLES examples of `split`."""
    from jaxcnn.data.preprocess import channel_stats
    batches = stream(split).take(STATS_EXAMPLES).batch(1024).as_numpy_iterator()
    return channel_stats((images for images, _ in batches), pixel_max)
