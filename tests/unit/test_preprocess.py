"""Preprocessing: any image of a digit -> a 28x28 MNIST-style field, and MNIST itself unchanged."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from torchvision.datasets import MNIST

from mnist_mlops.serve.model.errors import RowError
from mnist_mlops.serve.model.preprocess import NO_DIGIT, to_mnist


@pytest.fixture(scope="module")
def digits(mnist_root) -> tuple[np.ndarray, np.ndarray]:
    test = MNIST(str(mnist_root), train=False)
    return test.data[:200].numpy().astype(np.float32) / 255.0, test.targets[:200].numpy()


def ink_box(image: np.ndarray) -> tuple[int, int]:
    rows, cols = np.flatnonzero(image.max(axis=1) > 0.1), np.flatnonzero(image.max(axis=0) > 0.1)
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def test_an_mnist_digit_comes_out_nearly_unchanged(digits):
    images, _ = digits
    differences = [np.abs(to_mnist(image) - image).mean() for image in images]
    assert np.median(differences) < 0.003
    assert np.percentile(differences, 95) < 0.03


def test_dark_ink_on_light_paper_gives_the_same_field_as_mnist_polarity(digits):
    image = digits[0][0]
    np.testing.assert_allclose(to_mnist(1.0 - image), to_mnist(image), atol=0.02)


def test_a_small_off_centre_digit_in_a_large_image_is_cropped_scaled_and_centred(digits):
    image = digits[0][3]
    canvas = np.zeros((300, 400), dtype=np.float32)
    big = ndimage.zoom(image, 4, order=1)
    canvas[20 : 20 + big.shape[0], 250 : 250 + big.shape[1]] = np.clip(big, 0, 1)
    field = to_mnist(canvas)
    assert field.shape == (28, 28)
    assert max(ink_box(field)) in (19, 20, 21)
    cy, cx = ndimage.center_of_mass(field)
    assert abs(cy - 14) < 1 and abs(cx - 14) < 1


def test_an_uneven_tinted_background_is_removed(digits):
    image = digits[0][5]
    ys, xs = np.mgrid[0:112, 0:112] / 112.0
    paper = 0.55 + 0.35 * xs + 0.05 * ys  # a strong lighting gradient
    photo = paper * (1 - ndimage.zoom(image, 4, order=1).clip(0, 1) * 0.8)
    field = to_mnist(photo)
    reference = to_mnist(image)
    # The gradient is gone: nothing but the digit is left in the field...
    assert field[:, :4].max() == 0 and field[:, -4:].max() == 0
    # ...and the digit matches the clean one (centring may differ by a pixel).
    best = max(
        np.corrcoef(np.roll(field, (dy, dx), axis=(0, 1)).ravel(), reference.ravel())[0, 1]
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    )
    assert best > 0.9


def test_isolated_specks_do_not_stretch_the_crop(digits):
    image = np.zeros((200, 200), dtype=np.float32)
    image[40:152, 40:152] = ndimage.zoom(digits[0][1], 4, order=1).clip(0, 1)
    image[190:193, 5:8] = 1.0  # a speck of dirt in the corner
    np.testing.assert_allclose(to_mnist(image), to_mnist(image[30:170, 30:170]), atol=0.05)


@pytest.mark.parametrize("level", [0.0, 0.5, 1.0])
def test_a_uniform_image_is_no_digit(level):
    with pytest.raises(RowError) as error:
        to_mnist(np.full((50, 50), level, dtype=np.float32))
    assert error.value.code == NO_DIGIT
    assert "no digit found" in str(error.value)


def test_faint_noise_alone_is_no_digit():
    noise = np.random.default_rng(0).normal(0.5, 0.01, (64, 64)).astype(np.float32)
    with pytest.raises(RowError, match="no digit found"):
        to_mnist(noise)
