"""The baseline the served preprocessing is measured against: a plain textbook preprocessing."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage


def textbook(data: bytes) -> np.ndarray:
    """The baseline: grey, polarity from the border, background subtraction, crop, a 20-pixel box,
    centre of mass. What a tutorial does, and what MNIST's makers described."""
    image = Image.open(io.BytesIO(data))
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        white.alpha_composite(image)
        image = white
    gray = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(border) > 0.5:
        gray = 1.0 - gray
    small = np.asarray(Image.fromarray(gray).resize((64, 64), Image.Resampling.BILINEAR))
    background = Image.fromarray(ndimage.median_filter(small, size=15))
    ink = np.clip(gray - np.asarray(background.resize(gray.shape[::-1], Image.Resampling.BILINEAR)), 0, None)
    if ink.max() <= 0:
        return np.zeros((28, 28), np.float32)
    ink /= ink.max()
    ink[ink < 0.2] = 0
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    scale = 20 / max(crop.shape)
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    digit = np.clip(np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.LANCZOS), dtype=np.float32), 0, 1)
    field = np.zeros((28, 28), np.float32)
    cy, cx = ndimage.center_of_mass(digit)
    top = int(np.clip(round(14 - cy), 0, 28 - digit.shape[0]))
    left = int(np.clip(round(14 - cx), 0, 28 - digit.shape[1]))
    field[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return field
