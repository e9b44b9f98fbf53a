"""The model input, row by row: which column each row uses, and its checks.

Each row carries either ``image`` (an encoded image file: bytes in-process, base64 in JSON) or
``pixels`` (784 numbers, a 28x28 MNIST-style image, white ink on black, 0-255 or 0-1). Rows of
both kinds may be mixed; a row with both or neither is an error.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from .errors import InvalidModelInput, RowError
from .preprocess import MIN_CONTRAST, NO_DIGIT

IMAGE, PIXELS = "image", "pixels"
PIXEL_COUNT = 28 * 28
ACCEPTED_COLUMNS = (
    "a column 'image' (an encoded PNG/JPEG/BMP/GIF/WebP/TIFF file, base64 in JSON) "
    "and/or a column 'pixels' (784 numbers, a list or text: a 28x28 image, white ink on black, "
    "0-255 or 0-1)"
)


def is_missing(value: object) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def as_frame(model_input: object) -> pd.DataFrame:
    """The input as a DataFrame with at least one of the accepted columns."""
    if isinstance(model_input, dict):
        model_input = pd.DataFrame(model_input)
    if not isinstance(model_input, pd.DataFrame):
        raise InvalidModelInput(f"expected a table with {ACCEPTED_COLUMNS}")
    if IMAGE not in model_input.columns and PIXELS not in model_input.columns:
        # MLflow drops columns the signature does not declare before predict sees them, so the
        # columns a client actually sent cannot be listed here.
        raise InvalidModelInput(f"the input has no 'image' or 'pixels' column; expected {ACCEPTED_COLUMNS}")
    return model_input


def row_kinds(frame: pd.DataFrame) -> list[tuple[str, object] | RowError]:
    """Per row, ``(column, value)`` of the one column it uses, or the ``RowError`` that row has."""
    images = frame[IMAGE].tolist() if IMAGE in frame.columns else [None] * len(frame)
    pixels = frame[PIXELS].tolist() if PIXELS in frame.columns else [None] * len(frame)
    kinds: list[tuple[str, object] | RowError] = []
    for image, pixel_row in zip(images, pixels, strict=True):
        has_image, has_pixels = not is_missing(image), not _pixels_missing(pixel_row)
        if has_image and has_pixels:
            kinds.append(RowError("both 'image' and 'pixels' are set; send one of them per row"))
        elif has_image:
            kinds.append((IMAGE, image))
        elif has_pixels:
            kinds.append((PIXELS, pixel_row))
        else:
            kinds.append(RowError(f"neither 'image' nor 'pixels' is set; send {ACCEPTED_COLUMNS}"))
    return kinds


def _pixels_missing(value: object) -> bool:
    if isinstance(value, (list, tuple, np.ndarray)):
        return False
    return is_missing(value) or (isinstance(value, str) and not value.strip())


def _parse_numbers(value: object) -> np.ndarray:
    """A list/array of numbers, or the same as text ("0 0 255 ..." or "[0, 0, 255, ...]")."""
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        text = value.strip().removeprefix("[").removesuffix("]").strip()
        value = re.split(r"[,;\s]+", text) if text else []
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise RowError(f"expected {PIXEL_COUNT} numbers, as a list or as text") from None


def pixels_to_image(value: object) -> np.ndarray:
    """784 numbers (0-255, or 0-1) -> ``float32 [28, 28]`` in [0, 1]."""
    values = _parse_numbers(value)
    if values.ndim == 2 and values.shape == (28, 28):
        values = values.ravel()
    if values.ndim != 1 or values.size != PIXEL_COUNT:
        raise RowError(f"got {values.size} values; expected {PIXEL_COUNT} (a 28x28 image)")
    if not np.isfinite(values).all():
        raise RowError("NaN or infinite values; expected numbers from 0 to 255 (or 0 to 1)")
    low, high = values.min(), values.max()
    if low < 0 or high > 255:
        raise RowError(f"values range from {low:g} to {high:g}; expected 0 to 255 (or 0 to 1)")
    scale = 1.0 if high <= 1.0 else 255.0
    if (high - low) / scale < MIN_CONTRAST:
        raise RowError(
            "no digit found: the pixels are blank or uniform; send an image with a visible digit",
            code=NO_DIGIT,
        )
    return (values / scale).astype(np.float32).reshape(28, 28)
