"""Datasets: sources (scikit-learn digits, any TFDS dataset), offline preparation,
preprocessing, augmentation and the input pipeline.

`load(config)` returns a `Dataset` whose splits are either in memory (`Split`: uint8 or
small-int images, NHWC, with integer labels) or, when they are larger than
`config.in_memory_limit_mb`, streamed from disk (`StreamedSplit`). `pipeline.make_split`
turns a split into batches sharded over the device mesh.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxcnn.errors import UserError


@dataclasses.dataclass
class Split:
    images: np.ndarray  # (N, H, W, C), integer pixels in [0, Dataset.pixel_max]
    labels: np.ndarray  # (N,) int32

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])


@dataclasses.dataclass
class StreamedSplit:
    """A split read from disk batch by batch (tf.data), for datasets too large for memory."""
    builder: Any  # the TFDS DatasetBuilder
    split: str  # TFDS split spec, e.g. 'train[:45000]'
    num_examples: int
    image_shape: tuple[int, ...]  # (H, W, C) as batched (after `resize`)
    resize: tuple[int, int] | None = None  # images of varying size are resized to this on the host

    def __len__(self) -> int:
        return self.num_examples


@dataclasses.dataclass
class Dataset:
    name: str
    train: Split
    validation: Split | None
    test: Split
    class_names: list[str]
    pixel_max: float  # images are divided by this to lie in [0, 1]
    resize: tuple[int, int] | None = None  # (H, W) the model sees, when not the stored size
    mean: tuple[float, ...] | None = None  # per-channel normalization (0-1 scale); None: none
    std: tuple[float, ...] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """The shape of one image as the model sees it (after resizing)."""
        shape = self.train.image_shape
        return (*self.resize, shape[-1]) if self.resize else shape

    @property
    def preprocess(self):
        """The deterministic preprocessing of every split (`jaxcnn.data.preprocess`)."""
        from jaxcnn.data.preprocess import Preprocess
        return Preprocess(self.pixel_max, self.resize, self.mean, self.std)

    def describe(self) -> dict:
        """What a trained model needs to know of its data (the workdir's dataset.json):
        enough to preprocess a new image (`Preprocess.from_description`: scale by
        `pixel_max`, resize to `image_shape`, subtract `mean` and divide by `std`, both
        absent when not normalizing) and name the predicted class."""
        sizes = {"train": len(self.train), "test": len(self.test)}
        if self.validation is not None:
            sizes["validation"] = len(self.validation)
        return {"name": self.name, "image_shape": list(self.image_shape), "class_names": self.class_names,
                **self.preprocess.describe(), "num_examples": sizes}


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Sorted indices of `fraction` of each class's examples (a fixed-seed permutation)."""
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        held.append(rng.permutation(idx)[: round(len(idx) * fraction)])
    return np.sort(np.concatenate(held))


def carve_validation(train: Split, fraction: float, seed: int = 0) -> tuple[Split, Split | None]:
    """Holds out `fraction` of train (a fixed-seed permutation, stratified by class)."""
    if not fraction:
        return train, None
    held = stratified_holdout(train.labels, fraction, seed)
    keep = np.setdiff1d(np.arange(len(train)), held)
    return (Split(train.images[keep], train.labels[keep]),
            Split(train.images[held], train.labels[held]))


def check_config(config) -> None:
    """Validates the data keys of a config (`preprocess`, `augment`); raises UserError."""
    from jaxcnn.data import augment, preprocess
    preprocess.check_config(config.preprocess)
    augment.Augment.from_config(config.augment)
    if config.in_memory_limit_mb < 0:
        raise UserError(f"config.in_memory_limit_mb must be >= 0, got {config.in_memory_limit_mb}")


def load(config) -> Dataset:
    """Loads `config.dataset` (into memory, or as streams when larger than
    `config.in_memory_limit_mb`). Without a validation split of its own,
    `config.validation_split` of train is held out for validation. Resizing and
    normalization follow `config.preprocess`."""
    from jaxcnn.data import preprocess, sources
    check_config(config)
    resize = preprocess.resize(config.preprocess)
    dataset = sources.load(config.dataset, data_dir=config.data_dir, download=config.download, resize=resize,
                           in_memory_limit_mb=config.in_memory_limit_mb, validation_split=config.validation_split)
    if dataset.validation is None:
        train, validation = carve_validation(dataset.train, config.validation_split)
        dataset = dataclasses.replace(dataset, train=train, validation=validation)
    return with_preprocess(dataset, config.preprocess)


def with_preprocess(dataset: Dataset, options) -> Dataset:
    """`dataset` resized and normalized as `config.preprocess` says; normalize=dataset
    measures the per-channel mean and std of the train split."""
    from jaxcnn.data import preprocess
    resize = preprocess.resize(options)
    if resize == tuple(dataset.train.image_shape[:2]):
        resize = None

    def train_stats():
        from jaxcnn.data import sources
        if isinstance(dataset.train, Split):
            return preprocess.channel_stats(dataset.train.images, dataset.pixel_max)
        return sources.streamed_stats(dataset.train, dataset.pixel_max)

    mean, std = preprocess.normalization(options, train_stats, channels=dataset.train.image_shape[-1])
    return dataclasses.replace(dataset, resize=resize, mean=mean, std=std)
