"""A class-per-folder image tree as a named TFDS dataset.

    SOURCE/train/<class>/<image>   SOURCE/test/<class>/...   (SOURCE/validation/... optional)
    SOURCE/<class>/<image>          (no split folders: a seeded stratified test split is held out)

Images are decoded with Pillow, converted to RGB (or kept grayscale when every image
is) and optionally resized; a JPEG or PNG file already in that form is stored with its
own bytes, any other image as a lossless PNG of its pixels. Features: `image` (H, W, C)
uint8, `label` (class names sorted as the folders) and `image/filename`. `tfds.load(NAME, data_dir=DIR)` reads the result without this code,
like any dataset prepared from files.

Every image is decoded once before anything is written, so a corrupt one is named in
one line (or, with skip_corrupt, skipped and counted), and so are empty class folders
and images of different sizes without a resize.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import os
import re

import numpy as np
import tensorflow_datasets as tfds

from jaxcnn.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPLIT_FOLDERS = {"train": "train", "test": "test", "validation": "validation", "val": "validation"}
VERSION = "1.0.0"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
# Formats stored as they are when already at the stored size and mode (tf.image.decode_image reads them).
KEEP_FORMATS = ("JPEG", "PNG")


@dataclasses.dataclass
class Tree:
    """What a scan of a source folder found."""
    splits: dict[str, list[tuple[str, int]]]  # split -> [(relative path, label)]
    class_names: list[str]
    shape: tuple[int, int, int]  # (H, W, C) as stored
    skipped: list[str]  # corrupt images skipped (relative paths)
    ignored: int  # files that are not images by their extension
    as_is: set[str] = dataclasses.field(default_factory=set)  # files stored with their own bytes


def check_name(name: str) -> None:
    if not NAME_PATTERN.match(name or ""):
        raise UserError(f"--name {name!r} is not a dataset name; use lower case letters, digits and _, "
                        "starting with a letter (e.g. intel_scenes)")
    if name in tfds.list_builders(with_community_datasets=False):
        raise UserError(f"--name {name} is a TFDS dataset's name; choose another name for this folder dataset")


def _images_under(folder: str) -> tuple[list[str], int]:
    """Image files under `folder` (recursively, sorted) and the count of other files."""
    found, ignored = [], 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            if name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.join(root, name))
            else:
                ignored += 1
    return found, ignored


def _subfolders(folder: str) -> list[str]:
    return sorted(d for d in os.listdir(folder) if not d.startswith(".") and os.path.isdir(os.path.join(folder, d)))


def decode(path: str, resize: tuple[int, int] | None = None, gray: bool = False) -> np.ndarray:
    """An image file as uint8 (H, W, 3), or (H, W, 1) with `gray`; raises on a bad file."""
    from PIL import Image
    with Image.open(path) as image:
        image.load()  # decodes fully: truncated or corrupt data raises here
        image = image.convert("L" if gray else "RGB")
        if resize is not None and image.size != (resize[1], resize[0]):
            image = image.resize((resize[1], resize[0]), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if gray else array


def _probe(path: str) -> tuple[tuple[int, int], str, str]:
    """((height, width), Pillow mode, format) of a fully decoded image."""
    from PIL import Image
    with Image.open(path) as image:
        image.load()
        return (image.height, image.width), image.mode, image.format


def scan(source: str, *, skip_corrupt: bool = False, resize: tuple[int, int] | None = None,
         test_fraction: float = 0.2, seed: int = 0) -> Tree:
    """Finds the splits, classes and images of `source`, decoding each image once."""
    if not os.path.isdir(source):
        raise UserError(f"--source {source} is not a folder; pass the root of the class-per-folder image tree")
    top = _subfolders(source)
    split_dirs = {SPLIT_FOLDERS[d]: d for d in top if d in SPLIT_FOLDERS}
    if split_dirs and len(split_dirs) != len(top):
        others = sorted(set(top) - set(split_dirs.values()))
        raise UserError(f"{source} mixes split folders ({', '.join(sorted(split_dirs.values()))}) with other folders "
                        f"({', '.join(others)}); keep only train/, test/ (and validation/) at the top")
    if split_dirs and "train" not in split_dirs:
        raise UserError(f"{source} has {', '.join(sorted(split_dirs.values()))} but no train/ folder")
    layout = {split: os.path.join(source, d) for split, d in split_dirs.items()} or {"train": source}

    class_names = _subfolders(layout["train"])
    if not class_names:
        raise UserError(f"{layout['train']} has no class folders; expected one folder of images per class")
    files: dict[str, list[tuple[str, int]]] = {}
    ignored = 0
    for split, root in layout.items():
        classes = _subfolders(root)
        unknown = sorted(set(classes) - set(class_names))
        if unknown:
            raise UserError(f"{root} has class folders that train/ lacks: {', '.join(unknown)}; "
                            "every class needs training images")
        files[split] = []
        for c in classes:
            paths, other = _images_under(os.path.join(root, c))
            ignored += other
            if not paths:
                raise UserError(f"class folder {os.path.join(root, c)} has no images; remove it or add images "
                                f"({', '.join(IMAGE_EXTENSIONS)})")
            files[split] += [(os.path.relpath(p, source), class_names.index(c)) for p in paths]

    # Decode everything once, in parallel (Pillow releases the GIL while decoding).
    every = [path for entries in files.values() for path, _ in entries]
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        probes = list(pool.map(lambda p: _try(_probe, os.path.join(source, p)), every))
    info = dict(zip(every, probes))
    bad = [p for p in every if isinstance(info[p], Exception)]
    if bad and not skip_corrupt:
        raise UserError(f"corrupt or unreadable image {os.path.join(source, bad[0])} ({_reason(info[bad[0]])})"
                        + (f" and {len(bad) - 1} more" if len(bad) > 1 else "")
                        + "; remove it or pass --skip_corrupt to skip such files")
    skipped = set(bad)
    for split in files:
        before = {label for _, label in files[split]}
        files[split] = [(p, label) for p, label in files[split] if p not in skipped]
        emptied = sorted(before - {label for _, label in files[split]})
        if emptied:
            raise UserError(f"class {class_names[emptied[0]]} of {split} has no readable images after skipping "
                            "corrupt ones; remove its folder or add images")

    good = [p for p in every if p not in skipped]
    sizes = collections.Counter(info[p][0] for p in good)
    gray = all(info[p][1] in GRAY_MODES for p in good)
    if resize is None and len(sizes) > 1:
        (common, n), (other, m) = sizes.most_common(2)
        example = next(p for p in good if info[p][0] == other)
        raise UserError(f"images differ in size ({len(sizes)} sizes): {n:,} are {common[0]}x{common[1]}, {m:,} are "
                        f"{other[0]}x{other[1]} (e.g. {example}), ...; pass --resize {common[0]}x{common[1]} "
                        "to resize every image")
    height, width = resize if resize is not None else next(iter(sizes))

    if set(files) == {"train"}:  # no split folders: hold out a test split
        from jaxcnn.data import stratified_holdout
        labels = np.array([label for _, label in files["train"]])
        held = set(stratified_holdout(labels, test_fraction, seed).tolist())
        entries = files["train"]
        files = {"train": [e for i, e in enumerate(entries) if i not in held],
                 "test": [e for i, e in enumerate(entries) if i in held]}
    # Files already in the stored form keep their bytes (smaller, and no re-encoding).
    mode = "L" if gray else "RGB"
    as_is = {p for p in good if info[p][0] == (height, width) and info[p][1] == mode and info[p][2] in KEEP_FORMATS}
    return Tree(files, class_names, (height, width, 1 if gray else 3), sorted(skipped), ignored, as_is)


def _try(fn, *args):
    try:
        return fn(*args)
    except Exception as e:  # Pillow raises many types for bad files; each is reported, never swallowed
        return e


def _reason(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


class FolderDataset(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A TFDS builder for a scanned class-per-folder tree; `builder_class(name)` names it."""

    VERSION = tfds.core.Version(VERSION)
    RELEASE_NOTES = {str(VERSION): "Built by `jaxcnn data prepare folder`."}

    def __init__(self, *, source_dir: str, tree: Tree, resize: tuple[int, int] | None = None, **kwargs):
        self._source = os.path.abspath(source_dir)
        self._tree = tree
        self._resize = resize
        super().__init__(**kwargs)

    def _info(self):
        tree = self._tree
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"Class-per-folder images from {self._source}"
                        + (f", resized to {tree.shape[0]}x{tree.shape[1]}" if self._resize else "") + ".",
            features=tfds.features.FeaturesDict({
                # No fixed encoding: original JPEG/PNG bytes where kept, PNG for decoded images.
                "image": tfds.features.Image(shape=tree.shape),
                "label": tfds.features.ClassLabel(names=tree.class_names),
                "image/filename": tfds.features.Text(),
            }),
            supervised_keys=("image", "label"),
            metadata=tfds.core.MetadataDict(source=self._source, skipped_corrupt=tree.skipped,
                                            resize=list(self._resize) if self._resize else None),
        )

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(entries) for split, entries in self._tree.splits.items()}

    def _generate_examples(self, entries):
        gray = self._tree.shape[-1] == 1
        for path, label in entries:
            full = os.path.join(self._source, path)
            if path in self._tree.as_is:
                yield path, {"image": full, "label": label, "image/filename": path}
                continue
            try:
                image = decode(full, self._resize, gray)
            except Exception as e:  # changed since the scan
                raise UserError(f"cannot read image {full} ({_reason(e)}); "
                                "it was readable a moment ago: is the folder being modified?") from None
            yield path, {"image": image, "label": label, "image/filename": path}


def builder_class(name: str) -> type[FolderDataset]:
    """A FolderDataset subclass named `name` (TFDS takes a builder's name from its class)."""
    return type(f"FolderDataset_{name}", (FolderDataset,), {"name": name}, skip_registration=True)
