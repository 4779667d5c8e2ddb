"""`jaxcnn data prepare`: build TFDS datasets offline from raw files.

A prepared dataset is a normal TFDS dataset under its stock name and version:
`tfds.load(name, data_dir=DIR, download=False)` reads it. Its records are also
written as ArrayRecord and registered as an alternative file format, so
`tfds.data_source(f'{name}:{version}', data_dir=DIR)` gives random access.
(TFDS 4.9.10 honours alternative formats only when the version is named; see
`DatasetInfo.read_from_directory`, which does not restore them for registered
builders.)

Everything is built in a temporary folder next to the target and renamed into
place at the end: an interrupted or failed prepare leaves nothing behind.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile

from jaxcnn.errors import UserError

# What `jaxcnn data prepare NAME` builds from: NAME -> what --source holds.
KINDS = {
    "mnist": "the four official IDX files (gzipped or not)",
    "cifar10": "the official binary batches, or their cifar-10-binary .tar.gz/.tar.xz archive",
    "folder": "a class-per-folder image tree (train/<class>/..., test/<class>/...; or <class>/...)",
}
FOLDER_ONLY_OPTIONS = ("dataset_name", "skip_corrupt", "resize", "test_fraction")


def parse_size(text: str) -> tuple[int, int]:
    """'150x120' -> (150, 120) (height x width); '150' -> (150, 150)."""
    parts = text.lower().split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 1:
        raise UserError(f"--resize {text!r} is not a size; use HEIGHTxWIDTH in pixels, e.g. 150x150")
    return size


def _folder_name(source: str) -> str:
    base = os.path.basename(os.path.normpath(source)).lower()
    return re.sub(r"[^a-z0-9_]", "_", base).strip("_") or "images"


def default_data_dir() -> str:
    return os.environ.get("TFDS_DATA_DIR") or os.path.join(os.path.expanduser("~"), "tensorflow_datasets")


def _add_array_record(version_dir: str, info) -> None:
    """Copies every tfrecord shard into an ArrayRecord shard of the same records."""
    import tensorflow as tf
    from tensorflow_datasets.core import file_adapters
    for shard in sorted(glob.glob(os.path.join(version_dir, "*.tfrecord-*"))):
        records = ((None, r) for r in tf.data.TFRecordDataset(shard).as_numpy_iterator())
        file_adapters.ArrayRecordFileAdapter.write_examples(shard.replace(".tfrecord-", ".array_record-"), records)
    info.add_alternative_file_format("array_record")
    info.write_to_directory(version_dir)


def prepare(name: str, source: str, data_dir: str | None = None, overwrite: bool = False, *,
            dataset_name: str | None = None, skip_corrupt: bool = False, resize: tuple[int, int] | None = None,
            test_fraction: float | None = None) -> tuple[str, bool]:
    """Builds dataset `name` (mnist, cifar10, or folder) from `source` into `data_dir`.

    A folder dataset is named `dataset_name` (default: the source folder's name);
    `skip_corrupt`, `resize` and `test_fraction` (the share held out as test when the
    tree has no split folders, default 0.2) apply to it only. Returns the version
    folder and whether it was built (False: already prepared).
    """
    if name not in KINDS:
        raise UserError(f"no offline builder for '{name}'; NAME is one of {', '.join(KINDS)} "
                        f"(folder: any class-per-folder image tree, e.g. `jaxcnn data prepare folder --source DIR "
                        f"--name {name}`)")
    given = {"dataset_name": dataset_name, "skip_corrupt": skip_corrupt, "resize": resize,
             "test_fraction": test_fraction}
    misplaced = [k for k in FOLDER_ONLY_OPTIONS if given[k] not in (None, False)]
    if name != "folder" and misplaced:
        raise UserError(f"--{misplaced[0].replace('dataset_name', 'name')} applies to folder datasets only, not {name}")
    if not (os.path.isdir(source) or name == "cifar10" and os.path.isfile(source)):
        raise UserError(f"--source {source} is not a folder{' or an archive' if name == 'cifar10' else ''}; "
                        f"pass the folder holding {KINDS[name]}")
    if test_fraction is not None and not 0 < test_fraction < 1:
        raise UserError(f"--test_fraction must be between 0 and 1, got {test_fraction}")

    from jaxcnn.data.sources import import_tensorflow
    import_tensorflow()
    data_dir = os.path.abspath(data_dir or default_data_dir())
    if name == "folder":
        from jaxcnn.data import folders
        target = dataset_name or _folder_name(source)
        folders.check_name(target)
        version = folders.VERSION
    elif name == "cifar10":
        from jaxcnn.data.cifar10 import OfflineCifar10 as builder_cls
        target, version = name, str(builder_cls.VERSION)
    else:
        from jaxcnn.data.mnist import OfflineMNIST as builder_cls
        target, version = name, str(builder_cls.VERSION)
    final = os.path.join(data_dir, target, version)
    if os.path.exists(final) and not overwrite:
        return final, False

    if name == "folder":  # decodes every image before anything is written
        tree = folders.scan(source, skip_corrupt=skip_corrupt, resize=resize,
                            test_fraction=0.2 if test_fraction is None else test_fraction)
    os.makedirs(data_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".prepare-{target}-", dir=data_dir)
    try:
        if name == "folder":
            builder = folders.builder_class(target)(source_dir=source, tree=tree, resize=resize, data_dir=tmp)
        else:
            builder = builder_cls(source_dir=source, data_dir=tmp)
        builder.download_and_prepare(download_dir=os.path.join(tmp, "downloads"))
        _add_array_record(builder.data_dir, builder.info)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        os.replace(builder.data_dir, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final, True


def summary(version_dir: str) -> str:
    """One line on a prepared dataset: its splits, classes, image shape and what was skipped."""
    import tensorflow_datasets as tfds
    info = tfds.builder_from_directory(version_dir).info
    splits = ", ".join(f"{s} {info.splits[s].num_examples:,}" for s in ("train", "validation", "test")
                       if s in info.splits)
    shape = "x".join(str(d) for d in info.features["image"].shape)
    line = f"{info.name} {info.version}: {splits} images of {shape}, {info.features['label'].num_classes} classes"
    skipped = (info.metadata or {}).get("skipped_corrupt") or []
    if skipped:
        line += f"; skipped {len(skipped)} corrupt image{'s' if len(skipped) > 1 else ''} ({', '.join(skipped[:3])}"
        line += ", ...)" if len(skipped) > 3 else ")"
    return line
