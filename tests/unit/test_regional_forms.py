"""``augment.regional_forms``: a flag on 1s and a bar across 7s, drawn where the digit is, on the
chosen share of those two digits only, reproducibly."""

from __future__ import annotations

import torch

from mnist_mlops.train.augment import regional_forms


def _bar(rows: slice, cols: slice) -> torch.Tensor:
    image = torch.zeros(1, 28, 28)
    image[0, rows, cols] = 1.0
    return image


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    one = _bar(slice(4, 24), slice(14, 16))  # a plain vertical stroke
    seven = torch.maximum(_bar(slice(4, 6), slice(8, 20)), _bar(slice(4, 24), slice(18, 20)))
    other = _bar(slice(4, 24), slice(10, 12))
    return torch.stack([one, seven, other, one]), torch.tensor([1, 7, 3, 1])


def _drawn_on(index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, columns) of the ink ``regional_forms`` added to image ``index`` of ``_batch``."""
    images, labels = _batch()
    out = regional_forms(images, labels, torch.Generator().manual_seed(0), share=1.0)
    return torch.nonzero((out - images)[index, 0] > 0.5, as_tuple=True)


def test_a_flag_goes_down_to_the_left_from_the_top_of_a_1():
    rows, cols = _drawn_on(0)
    assert len(rows) > 0
    assert rows.min() >= 4 and rows.max() <= 4 + 0.38 * 20 + 2  # from the top, at most 38% of the height down
    assert cols.max() <= 15 and cols.min() < 13  # to the left of the stroke


def test_a_bar_crosses_the_stem_of_a_7_near_its_middle():
    rows, cols = _drawn_on(1)
    assert len(rows) > 0
    assert 9 <= rows.float().mean() <= 19  # the middle of rows 4-23
    assert cols.min() < 18 and cols.max() > 19  # on both sides of the stem


def test_other_digits_and_unchosen_images_pass_unchanged():
    images, labels = _batch()
    out = regional_forms(images, labels, torch.Generator().manual_seed(0), share=1.0)
    assert torch.equal(out[2], images[2])
    assert torch.equal(regional_forms(images, labels, torch.Generator().manual_seed(0), share=0.0), images)
    assert out.min() >= 0 and out.max() <= 1


def test_the_same_seed_draws_the_same_forms():
    images, labels = _batch()
    first = regional_forms(images, labels, torch.Generator().manual_seed(7), share=0.5)
    again = regional_forms(images, labels, torch.Generator().manual_seed(7), share=0.5)
    assert torch.equal(first, again)
