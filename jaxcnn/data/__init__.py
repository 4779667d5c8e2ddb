"""Datasets: sources (scikit-learn digits, any TFDS dataset), offline preparation,
and the on-device input pipeline.

`load(config)` returns a `Dataset` of in-memory splits (uint8 or small-int images,
NHWC, with integer labels); `pipeline.DeviceSplit` puts a split on the device mesh
and yields sharded batches.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Split:
    images: np.ndarray  # (N, H, W, C), integer pixels in [0, Dataset.pixel_max]
    labels: np.ndarray  # (N,) int32

    def __len__(self) -> int:
        return len(self.labels)


@dataclasses.dataclass
class Dataset:
    name: str
    train: Split
    validation: Split | None
    test: Split
    class_names: list[str]
    pixel_max: float  # images are divided by this to lie in [0, 1]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.train.images.shape[1:])

    def describe(self) -> dict:
        """What a trained model needs to know of its data (the workdir's dataset.json):
        enough to preprocess a new image and name the predicted class."""
        sizes = {"train": len(self.train), "test": len(self.test)}
        if self.validation is not None:
            sizes["validation"] = len(self.validation)
        return {"name": self.name, "image_shape": list(self.image_shape), "class_names": self.class_names,
                "pixel_max": self.pixel_max, "num_examples": sizes}


def carve_validation(train: Split, fraction: float, seed: int = 0) -> tuple[Split, Split | None]:
    """Holds out `fraction` of train (a fixed-seed permutation, stratified by class)."""
    if not fraction:
        return train, None
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(train.labels):
        idx = np.flatnonzero(train.labels == c)
        held.append(rng.permutation(idx)[: round(len(idx) * fraction)])
    held = np.sort(np.concatenate(held))
    keep = np.setdiff1d(np.arange(len(train)), held)
    return (Split(train.images[keep], train.labels[keep]),
            Split(train.images[held], train.labels[held]))


def load(config) -> Dataset:
    """Loads `config.dataset` into memory; without a validation split of its own,
    `config.validation_split` of train is held out for validation."""
    from jaxcnn.data import sources
    dataset = sources.load(config.dataset, data_dir=config.data_dir, download=config.download)
    if dataset.validation is not None:
        return dataset
    train, validation = carve_validation(dataset.train, config.validation_split)
    return dataclasses.replace(dataset, train=train, validation=validation)
