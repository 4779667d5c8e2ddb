"""The deterministic preprocessing every split gets, in training and in prediction:
integer pixels -> float32 on a 0-1 scale -> resized to the model's input size ->
normalized per channel.

The workdir's `dataset.json` records it (`pixel_max`, `image_shape`, `mean`, `std`), and
`Preprocess.from_description` rebuilds it from there, so a new image is prepared for
prediction exactly as the training images were.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.errors import UserError

NORMALIZATIONS = ("none", "dataset", "imagenet", "custom")
# The statistics torchvision and Keras' ImageNet models were trained with (0-1 scale).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class Preprocess:
    pixel_max: float = 1.0  # integer pixels are divided by this to lie in [0, 1]
    size: tuple[int, int] | None = None  # (H, W) the model sees; None keeps the stored size
    mean: tuple[float, ...] | None = None  # per channel, on the 0-1 scale; None: no normalization
    std: tuple[float, ...] | None = None

    def scale(self, images) -> jax.Array:
        """(N, H, W, C) integer pixels -> float32 on a 0-1 scale at the model's size."""
        x = images.astype(jnp.float32) / self.pixel_max
        if self.size is not None and tuple(x.shape[1:3]) != tuple(self.size):
            # Antialiased when shrinking, as PIL and tf.image.resize(antialias=True) do.
            x = jax.image.resize(x, (x.shape[0], *self.size, x.shape[3]), method="bilinear", antialias=True)
        return x

    def normalize(self, x) -> jax.Array:
        if self.mean is None:
            return x
        return (x - jnp.asarray(self.mean, jnp.float32)) / jnp.asarray(self.std, jnp.float32)

    def __call__(self, images) -> jax.Array:
        return self.normalize(self.scale(images))

    def describe(self) -> dict:
        """For dataset.json: `pixel_max`, `resized` when the pipeline resizes the stored images
        to the model's size (prediction then resizes the same way), and `mean` and `std` when
        normalizing."""
        normalization = {} if self.mean is None else {"mean": list(self.mean), "std": list(self.std)}
        return {"pixel_max": self.pixel_max, **({"resized": True} if self.size else {}), **normalization}

    @classmethod
    def from_description(cls, description: dict) -> Preprocess:
        """From a workdir's dataset.json: resizes any image to its `image_shape`."""
        mean, std = description.get("mean"), description.get("std")
        return cls(pixel_max=float(description["pixel_max"]), size=tuple(description["image_shape"][:2]),
                   mean=None if mean is None else tuple(mean), std=None if std is None else tuple(std))


def read_image(path: str, channels: int, size: tuple[int, int] | None = None) -> tuple[np.ndarray, float]:
    """An image file of any format PIL reads, as (H, W, channels) pixels and their full scale
    (255 for 8-bit files, 65535 for 16-bit); `Preprocess` with `pixel_max` = that scale then
    scales and normalizes it as the training images were.

    Converted to the model's channel count (grayscale by ITU-R 601 luma, or RGB; alpha
    dropped), with EXIF orientation applied so a photo is read the way viewers show it, and,
    with `size` (H, W), resized: by area averaging when shrinking (a file is usually larger
    than the model's input, and averaging keeps the most detail without aliasing), bilinearly
    when enlarging. (TFDS decodes stored JPEGs with TensorFlow, whose decoder can differ from
    PIL's by a few levels on some pixels; PNG pixels are identical.)
    """
    from PIL import Image, ImageOps
    if channels not in (1, 3):
        raise UserError(f"the model takes {channels}-channel images; only 1 (grayscale) or 3 (RGB) can be "
                        "made from an image file")
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit grayscale
                image, full_scale = image.convert("F"), 65535.0
            else:
                image, full_scale = image.convert("L" if channels == 1 else "RGB"), 255.0
            if size is not None and (image.height, image.width) != tuple(size):
                shrink = image.height >= size[0] and image.width >= size[1]
                image = image.resize((size[1], size[0]),
                                     Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR)
            pixels = np.asarray(image, np.float32)
    except FileNotFoundError:
        raise UserError(f"image {path} does not exist; pass the path of an image file") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise UserError(f"cannot read image {path} ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                        "pass an image file (PNG, JPEG, BMP, GIF, TIFF, WebP, ...)") from None
    pixels = pixels.reshape(*pixels.shape[:2], -1)
    if pixels.shape[-1] != channels:  # 16-bit grayscale for an RGB model
        pixels = np.repeat(pixels, channels, axis=-1)
    return pixels, full_scale


def check_config(options) -> None:
    """Validates `config.preprocess` (raises UserError)."""
    resize(options)
    if options.normalize not in NORMALIZATIONS:
        raise UserError(f"config.preprocess.normalize={options.normalize!r} is not one of {', '.join(NORMALIZATIONS)}")
    if options.normalize == "custom":
        mean, std = tuple(options.mean), tuple(options.std)
        if not mean or len(mean) != len(std):
            raise UserError("config.preprocess.normalize=custom needs preprocess.mean and preprocess.std with one "
                            f"value per channel (or one for all), got mean={mean} std={std}")
        if min(std) <= 0:
            raise UserError(f"config.preprocess.std must be positive, got {std}")
    elif tuple(options.mean) or tuple(options.std):
        raise UserError("config.preprocess.mean/std are used only with --config.preprocess.normalize=custom; "
                        "set it, or clear mean and std")


def resize(options) -> tuple[int, int] | None:
    """`config.preprocess.resize` as (H, W), or None: () keeps the size, (S,) means SxS."""
    size = tuple(options.resize)
    if not size:
        return None
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise UserError(f"config.preprocess.resize must be (height, width) in pixels, e.g. (224, 224); got {size}")
    return size


def normalization(options, train_stats=None, channels: int = 3) -> tuple[tuple | None, tuple | None]:
    """(mean, std) per channel for `config.preprocess`; `train_stats()` computes the
    dataset's own (called only for normalize=dataset)."""
    check_config(options)
    kind = options.normalize
    if kind == "none":
        return None, None
    if kind == "dataset":
        mean, std = train_stats()
    elif kind == "imagenet":
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        if channels != 3:
            raise UserError(f"imagenet normalization needs RGB images; this dataset has {channels} channel(s): "
                            "use --config.preprocess.normalize=dataset")
    else:
        mean, std = tuple(options.mean), tuple(options.std)
    if len(mean) == 1:
        mean, std = mean * channels, std * channels
    if len(mean) != channels:
        raise UserError(f"config.preprocess.mean has {len(mean)} values for {channels}-channel images; "
                        f"give one per channel")
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def channel_stats(chunks, pixel_max: float) -> tuple[tuple, tuple]:
    """Per-channel mean and std on the 0-1 scale of images given in chunks (N, H, W, C)
    (an array is cut into chunks); exact for integer pixels (int64 sums)."""
    if isinstance(chunks, np.ndarray):
        array = chunks
        chunks = (array[i:i + 4096] for i in range(0, len(array), 4096))
    total = squares = 0
    count = 0
    for chunk in chunks:
        accumulate = np.int64 if np.issubdtype(chunk.dtype, np.integer) else np.float64
        part = chunk.reshape(-1, chunk.shape[-1]).astype(accumulate)
        total = total + part.sum(0)
        squares = squares + (part * part).sum(0).astype(np.float64)
        count += len(part)
    mean = np.asarray(total, np.float64) / count
    std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
    return tuple((mean / pixel_max).tolist()), tuple((std / pixel_max).tolist())
