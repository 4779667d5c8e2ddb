"""MNIST from the official IDX files, as the stock TFDS `mnist` dataset (same name,
version, features and splits), without the network.

The stock builder downloads and checks the .gz archives' checksums; copies re-gzipped
elsewhere (or never gzipped) fail that check although the bytes inside are the
official ones. This builder reads the files from a local folder instead, checks the
IDX headers, and reuses the stock builder for everything else.
"""

import gzip
import os
import struct

from tensorflow_datasets.image_classification import mnist as stock
import tensorflow_datasets as tfds

from jaxcnn.errors import UserError

FILES = {
    "train_data": (stock._MNIST_TRAIN_DATA_FILENAME, 2051, 60000),
    "train_labels": (stock._MNIST_TRAIN_LABELS_FILENAME, 2049, 60000),
    "test_data": (stock._MNIST_TEST_DATA_FILENAME, 2051, 10000),
    "test_labels": (stock._MNIST_TEST_LABELS_FILENAME, 2049, 10000),
}


def find_files(source: str) -> dict[str, str]:
    """The four IDX files in `source` (gzipped or not), with their headers checked."""
    found = {}
    for key, (gz_name, magic, count) in FILES.items():
        candidates = [os.path.join(source, gz_name), os.path.join(source, gz_name[: -len(".gz")])]
        path = next((p for p in candidates if os.path.isfile(p)), None)
        if path is None:
            raise UserError(f"MNIST file {gz_name} (or its unzipped form) not found in {source}; "
                            "pass --source a folder with the four official IDX files")
        opener = gzip.open if path.endswith(".gz") else open
        try:
            with opener(path, "rb") as f:
                header = f.read(16 if magic == 2051 else 8)
                labels = f.read() if magic == 2049 else b""
        except (OSError, EOFError) as e:
            raise UserError(f"cannot read {path}: {e}; re-download the official MNIST file") from None
        got_magic, got_count = struct.unpack(">II", header[:8])
        dims = struct.unpack(">II", header[8:16]) if magic == 2051 else None
        if got_magic != magic or got_count != count or dims not in (None, (28, 28)):
            raise UserError(f"{path} is not the official MNIST {key.replace('_', ' ')} file "
                            f"(IDX magic {got_magic}, {got_count} items; expected {magic}, {count})")
        bad = [i for i, label in enumerate(labels) if label > 9]
        if bad:
            raise UserError(f"{path}: label {labels[bad[0]]} of image {bad[0]} is outside 0..9 "
                            f"({len(bad)} such labels); the file is corrupt, re-download it")
        found[key] = path
    return found


class OfflineMNIST(stock.MNIST, skip_registration=True):
    """The stock `mnist` builder, reading the IDX files from a local folder."""

    name = "mnist"

    def __init__(self, *, source_dir: str, **kwargs):
        self._files = find_files(source_dir)
        super().__init__(**kwargs)

    def _split_generators(self, dl_manager):
        gzipped = {k: p for k, p in self._files.items() if p.endswith(".gz")}
        paths = {**self._files, **(dl_manager.extract(gzipped) if gzipped else {})}
        return [
            tfds.core.SplitGenerator(name=split, gen_kwargs=dict(
                num_examples=FILES[f"{split}_data"][2],
                data_path=os.fspath(paths[f"{split}_data"]), label_path=os.fspath(paths[f"{split}_labels"])))
            for split in ("train", "test")
        ]
