"""The input pipeline for datasets that fit in memory: held on the devices, shuffled
per epoch on device, batches sharded over the mesh's `data` axis.

A batch is a dict: `image` (float32 in [0, 1], NHWC), `label` (int32) and `mask`
(1.0 for real examples, 0.0 for the padding that fills the last batch). Every
example is seen exactly once per epoch, the last batch keeps the compiled shape,
and losses and metrics weight by `mask`. The order depends only on (seed, epoch),
which exact resume relies on.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxcnn.data import Split
from jaxcnn.errors import UserError

DATA_AXIS = "data"


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


def _take(images, labels, order, mask, index, *, batch_size: int, pixel_max: float):
    idx = jax.lax.dynamic_slice_in_dim(order, index * batch_size, batch_size)
    return {
        "image": images[idx].astype(jnp.float32) / pixel_max,
        "label": labels[idx],
        "mask": jax.lax.dynamic_slice_in_dim(mask, index * batch_size, batch_size),
    }


class DeviceSplit:
    """One split in device memory (replicated), yielding batches sharded over `data`."""

    def __init__(self, split: Split, mesh, batch_size: int, pixel_max: float):
        if batch_size % mesh.size:
            raise UserError(f"batch size {batch_size} does not divide over {mesh.size} devices; "
                            f"use a multiple of {mesh.size}")
        if len(split) == 0:
            raise UserError("a data split is empty; check the dataset and config.validation_split")
        self.num_examples = len(split)
        self.batch_size = batch_size
        self.num_batches = -(-self.num_examples // batch_size)
        self.mesh = mesh
        self.images = jax.device_put(np.asarray(split.images), replicated(mesh))
        self.labels = jax.device_put(np.asarray(split.labels, np.int32), replicated(mesh))
        self._take = jax.jit(functools.partial(_take, batch_size=batch_size, pixel_max=pixel_max),
                             out_shardings=batch_sharded(mesh))

    def batches(self, key: jax.Array | None = None, epoch: int = 0, start: int = 0) -> Iterator[dict]:
        """Batches of one epoch; shuffled by `fold_in(key, epoch)` when a key is given.

        `start` skips the first batches (resuming inside an epoch).
        """
        key = None if key is None else jax.random.fold_in(key, epoch)
        order, mask = _epoch_order(key, self.num_examples, self.num_batches * self.batch_size)
        for i in range(start, self.num_batches):
            yield self._take(self.images, self.labels, order, mask, i)
