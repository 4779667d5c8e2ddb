"""Where images come from: scikit-learn's bundled digits, or any TFDS dataset.

TFDS datasets are read with `download=False` unless the config allows downloading:
on a machine without the network a stock `tfds.load` would hang for minutes.
Offline copies are built with `jaxcnn data prepare` (see `jaxcnn.data.prepare`).
"""

from __future__ import annotations

import os

import numpy as np

from jaxcnn.data import Dataset, Split
from jaxcnn.errors import UserError

# How to build each dataset offline, for the error message when it is missing.
PREPARE_HINTS = {
    "mnist": "jaxcnn data prepare mnist --source DIR_WITH_IDX_FILES",
}


def load(name: str, data_dir: str = "", download: bool = False) -> Dataset:
    if name == "digits":
        return load_digits()
    return load_tfds(name, data_dir=data_dir, download=download)


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


def import_tensorflow():
    """Imports TensorFlow for tf.data only: quiet, and never on an accelerator."""
    import tensorflow as tf
    tf.config.set_visible_devices([], "GPU")  # a full TensorFlow install would grab GPU memory
    return tf


def load_tfds(name: str, data_dir: str = "", download: bool = False) -> Dataset:
    """Reads a TFDS image-classification dataset (features `image`, `label`) into memory."""
    import_tensorflow()
    import tensorflow_datasets as tfds
    from absl import logging as absl_logging
    data_dir = data_dir or None
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)  # TFDS warns about each folder it probes
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        prepared = builder.is_prepared()
    except tfds.core.DatasetNotFoundError:
        raise UserError(f"unknown dataset '{name}': not a TFDS dataset and not prepared in "
                        f"{data_dir or 'the TFDS default data_dir'}; prepare it with `jaxcnn data prepare` "
                        f"or pick a name from `tfds.list_builders()`") from None
    finally:
        absl_logging.set_verbosity(verbosity)
    if not prepared:
        if not download:
            hint = PREPARE_HINTS.get(name, f"jaxcnn data prepare {name} --source DIR")
            where = f" --data_dir {data_dir}" if data_dir else ""
            raise UserError(f"dataset '{name}' is not prepared in {builder.data_dir}; run `{hint}{where}` "
                            f"(offline), or allow TFDS to download it with --config.download=true")
        builder.download_and_prepare()
    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise UserError(f"dataset '{name}' has features {list(features)}; an image-classification "
                        "dataset needs 'image' and 'label'")
    splits = builder.info.splits
    test_name = "test" if "test" in splits else "validation" if "validation" in splits else None
    if "train" not in splits or test_name is None:
        raise UserError(f"dataset '{name}' has splits {list(splits)}; it needs 'train' and 'test' (or 'validation')")

    def read(split: str) -> Split:
        ds = builder.as_dataset(split=split, batch_size=-1, as_supervised=True)
        images, labels = tfds.as_numpy(ds)
        return Split(images, labels.astype(np.int32))

    # A dataset's own validation split is used as is; otherwise one is carved from train.
    validation = read("validation") if test_name == "test" and "validation" in splits else None
    train = read("train")
    label = features["label"]
    class_names = list(label.names) if getattr(label, "names", None) else [str(i) for i in range(label.num_classes)]
    pixel_max = float(np.iinfo(train.images.dtype).max) if np.issubdtype(train.images.dtype, np.integer) else 1.0
    return Dataset(name, train, validation, read(test_name), class_names, pixel_max=pixel_max)
