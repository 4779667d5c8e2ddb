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
import shutil
import tempfile

from jaxcnn.errors import UserError

# name -> builder factory(source_dir, data_dir) -> tfds DatasetBuilder
BUILDERS = {}


def _mnist(source: str, data_dir: str):
    from jaxcnn.data.mnist import OfflineMNIST
    return OfflineMNIST(source_dir=source, data_dir=data_dir)


BUILDERS["mnist"] = _mnist


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


def prepare(name: str, source: str, data_dir: str | None = None, overwrite: bool = False) -> tuple[str, bool]:
    """Builds dataset `name` from `source` into `data_dir`.

    Returns the version folder and whether it was built (False: already prepared).
    """
    if name not in BUILDERS:
        raise UserError(f"no offline builder for '{name}'; known: {', '.join(sorted(BUILDERS))}")
    if not os.path.isdir(source):
        raise UserError(f"--source {source} is not a folder; pass the folder holding the raw {name} files")
    from jaxcnn.data.sources import import_tensorflow
    import_tensorflow()
    data_dir = os.path.abspath(data_dir or default_data_dir())
    os.makedirs(data_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".prepare-{name}-", dir=data_dir)
    try:
        builder = BUILDERS[name](source, tmp)
        final = os.path.join(data_dir, os.path.relpath(builder.data_dir, tmp))
        if os.path.exists(final) and not overwrite:
            return final, False
        builder.download_and_prepare(download_dir=os.path.join(tmp, "downloads"))
        _add_array_record(builder.data_dir, builder.info)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        os.replace(builder.data_dir, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final, True
