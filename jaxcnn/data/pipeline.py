"""The input pipeline: batches sharded over the mesh's `data` axis.

- `DeviceSplit`: a split that fits in memory is held on the devices (uint8), shuffled per
  epoch on device, and each batch is gathered, preprocessed and augmented in one jitted
  function.
- `StreamSplit`: a larger one streams from disk through tf.data (shuffled files and a
  shuffle buffer, prefetched), each batch is put on the devices already sharded, then
  preprocessed and augmented there by the same function.

A batch is a dict: `image` (float32 NHWC, preprocessed as `jaxcnn.data.preprocess`
says: on a 0-1 scale, or normalized), `label` (int32 class ids; float32 rows of class
weights on training batches when mixup or cutmix is on, see `jaxcnn.data.augment`) and
`mask` (1.0 for real examples, 0.0 for the padding that fills the last batch). Every
example is seen exactly once per epoch, the last batch keeps the compiled shape, and
losses and metrics weight by `mask`. The order and the augmentation depend only on
(seed, epoch, batch index), which exact resume relies on.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxcnn.data import Split, StreamedSplit
from jaxcnn.data.augment import Augment
from jaxcnn.data.preprocess import Preprocess
from jaxcnn.errors import UserError

DATA_AXIS = "data"
# Separates the augmentation's random stream from the shuffle's (which uses
# fold_in(key, epoch) and the splits of that key).
_AUGMENT_SALT = 0x6A09E667


def make_mesh(devices=None) -> jax.sharding.Mesh:
    """A 1-D mesh over all (or the given) devices, axis `data`."""
    devices = jax.devices() if devices is None else list(devices)
    return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=devices)


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


@functools.partial(jax.jit, static_argnames=("num_examples", "total"))
def _epoch_order(key, num_examples: int, total: int):
    """A permutation (or, with key None, the identity) padded to `total`, and its mask."""
    order = jnp.arange(num_examples) if key is None else jax.random.permutation(key, num_examples)
    order = jnp.resize(order, (total,))  # wraps around: padding repeats real examples
    mask = (jnp.arange(total) < num_examples).astype(jnp.float32)
    return order.astype(jnp.int32), mask


def augment_key(key, epoch: int):
    """The root of one epoch's augmentation keys; batch i uses fold_in(root, i)."""
    return jax.random.fold_in(jax.random.fold_in(key, epoch), _AUGMENT_SALT)


def _finish(batch: dict, key, index, *, preprocess: Preprocess, augment: Augment | None) -> dict:
    """Preprocesses (and, given a key, augments) a batch of integer images."""
    images = preprocess.scale(batch["image"])
    labels = batch["label"]
    if key is not None and augment is not None:
        images, labels = augment(jax.random.fold_in(key, index), images, labels, preprocess.normalize)
    else:
        images = preprocess.normalize(images)
    return {"image": images, "label": labels, "mask": batch["mask"]}


def _take(images, labels, order, mask, index, key, *, batch_size: int, preprocess, augment):
    idx = jax.lax.dynamic_slice_in_dim(order, index * batch_size, batch_size)
    batch = {"image": images[idx], "label": labels[idx],
             "mask": jax.lax.dynamic_slice_in_dim(mask, index * batch_size, batch_size)}
    return _finish(batch, key, index, preprocess=preprocess, augment=augment)


class _Pipeline:
    """What both pipelines share: sizes, preprocessing, augmentation (training only)."""

    def __init__(self, split, mesh, batch_size: int, pixel_max: float, preprocess: Preprocess | None,
                 augment: Augment | None):
        if batch_size % mesh.size:
            raise UserError(f"batch size {batch_size} does not divide over {mesh.size} devices; "
                            f"use a multiple of {mesh.size}")
        if len(split) == 0:
            raise UserError("a data split is empty; check the dataset and config.validation_split")
        self.num_examples = len(split)
        self.batch_size = batch_size
        self.num_batches = -(-self.num_examples // batch_size)
        self.mesh = mesh
        # `pixel_max` alone: scale only (no resizing or normalization).
        self.preprocess = preprocess if preprocess is not None else Preprocess(pixel_max=float(pixel_max))
        self.augment = augment if augment is not None and augment.active else None

    def _augment_key(self, key, epoch: int):
        return None if key is None or self.augment is None else augment_key(key, epoch)


class DeviceSplit(_Pipeline):
    """One split in device memory (replicated), yielding batches sharded over `data`.

    `preprocess` (a `Preprocess`) replaces the bare pixel scale `pixel_max`; `augment`
    is applied when `batches` is given a key (training), never to evaluation batches.
    """

    def __init__(self, split: Split, mesh, batch_size: int, pixel_max: float = 1.0, *,
                 preprocess: Preprocess | None = None, augment: Augment | None = None):
        super().__init__(split, mesh, batch_size, pixel_max, preprocess, augment)
        self.images = jax.device_put(np.asarray(split.images), replicated(mesh))
        self.labels = jax.device_put(np.asarray(split.labels, np.int32), replicated(mesh))
        self._take = jax.jit(functools.partial(_take, batch_size=batch_size, preprocess=self.preprocess,
                                               augment=self.augment),
                             out_shardings=batch_sharded(mesh))

    def batches(self, key: jax.Array | None = None, epoch: int = 0, start: int = 0) -> Iterator[dict]:
        """Batches of one epoch; shuffled by `fold_in(key, epoch)` and augmented when a
        key is given. `start` skips the first batches (resuming inside an epoch)."""
        aug = self._augment_key(key, epoch)
        key = None if key is None else jax.random.fold_in(key, epoch)
        order, mask = _epoch_order(key, self.num_examples, self.num_batches * self.batch_size)
        for i in range(start, self.num_batches):
            yield self._take(self.images, self.labels, order, mask, i, aug)


class StreamSplit(_Pipeline):
    """One split streamed from disk (tf.data), yielding batches sharded over `data`.

    Same interface and batches as `DeviceSplit`; the shuffle is per file and within a
    buffer of `sources.SHUFFLE_BUFFER` examples, seeded by (key, epoch).
    """

    def __init__(self, split: StreamedSplit, mesh, batch_size: int, pixel_max: float = 1.0, *,
                 preprocess: Preprocess | None = None, augment: Augment | None = None, device_prefetch: int = 2):
        super().__init__(split, mesh, batch_size, pixel_max, preprocess, augment)
        self.split = split
        self.device_prefetch = device_prefetch
        self._finish = jax.jit(functools.partial(_finish, preprocess=self.preprocess, augment=self.augment),
                               out_shardings=batch_sharded(mesh))

    def batches(self, key: jax.Array | None = None, epoch: int = 0, start: int = 0) -> Iterator[dict]:
        from jaxcnn.data import sources
        tf = sources.import_tensorflow()
        seed = None if key is None else int(jax.random.randint(jax.random.fold_in(key, epoch), (), 0, 2**31 - 1))
        aug = self._augment_key(key, epoch)
        ds = sources.stream(self.split, seed, skip=start * self.batch_size)
        ds = ds.batch(self.batch_size).prefetch(tf.data.AUTOTUNE)
        host = (self._pad(images, labels) for images, labels in ds.as_numpy_iterator())
        for i, batch in enumerate(self._to_device(host), start):
            yield self._finish(batch, aug, i)

    def _pad(self, images: np.ndarray, labels: np.ndarray) -> dict:
        """A full batch: a short last one repeats its examples, masked out."""
        n = len(labels)
        take = np.resize(np.arange(n), self.batch_size)
        mask = (np.arange(self.batch_size) < n).astype(np.float32)
        return {"image": images[take], "label": labels[take].astype(np.int32), "mask": mask}

    def _to_device(self, batches) -> Iterator[dict]:
        """Puts batches on the devices, sharded, `device_prefetch` ahead of their use."""
        queue = collections.deque()
        sharding = batch_sharded(self.mesh)
        for batch in batches:
            queue.append(jax.device_put(batch, sharding))
            if len(queue) > self.device_prefetch:
                yield queue.popleft()
        while queue:
            yield queue.popleft()


def make_split(split: Split | StreamedSplit, mesh, batch_size: int, preprocess: Preprocess,
               augment: Augment | None = None) -> DeviceSplit | StreamSplit:
    """The pipeline of one split: in device memory, or streamed from disk."""
    cls = StreamSplit if isinstance(split, StreamedSplit) else DeviceSplit
    return cls(split, mesh, batch_size, preprocess=preprocess, augment=augment)
