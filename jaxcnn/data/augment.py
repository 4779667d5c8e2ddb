"""Data augmentation in JAX: pure functions of (key, batch), jitted with the batch
gather, run on the device that holds the data, applied to training batches only.

`Augment` (built from `config.augment`) applies, in this order:

1. geometry, on the 0-1 scale: random crop after zero padding, horizontal flip, then one
   affine warp combining rotation, zoom and translation (bilinear, `fill` outside);
2. photometry: brightness (an added offset) and contrast (scaled around each image's
   per-channel mean), clipped to [0, 1];
3. the normalization of `jaxcnn.data.preprocess` (so cutout's zeros are the mean colour
   when normalizing, as in DeVries & Taylor);
4. cutout: one square of zeros per image, its centre anywhere in the image;
5. mixup or cutmix (both set: one of the two per batch, each with probability 1/2). Each
   image is mixed with the batch's reversed order, with one Beta(alpha, alpha) weight
   per batch (Zhang et al.; Yun et al.), and its label becomes a float32 row of
   `num_classes` class weights that sum to 1, the share of each image (cutmix: the
   exact pasted area). Without mixing, labels stay int32 class ids.

Every random draw derives from the key, each transform from its own `fold_in` of it,
so the same key gives the same batch, and switching one transform on or off does not
change the others' draws. The pipeline's key is (seed, epoch, batch index): exact
resume reproduces augmented batches.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates

from jaxcnn.errors import UserError

FILLS = ("constant", "nearest", "reflect", "wrap")
# Independent random streams per transform (fold_in ids): stable when others change.
_CROP, _FLIP, _AFFINE, _BRIGHTNESS, _CONTRAST, _CUTOUT, _MIX = range(7)


@dataclasses.dataclass(frozen=True)
class Augment:
    crop_padding: int = 0
    flip: bool = False
    rotation_degrees: float = 0.0
    zoom: float = 0.0
    translation: float = 0.0
    fill: str = "constant"
    brightness: float = 0.0
    contrast: float = 0.0
    cutout: int = 0
    mixup: float = 0.0
    cutmix: float = 0.0
    num_classes: int = 0  # needed for mixup/cutmix's soft labels

    @classmethod
    def from_config(cls, options, num_classes: int = 0) -> Augment:
        """From `config.augment`; raises UserError on a value out of range."""
        fields = {f.name for f in dataclasses.fields(cls)} - {"num_classes"}
        augment = cls(**{k: options[k] for k in fields}, num_classes=num_classes)
        augment.check()
        return augment

    def check(self) -> None:
        def bad(key, value, want):
            raise UserError(f"config.augment.{key}={value!r}: expected {want}")
        for key in ("crop_padding", "cutout"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                bad(key, value, "a whole number of pixels >= 0")
        if not isinstance(self.flip, bool):
            bad("flip", self.flip, "true or false")
        if not 0 <= self.rotation_degrees <= 180:
            bad("rotation_degrees", self.rotation_degrees, "degrees in [0, 180]")
        if not 0 <= self.zoom < 1:
            bad("zoom", self.zoom, "a fraction in [0, 1): scales drawn from [1 - zoom, 1 + zoom]")
        for key in ("translation", "brightness", "contrast"):
            if not 0 <= getattr(self, key) <= 1:
                bad(key, getattr(self, key), "a fraction in [0, 1]")
        if self.fill not in FILLS:
            bad("fill", self.fill, f"one of {', '.join(FILLS)}")
        for key in ("mixup", "cutmix"):
            if getattr(self, key) < 0:
                bad(key, getattr(self, key), "a Beta alpha >= 0 (0 switches it off; 0.2-1.0 is usual)")

    @property
    def active(self) -> bool:
        return any((self.crop_padding, self.flip, self.rotation_degrees, self.zoom, self.translation,
                    self.brightness, self.contrast, self.cutout, self.mixup, self.cutmix))

    @property
    def mixes(self) -> bool:
        """Whether labels become soft rows (mixup or cutmix)."""
        return bool(self.mixup or self.cutmix)

    def __call__(self, key, images, labels, normalize=lambda x: x):
        """Augments a batch of float images on the 0-1 scale; returns (images, labels)."""
        x = images
        if self.crop_padding:
            x = random_crop(jax.random.fold_in(key, _CROP), x, self.crop_padding)
        if self.flip:
            x = random_flip(jax.random.fold_in(key, _FLIP), x)
        if self.rotation_degrees or self.zoom or self.translation:
            x = random_affine(jax.random.fold_in(key, _AFFINE), x, self.rotation_degrees, self.zoom,
                              self.translation, self.fill)
        if self.brightness:
            x = random_brightness(jax.random.fold_in(key, _BRIGHTNESS), x, self.brightness)
        if self.contrast:
            x = random_contrast(jax.random.fold_in(key, _CONTRAST), x, self.contrast)
        x = normalize(x)
        if self.cutout:
            x = cutout(jax.random.fold_in(key, _CUTOUT), x, self.cutout)
        if self.mixes:
            if not self.num_classes:
                raise ValueError("Augment needs num_classes for mixup/cutmix")
            x, labels = mix(jax.random.fold_in(key, _MIX), x, labels, self.num_classes, self.mixup, self.cutmix)
        return x, labels


# --- geometry -------------------------------------------------------------------

def flip_horizontal(images):
    return images[:, :, ::-1, :]


def random_flip(key, images):
    """Mirrors each image left-right with probability 1/2."""
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0],))
    return jnp.where(flip[:, None, None, None], flip_horizontal(images), images)


def random_crop(key, images, padding: int):
    """Pads each side with `padding` zeros and takes a random window of the original size."""
    n, h, w, c = images.shape
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    offsets = jax.random.randint(key, (n, 2), 0, 2 * padding + 1)
    return jax.vmap(lambda image, o: jax.lax.dynamic_slice(image, (o[0], o[1], 0), (h, w, c)))(padded, offsets)


def affine(images, angles, scales, shifts, fill: str = "constant"):
    """Rotates each image by `angles` (radians, counter-clockwise as displayed), scales it
    by `scales` (> 1 magnifies) about its centre, then shifts it by `shifts` (rows,
    columns; pixels). Bilinear; points outside the image follow `fill` (zeros for
    constant). Shapes: (N, H, W, C), (N,), (N,), (N, 2)."""
    _, h, w, _ = images.shape
    rows, cols = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
    cy, cx = (h - 1) / 2, (w - 1) / 2

    def one(image, angle, scale, shift):
        # Inverse map: the source point of each output pixel.
        dy, dx = rows - cy - shift[0], cols - cx - shift[1]
        cos, sin = jnp.cos(angle), jnp.sin(angle)
        src_y = (cos * dy + sin * dx) / scale + cy
        src_x = (-sin * dy + cos * dx) / scale + cx
        sample = lambda channel: map_coordinates(channel, [src_y, src_x], order=1, mode=fill, cval=0.0)
        return jax.vmap(sample, in_axes=2, out_axes=2)(image)

    return jax.vmap(one)(images, angles, scales, shifts)


def random_affine(key, images, rotation_degrees: float, zoom: float, translation: float, fill: str = "constant"):
    """Rotation in [-r, r] degrees, scale in [1 - zoom, 1 + zoom], shift up to
    `translation` of the height and width, drawn per image."""
    n, h, w, _ = images.shape
    k_angle, k_scale, k_shift = jax.random.split(key, 3)
    limit = math.radians(rotation_degrees)
    angles = jax.random.uniform(k_angle, (n,), minval=-limit, maxval=limit)
    scales = jax.random.uniform(k_scale, (n,), minval=1 - zoom, maxval=1 + zoom)
    shifts = jax.random.uniform(k_shift, (n, 2), minval=-translation, maxval=translation) * jnp.array([h, w])
    return affine(images, angles, scales, shifts, fill)


# --- photometry -----------------------------------------------------------------

def random_brightness(key, images, delta: float):
    """Adds one offset in [-delta, delta] per image (0-1 scale), clipped to [0, 1]."""
    offset = jax.random.uniform(key, (images.shape[0], 1, 1, 1), minval=-delta, maxval=delta)
    return jnp.clip(images + offset, 0.0, 1.0)


def random_contrast(key, images, factor: float):
    """Scales each image's deviation from its per-channel mean by a factor in
    [1 - factor, 1 + factor] (tf.image.adjust_contrast), clipped to [0, 1]."""
    scale = jax.random.uniform(key, (images.shape[0], 1, 1, 1), minval=1 - factor, maxval=1 + factor)
    mean = images.mean(axis=(1, 2), keepdims=True)
    return jnp.clip((images - mean) * scale + mean, 0.0, 1.0)


# --- occlusion and mixing -------------------------------------------------------

def _box_mask(h: int, w: int, centers, sizes):
    """(N, H, W, 1) mask of axis-aligned boxes with the given centres and (height,
    width) sizes, clipped at the image border."""
    top = centers[:, 0] - sizes[:, 0] // 2
    left = centers[:, 1] - sizes[:, 1] // 2
    rows = jnp.arange(h)[None, :, None]
    cols = jnp.arange(w)[None, None, :]
    inside = ((rows >= top[:, None, None]) & (rows < (top + sizes[:, 0])[:, None, None])
              & (cols >= left[:, None, None]) & (cols < (left + sizes[:, 1])[:, None, None]))
    return inside[..., None]


def cutout(key, images, size: int):
    """Zeros one size x size square per image, centred anywhere in it (clipped at the border)."""
    n, h, w, _ = images.shape
    centers = jax.random.randint(key, (n, 2), 0, jnp.array([h, w]))
    mask = _box_mask(h, w, centers, jnp.full((n, 2), size))
    return jnp.where(mask, 0.0, images)


def mixup(key, images, targets, alpha: float):
    """Blends each image and its soft label with the reversed batch's, weight ~ Beta(alpha, alpha)."""
    lam = jax.random.beta(key, alpha, alpha)
    return lam * images + (1 - lam) * images[::-1], lam * targets + (1 - lam) * targets[::-1]


def cutmix(key, images, targets, alpha: float):
    """Pastes a box of the reversed batch's image into each image; labels weigh by area."""
    n, h, w, _ = images.shape
    k_lam, k_center = jax.random.split(key)
    lam = jax.random.beta(k_lam, alpha, alpha)
    cut = jnp.sqrt(1 - lam)
    sizes = jnp.broadcast_to(jnp.stack([jnp.round(h * cut), jnp.round(w * cut)]).astype(jnp.int32), (n, 2))
    centers = jnp.broadcast_to(jax.random.randint(k_center, (2,), 0, jnp.array([h, w])), (n, 2))
    mask = _box_mask(h, w, centers, sizes)
    pasted = mask[0].mean()  # the exact share after clipping at the border
    mixed = jnp.where(mask, images[::-1], images)
    return mixed, (1 - pasted) * targets + pasted * targets[::-1]


def mix(key, images, labels, num_classes: int, mixup_alpha: float, cutmix_alpha: float):
    """mixup, cutmix, or (both set) one of them per batch; labels -> float32 rows."""
    targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32) if labels.ndim == 1 else labels
    k_choice, k_mix = jax.random.split(key)
    if mixup_alpha and cutmix_alpha:
        return jax.lax.cond(jax.random.bernoulli(k_choice), lambda: cutmix(k_mix, images, targets, cutmix_alpha),
                            lambda: mixup(k_mix, images, targets, mixup_alpha))
    if cutmix_alpha:
        return cutmix(k_mix, images, targets, cutmix_alpha)
    return mixup(k_mix, images, targets, mixup_alpha)
