"""CIFAR-10 from the official binary batches, as the stock TFDS `cifar10` dataset (same
name, version, features and splits), without the network.

The stock builder downloads `cifar-10-binary.tar.gz` and checks its checksum; a copy
re-packed elsewhere (a .tar.xz, or records in another order) fails that check although
its pixels are the official ones. This builder takes a local folder holding the batch
files (directly or in `cifar-10-batches-bin/`) or their archive (.tar.gz, .tar.xz,
.tar.bz2, .tar), or the archive itself; checks every file's size and labels; and reuses
the stock builder for the rest (the records' decoding, features, splits, version).
"""

from __future__ import annotations

import os
import tarfile

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.image_classification import cifar as stock

from jaxcnn.errors import UserError

RECORD_BYTES = 1 + 32 * 32 * 3  # one label byte, then the red, green and blue planes
RECORDS_PER_FILE = 10_000
NUM_CLASSES = 10
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tar")
# The stock builder's file list (`_cifar_info` reads only the class attribute `name`).
INFO = stock.Cifar10._cifar_info.fget(stock.Cifar10)
META_FILE = INFO.label_files[0]
WANTED = (*INFO.train_files, *INFO.test_files, META_FILE)
# batches.meta.txt of the official distribution, for copies that lack it.
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _batch_folder(folder: str) -> str | None:
    """`folder` or its `cifar-10-batches-bin/` when it holds all six batch files."""
    for candidate in (folder, os.path.join(folder, INFO.prefix)):
        if all(os.path.isfile(os.path.join(candidate, f)) for f in (*INFO.train_files, *INFO.test_files)):
            return candidate
    return None


def _archive(source: str) -> str | None:
    if os.path.isfile(source):
        return source if source.endswith(ARCHIVE_SUFFIXES) else None
    for name in sorted(os.listdir(source)):
        if name.startswith("cifar-10") and name.endswith(ARCHIVE_SUFFIXES):
            return os.path.join(source, name)
    return None


def find_source(source: str) -> tuple[str | None, str | None]:
    """(folder with the batch files, or None; archive to extract, or None)."""
    folder = _batch_folder(source) if os.path.isdir(source) else None
    if folder:
        return folder, None
    archive = _archive(source)
    if archive:
        return None, archive
    raise UserError(f"no CIFAR-10 binary batches in {source}: expected data_batch_1.bin ... test_batch.bin "
                    "(or cifar-10-batches-bin/ or the cifar-10-binary.tar.gz/.tar.xz archive); "
                    "pass --source the folder or archive of the official binary version")


def extract(archive: str, into: str) -> str:
    """Extracts the batch files and class names from `archive`; returns their folder."""
    os.makedirs(into, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:  # compression is detected from the content
            for member in tar:
                if member.isfile() and os.path.basename(member.name) in WANTED:
                    member.name = os.path.basename(member.name)  # flat: no paths from the archive
                    tar.extract(member, into, filter="data")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UserError(f"cannot read the archive {archive}: {e}; re-download cifar-10-binary.tar.gz") from None
    missing = [f for f in (*INFO.train_files, *INFO.test_files) if not os.path.isfile(os.path.join(into, f))]
    if missing:
        raise UserError(f"the archive {archive} lacks {', '.join(missing)}; it is not the binary version "
                        "of CIFAR-10 (cifar-10-binary.tar.gz)")
    return into


def check_batches(folder: str) -> None:
    """Every batch file holds 10,000 whole records whose labels are 0..9."""
    for name in (*INFO.train_files, *INFO.test_files):
        path = os.path.join(folder, name)
        size = os.path.getsize(path)
        if size != RECORDS_PER_FILE * RECORD_BYTES:
            raise UserError(f"{path} has {size:,} bytes, not {RECORDS_PER_FILE:,} records of {RECORD_BYTES} bytes; "
                            "the file is truncated or not a CIFAR-10 binary batch")
        labels = np.fromfile(path, np.uint8)[::RECORD_BYTES]
        bad = np.flatnonzero(labels >= NUM_CLASSES)
        if bad.size:
            raise UserError(f"{path}: record {bad[0]} has label {labels[bad[0]]}, outside 0..{NUM_CLASSES - 1} "
                            f"({bad.size} such records); the file is corrupt")
    meta = os.path.join(folder, META_FILE)
    if os.path.isfile(meta):
        with open(meta) as f:
            names = [n for n in f.read().split("\n") if n]
        if len(names) != NUM_CLASSES:
            raise UserError(f"{meta} names {len(names)} classes, not {NUM_CLASSES}; the file is corrupt")


class OfflineCifar10(stock.Cifar10, skip_registration=True):
    """The stock `cifar10` builder, reading the binary batches from a local folder or archive."""

    name = "cifar10"

    def __init__(self, *, source_dir: str, **kwargs):
        self._folder, self._archive = find_source(source_dir)
        if self._folder:
            check_batches(self._folder)
        super().__init__(**kwargs)

    def _split_generators(self, dl_manager):
        folder = self._folder
        if folder is None:
            folder = extract(self._archive, os.path.join(os.fspath(dl_manager.download_dir), "cifar10"))
            check_batches(folder)
        meta = os.path.join(folder, META_FILE)
        if os.path.isfile(meta):  # as the stock builder: class names from the batches' own list
            with open(meta) as f:
                self.info.features["label"].names = [n for n in f.read().split("\n") if n]
        else:
            self.info.features["label"].names = CLASS_NAMES
        return {
            tfds.Split.TRAIN: self._generate_examples("train_", [os.path.join(folder, f) for f in INFO.train_files]),
            tfds.Split.TEST: self._generate_examples("test_", [os.path.join(folder, f) for f in INFO.test_files]),
        }

