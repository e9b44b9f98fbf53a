"""The vectorised path gives exactly what ``to_mnist`` gives, image by image, and hands back what
it does not cover."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from torchvision.datasets import MNIST

from mnist_mlops.serve.model.decode import as_unit
from mnist_mlops.serve.model.errors import RowError
from mnist_mlops.serve.model.preprocess import to_mnist
from mnist_mlops.serve.model.preprocess_batch import (
    _ONLY_WITHIN_AN_IMAGE,
    _dilate_square,
    _interior_counts,
    _owners,
    to_mnist_batch,
)


@pytest.fixture(scope="module")
def stack(mnist_root) -> np.ndarray:
    images = MNIST(str(mnist_root), train=False).data[:300].numpy().astype(np.float32) / 255.0
    images[3] = 0.0  # blank
    images[4] = 1.0 - images[4]  # dark ink on light paper
    images[5] = images[5] * 0.5 + 0.3  # grey paper, faded ink
    images[6, 0:2, 0:2] = 1.0  # a speck in the corner
    xs = np.mgrid[0:28, 0:28][1] / 28.0
    images[7] = np.clip((1 - images[7]) * (0.3 + 0.7 * xs), 0, 1)  # dark ink, uneven light: left to to_mnist
    return images


@pytest.fixture(scope="module")
def stack_8bit(stack) -> np.ndarray:
    """The same images as 8-bit levels, as ``decode_levels`` hands over a greyscale PNG, and a
    few on grey paper among them: the images whose background is shifted are redone, the
    others keep their first histogram."""
    levels = np.round(stack * 255).astype(np.uint8)
    levels[10:20] = np.clip(levels[10:20].astype(np.int16) + np.arange(5, 55, 5)[:, None, None], 0, 255)
    return levels


@pytest.fixture(scope="module")
def large_stack(stack) -> np.ndarray:
    """The same digits on a 60x60 canvas, plus one drawn with a one-pixel pen (thin strokes)."""
    canvas = np.zeros((len(stack), 60, 60), dtype=np.float32)
    canvas[:, 16:44, 16:44] = stack
    canvas[8] = 0.0
    canvas[8, 5:55, 30] = 1.0
    canvas[8, 5, 20:31] = 1.0
    return canvas


@pytest.mark.parametrize("which", ["stack", "stack_8bit", "large_stack"])
def test_the_vectorised_path_equals_the_per_image_path(which, request):
    images = request.getfixturevalue(which)
    fields, errors, done = to_mnist_batch(images)
    assert done.sum() >= len(images) - 4
    for i, image in enumerate(images):
        try:
            expected = to_mnist(as_unit(image))
        except RowError as error:
            assert errors[i] is not None and str(errors[i]) == str(error)
            continue
        assert errors[i] is None
        if done[i]:
            np.testing.assert_allclose(fields[i], expected, atol=1e-5, err_msg=f"image {i}")


def test_what_it_does_not_cover_is_handed_back(stack, large_stack):
    _, errors, done = to_mnist_batch(stack)
    assert errors[3] is not None and "blank or uniform" in str(errors[3])
    assert not done[7] and errors[7] is None  # uneven paper
    _, errors, done = to_mnist_batch(large_stack)
    assert not done[8] and errors[8] is None  # thin strokes


@pytest.mark.parametrize("reach", [1, 2, 3, 5, 40])
def test_the_square_dilation_is_scipys_maximum_filter(reach):
    masks = np.random.default_rng(reach).random((20, 28, 33)) > 0.93
    masks[0] = False
    masks[1] = True
    masks[2, 0, 0] = masks[2, -1, -1] = True  # corners: where the border mode would show
    expected = ndimage.maximum_filter(masks, size=(1, 2 * reach + 1, 2 * reach + 1))
    assert np.array_equal(_dilate_square(masks, reach), expected)


def test_the_interior_counts_are_scipys_erosion_with_a_cross():
    masks = np.random.default_rng(0).random((20, 28, 28)) > 0.3
    masks[0] = True  # the image's edge is outside: its border pixels are not interior
    cross = np.zeros((3, 3, 3), dtype=bool)
    cross[1] = ndimage.generate_binary_structure(2, 1)
    expected = ndimage.binary_erosion(masks, structure=cross, border_value=0).sum(axis=(1, 2))
    assert np.array_equal(_interior_counts(masks), expected)


def test_each_label_is_owned_by_the_image_it_is_in():
    masks = np.random.default_rng(1).random((40, 28, 28)) > 0.8
    masks[[0, 7, 8, 39]] = False  # images without a component, first, last and in a row
    labels, count = ndimage.label(masks, structure=_ONLY_WITHIN_AN_IMAGE)
    expected = np.zeros(count + 1, dtype=np.intp)
    expected[labels.ravel()] = np.repeat(np.arange(len(masks)), masks[0].size)
    assert count > 1000
    assert np.array_equal(_owners(labels, count)[1:], expected[1:])  # 0 is the background
