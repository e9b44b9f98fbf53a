"""Input rows: which column each row uses, pixel parsing and its limits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mnist_mlops.serve.model import inputs
from mnist_mlops.serve.model.errors import InvalidModelInput, RowError


def test_rows_may_mix_image_and_pixels():
    frame = pd.DataFrame({"image": [b"png", None, None], "pixels": [None, [0] * 784, "0 " * 784]})
    kinds = inputs.row_kinds(frame)
    assert [k[0] for k in kinds] == ["image", "pixels", "pixels"]


def test_a_row_with_both_or_neither_is_an_error_naming_the_columns():
    frame = pd.DataFrame({"image": [b"png", None], "pixels": [[0] * 784, float("nan")]})
    both, neither = inputs.row_kinds(frame)
    assert isinstance(both, RowError) and "both 'image' and 'pixels'" in str(both)
    assert isinstance(neither, RowError) and "neither 'image' nor 'pixels'" in str(neither)


def test_a_table_without_either_column_is_refused_with_what_is_accepted():
    with pytest.raises(InvalidModelInput) as error:
        inputs.as_frame(pd.DataFrame({"img": [1]}))
    assert "no 'image' or 'pixels' column" in error.value.message
    assert "784 numbers" in error.value.message


@pytest.mark.parametrize(
    "value",
    [
        [i % 256 for i in range(784)],
        np.arange(784) / 783.0,
        " ".join(["255"] * 392 + ["0"] * 392),
        "[" + ", ".join(["1"] * 700 + ["0"] * 84) + "]",
        np.eye(28) * 255,
    ],
)
def test_pixels_come_as_lists_arrays_or_text(value):
    image = inputs.pixels_to_image(value)
    assert image.shape == (28, 28) and image.dtype == np.float32
    assert image.min() >= 0.0 and image.max() <= 1.0


def test_pixels_in_0_255_and_0_1_give_the_same_image():
    values = np.linspace(0, 255, 784)
    np.testing.assert_allclose(inputs.pixels_to_image(values), inputs.pixels_to_image(values / 255.0), atol=1e-6)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([1.0] * 100, "got 100 values; expected 784"),
        ([float("nan")] + [0.0] * 783, "NaN or infinite"),
        ([float("inf")] + [0.0] * 783, "NaN or infinite"),
        ([-1.0] + [0.0] * 783, "range from -1 to 0; expected 0 to 255"),
        ([300.0] + [0.0] * 783, "expected 0 to 255"),
        ("one two three", "expected 784 numbers"),
        ({"a": 1}, "expected 784 numbers"),
        ([0.0] * 784, "no digit found"),
    ],
)
def test_bad_pixel_rows_raise_a_row_error_saying_what_is_accepted(value, message):
    with pytest.raises(RowError, match=message):
        inputs.pixels_to_image(value)
