"""On-device augmentation: properties, and scipy/TensorFlow as independent oracles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi

from jaxcnn import config as config_lib
from jaxcnn.data import augment as aug
from jaxcnn.errors import UserError


def images(n=6, size=12, channels=3, seed=0):
    return jnp.asarray(np.random.default_rng(seed).uniform(size=(n, size, size, channels)).astype(np.float32))


def test_flipping_twice_with_the_same_key_is_the_identity():
    x, key = images(), jax.random.key(1)
    np.testing.assert_array_equal(aug.flip_horizontal(aug.flip_horizontal(x)), x)
    once = aug.random_flip(key, x)
    np.testing.assert_array_equal(aug.random_flip(key, once), x)
    flipped = [not np.array_equal(once[i], x[i]) for i in range(len(x))]
    for i, f in enumerate(flipped):  # each image is either itself or its mirror
        np.testing.assert_array_equal(once[i], x[i, :, ::-1] if f else x[i])
    assert 0 < sum(flipped) < len(x)


def test_random_crop_keeps_the_shape_and_is_a_window_of_the_zero_padded_image():
    x = images(n=8)
    out = np.asarray(aug.random_crop(jax.random.key(2), x, padding=4))
    assert out.shape == x.shape
    padded = np.pad(np.asarray(x), ((0, 0), (4, 4), (4, 4), (0, 0)))
    offsets = set()
    for i in range(len(x)):
        match = [(r, c) for r in range(9) for c in range(9) if np.array_equal(padded[i, r:r + 12, c:c + 12], out[i])]
        assert match, f"crop {i} is no window of the padded image"
        offsets.add(match[0])
    assert len(offsets) > 1  # offsets differ between images


def test_full_augmentation_is_a_function_of_its_key():
    augment = aug.Augment(crop_padding=2, flip=True, rotation_degrees=20, zoom=0.1, translation=0.1,
                          brightness=0.2, contrast=0.2, cutout=4, mixup=0.4, cutmix=1.0, num_classes=5)
    x, labels = images(), jnp.arange(6) % 5
    run = jax.jit(augment)
    a, la = run(jax.random.key(7), x, labels)
    b, lb = run(jax.random.key(7), x, labels)
    c, lc = run(jax.random.key(8), x, labels)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert a.shape == x.shape and la.shape == (6, 5) and la.dtype == jnp.float32
    assert not np.allclose(a, c)
    np.testing.assert_allclose(la.sum(axis=1), 1.0, rtol=1e-6)


def test_each_transform_has_its_own_random_stream():
    x, key = images(), jax.random.key(3)
    cropped, _ = aug.Augment(crop_padding=3)(key, x, None)
    both, _ = aug.Augment(crop_padding=3, cutout=5)(key, x, None)
    np.testing.assert_array_equal(both, aug.cutout(jax.random.fold_in(key, aug._CUTOUT), cropped, 5))


def test_rotation_matches_scipy():
    x = images(n=2, size=16, channels=1)
    angles = np.array([30.0, -75.0])
    out = aug.affine(x, jnp.deg2rad(angles), jnp.ones(2), jnp.zeros((2, 2)))
    for i, angle in enumerate(angles):
        expected = ndi.rotate(np.asarray(x[i, :, :, 0]), angle, reshape=False, order=1, mode="grid-constant")
        np.testing.assert_allclose(out[i, :, :, 0], expected, atol=1e-5)
    quarter = aug.affine(x, jnp.full(2, np.pi / 2), jnp.ones(2), jnp.zeros((2, 2)))
    np.testing.assert_allclose(quarter[0], np.rot90(np.asarray(x[0])), atol=1e-5)  # counter-clockwise


def test_zoom_and_translation_match_scipy():
    x = images(n=1, size=16, channels=1)
    image = np.asarray(x[0, :, :, 0])
    center = np.array([7.5, 7.5])
    zoomed = aug.affine(x, jnp.zeros(1), jnp.full(1, 1.25), jnp.zeros((1, 2)))
    expected = ndi.affine_transform(image, np.eye(2) / 1.25, offset=center - center / 1.25, order=1,
                                    mode="grid-constant")
    np.testing.assert_allclose(zoomed[0, :, :, 0], expected, atol=1e-5)
    shifted = aug.affine(x, jnp.zeros(1), jnp.ones(1), jnp.array([[3.0, -2.0]]))
    np.testing.assert_allclose(shifted[0, :, :, 0], ndi.shift(image, (3, -2), order=1, mode="grid-constant"),
                               atol=1e-5)


def test_random_affine_stays_within_its_ranges():
    x = images(n=4, size=16)
    np.testing.assert_allclose(aug.random_affine(jax.random.key(0), x, 0.0, 0.0, 0.0), x, atol=1e-5)
    out = aug.random_affine(jax.random.key(0), x, 10.0, 0.1, 0.1, fill="nearest")
    assert out.shape == x.shape and not np.allclose(out, x)


def test_brightness_adds_one_bounded_offset_per_image():
    x = images() * 0.5 + 0.25  # no clipping at +-0.2
    out = np.asarray(aug.random_brightness(jax.random.key(4), x, 0.2))
    offsets = out - np.asarray(x)
    per_image = offsets.reshape(len(x), -1)
    np.testing.assert_allclose(per_image, per_image[:, :1].repeat(per_image.shape[1], 1), atol=1e-6)
    assert np.all(np.abs(per_image[:, 0]) <= 0.2) and np.unique(per_image[:, 0].round(6)).size == len(x)


def test_contrast_matches_tensorflow_adjust_contrast():
    import tensorflow as tf
    x = images() * 0.2 + 0.4  # a narrow range: no clipping
    out = np.asarray(aug.random_contrast(jax.random.key(5), x, 0.5))
    for i in range(len(x)):
        factor = out[i].std() / np.asarray(x[i]).std()
        assert 0.5 <= factor <= 1.5
        np.testing.assert_allclose(out[i], tf.image.adjust_contrast(np.asarray(x[i]), factor).numpy(), atol=2e-3)


def test_cutout_zeros_one_square_clipped_at_the_border():
    x = images(n=32, size=16) + 1.0  # no zeros before
    out = np.asarray(aug.cutout(jax.random.key(6), x, 6))
    for image in out:
        rows, cols = np.nonzero((image == 0).all(axis=-1))
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert len(rows) == height * width and height <= 6 and width <= 6  # one filled rectangle
    assert any(len(np.nonzero(image == 0)[0]) == 36 * 3 for image in out)  # whole squares inside the image


def test_mixup_blends_images_and_labels_with_the_same_weight():
    x, labels = images(), jnp.array([0, 1, 2, 3, 4, 0])
    mixed, soft = aug.mix(jax.random.key(9), x, labels, 5, mixup_alpha=0.4, cutmix_alpha=0.0)
    lam = float(soft[1, 1])  # image 1 (class 1) is mixed with image 4 (class 4)
    np.testing.assert_allclose(mixed, lam * x + (1 - lam) * x[::-1], atol=1e-6)
    expected = lam * np.eye(5)[labels] + (1 - lam) * np.eye(5)[labels[::-1]]
    np.testing.assert_allclose(soft, expected, atol=1e-6)


def test_cutmix_labels_weigh_the_pasted_area_exactly():
    x, labels = images(n=4, size=10), jnp.array([0, 1, 2, 3])
    for seed in range(5):
        mixed, soft = aug.mix(jax.random.key(seed), x, labels, 4, mixup_alpha=0.0, cutmix_alpha=1.0)
        mixed, soft = np.asarray(mixed), np.asarray(soft)
        from_partner = (mixed[0] == np.asarray(x[3])).all(axis=-1) & (mixed[0] != np.asarray(x[0])).any(axis=-1)
        from_self = (mixed[0] == np.asarray(x[0])).all(axis=-1)
        assert (from_partner | from_self).all()  # every pixel comes from one of the two images
        np.testing.assert_allclose(soft[0, 3], from_partner.mean(), atol=1e-6)
        np.testing.assert_allclose(soft[0, 0], 1 - from_partner.mean(), atol=1e-6)


def test_augment_options_are_checked():
    for key, value in [("crop_padding", "-1"), ("rotation_degrees", "270"), ("zoom", "1.5"), ("fill", "mirror"),
                       ("mixup", "-0.2"), ("brightness", "2")]:
        with pytest.raises(UserError, match=f"config.augment.{key}"):
            config_lib.apply_overrides(config_lib.get_config(), {f"augment.{key}": value})
    with pytest.raises(UserError, match="unknown config key 'augment.flips'"):
        config_lib.apply_overrides(config_lib.get_config(), {"augment.flips": "true"})
    config = config_lib.apply_overrides(config_lib.get_config(), {"augment.crop_padding": "4", "augment.flip": "true"})
    assert aug.Augment.from_config(config.augment) == aug.Augment(crop_padding=4, flip=True)
