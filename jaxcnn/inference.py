"""A trained run loaded back from its workdir, and images prepared the way it was trained.

    run = load_run("runs/mnist_cnn")                  # config, model, head, restored state, dataset.json
    probs = run.probabilities(load_images(["7.png"], run.dataset_info))
    top_k(probs[0], run.class_names, k=5)             # [('7', 0.998), ('1', 0.001), ...]

`jaxcnn evaluate`, `predict` and `visualize` stand on `load_run`, and so does any workdir
written by another tool (`jaxcnn convert`): it needs
- `config.json`: a config of `jaxcnn.config` (model, model_kwargs, head, dtype, optimizer...);
- `dataset.json`: `image_shape`, `class_names`, `pixel_max` (optional: `mean`, `std`, per
  channel on the 0-1 scale, subtracted and divided after scaling);
- `checkpoints/<step>/` (or, for `checkpoint='best'`, `best_checkpoints/<step>/`): Orbax items
  `state`, the TrainState of that config (`step`, `params`, `opt_state`, `batch_stats`, as
  `jaxcnn.train.state.create` builds it), and `meta`, JSON with at least `epoch`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from typing import Any

import numpy as np

from jaxcnn.errors import UserError



@dataclasses.dataclass
class TrainedRun:
    workdir: str
    config: Any  # ml_collections.ConfigDict
    dataset_info: dict  # the workdir's dataset.json
    head: Any  # jaxcnn.heads.Head
    model: Any  # flax.linen.Module
    state: Any  # jaxcnn.train.state.TrainState, restored
    checkpoint: str  # 'latest' or 'best'
    step: int
    epoch: int

    @property
    def class_names(self) -> list[str]:
        return list(self.dataset_info["class_names"])

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.dataset_info["image_shape"])

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, C) of preprocessed images (N, H, W, C), in batches."""
        batch = self.config.eval_batch_size
        from jaxcnn import backend
        fn = _probabilities_fn(self.head, backend.compiler_options(self.state.params))
        return np.concatenate([np.asarray(fn(self.state, images[i:i + batch]))
                               for i in range(0, len(images), batch)])

    def feature_maps(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Every feature map the model sows for one preprocessed image (H, W, C), by layer name
        (the `intermediates` entries `<path>/<layer>_act`, named `<path>/<layer>`)."""
        _, variables = self.model.apply(self.state.variables(), image[None], train=False, mutable=["intermediates"])
        maps = {}

        def walk(tree, prefix):
            for key, value in tree.items():
                if isinstance(value, tuple):  # sown values are tuples of the calls' outputs
                    name = prefix + (key[:-len("_act")] if key.endswith("_act") else key)
                    maps[name] = np.asarray(value[-1])[0]
                else:
                    walk(value, f"{prefix}{key}/")
        walk(variables.get("intermediates", {}), "")
        return maps

    def first_conv_kernel(self) -> tuple[str, np.ndarray] | None:
        """(name, kernel HWIO) of the first convolution the model applies, or None without one."""
        import flax.linen as nn
        import jax.numpy as jnp

        from jaxcnn import layers
        called = []

        def record(next_fun, args, kwargs, context):
            if isinstance(context.module, (nn.Conv, layers.Conv2D)) and context.method_name == "__call__":
                called.append(context.module.scope.path)
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(record):
            self.model.apply(self.state.variables(), jnp.zeros((1, *self.image_shape)), train=False)
        if not called:
            return None
        params = self.state.params
        for name in called[0]:
            params = params[name]
        return "/".join(called[0]), np.asarray(params["kernel"])


@functools.lru_cache(maxsize=8)
def _probabilities_fn(head, compiler_options: tuple):
    from jaxcnn import backend

    def probabilities(state, images):
        return head.probabilities(state.apply_fn(state.variables(), images, train=False))
    return backend.jit(probabilities, compiler_options)


def _read_json(path: str, what: str) -> dict:
    if not os.path.isfile(path):
        raise UserError(f"{path} is missing: {what}")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"{path} cannot be read ({e}); restore the file or retrain the run") from None


def load_run(workdir: str, checkpoint: str = "latest") -> TrainedRun:
    """Loads the run in `workdir` at its `latest` checkpoint or its `best` (best_checkpoints/)."""
    import jax

    from jaxcnn import config as config_lib
    from jaxcnn import models, optim
    from jaxcnn.data import pipeline
    from jaxcnn.heads import Head
    from jaxcnn.train import checkpoint as checkpoint_lib
    from jaxcnn.train import state as state_lib

    checkpoint_lib.directory(workdir, checkpoint)  # an unknown name fails first
    if not os.path.isdir(workdir):
        raise UserError(f"workdir {workdir} does not exist; pass the --workdir of a trained run")
    config_path = os.path.join(workdir, "config.json")
    _read_json(config_path, "the workdir holds no run; pass the --workdir of a trained run")
    try:
        config = config_lib.from_json_file(config_path)
        config_lib.validate(config)
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{config_path} is not a jaxcnn config ({e}); pass the --workdir of a jaxcnn run") from None
    info = _read_json(os.path.join(workdir, "dataset.json"),
                      "the run predates dataset.json; retrain it, or write the file (see jaxcnn.inference)")

    head = Head.create(config.head, len(info["class_names"]))
    model = models.create(config.model, num_classes=head.units, dtype=config.dtype,
                          **config.model_kwargs.to_dict())
    steps_per_epoch = max(1, math.ceil(info["num_examples"]["train"] / config.batch_size))
    image_shape = tuple(info["image_shape"])
    params = state_lib.abstract(model, image_shape)["params"]
    phases = config_lib.phase_configs(config)
    mesh = pipeline.make_mesh()

    def template(meta: dict):
        """The state's shapes only (no initialization), built and placed as training built it,
        with the optimizer of the step's phase."""
        tx, _ = optim.create(phases[checkpoint_lib.phase(meta, len(phases))], steps_per_epoch, params)
        return jax.eval_shape(lambda: state_lib.create(model, tx, image_shape, jax.random.key(0),
                                                       sharding=pipeline.replicated(mesh),
                                                       ema=config.optimization.ema_momentum > 0))
    try:
        state, meta = checkpoint_lib.restore(workdir, template, which=checkpoint)
    except UserError:
        raise
    except Exception as e:  # Orbax raises many types for a checkpoint of another model
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"the {checkpoint} checkpoint of {workdir} cannot be restored into "
                        f"{config.model} ({reason[:300]}); check the workdir or retrain") from None
    step = int(state.step)
    return TrainedRun(workdir, config, info, head, model, state, checkpoint, int(step), int(meta.get("epoch", 0)))


# --- images --------------------------------------------------------------------

def load_image(path: str, dataset_info: dict) -> np.ndarray:
    """One image file of any format and size, as the model's input (H, W, C) float32.

    It is prepared as the training data was (`jaxcnn.data.preprocess`): decoded and converted to
    the trained channel count (`read_image`), scaled from its full range (0-255 for 8-bit files,
    the same scale as the dataset's 0-`pixel_max`) to 0-1, resized to `image_shape`, and
    normalized by `mean` and `std` when dataset.json has them (`Preprocess`). A model whose
    pipeline resized its images (`resized` in dataset.json) gets the pipeline's resize;
    otherwise a file is shrunk by area averaging, which keeps the most detail.
    """
    from jaxcnn.data.preprocess import Preprocess, read_image
    height, width, channels = dataset_info["image_shape"]
    size = None if dataset_info.get("resized") else (height, width)
    pixels, full_scale = read_image(path, channels, size=size)
    preprocess = dataclasses.replace(Preprocess.from_description(dataset_info), pixel_max=full_scale)
    return np.asarray(preprocess(pixels[None]))[0]


def load_images(paths, dataset_info: dict) -> np.ndarray:
    """`load_image` of each path, stacked (N, H, W, C)."""
    return np.stack([load_image(path, dataset_info) for path in paths])


def top_k(probs: np.ndarray, class_names, k: int | None = None) -> list[tuple[str, float]]:
    """The k most probable classes of one row of probabilities (k = min(5, classes) by default)."""
    k = min(5, len(class_names)) if k is None else max(1, min(k, len(class_names)))
    order = np.argsort(-np.asarray(probs), kind="stable")[:k]
    return [(str(class_names[i]), float(probs[i])) for i in order]
