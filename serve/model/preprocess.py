"""A greyscale image of a digit -> a 28x28 MNIST-style image, the way MNIST itself was made.

MNIST digits are light ink on a black background, cropped to the ink, scaled so the longer side
is 20 pixels (keeping the aspect ratio, anti-aliased) and placed in a 28x28 field with the centre
of mass at the centre. ``to_mnist`` does the same to any image, after undoing what a photo adds:

1. polarity: the ink is whatever differs from the paper, the majority of the pixels
   (dark ink on light paper is the usual photo; MNIST is light on dark);
2. uneven paper: a shaded or tinted background is estimated by a low percentile over wide
   windows and subtracted;
3. noise: the paper's noise floor goes to 0 and the strokes' typical level to 1, and specks far
   smaller than the digit are dropped;
4. thin pen strokes are thickened towards MNIST's stroke-to-size ratio;
5. crop, scale to 20 pixels, centre by mass in 28x28.

A 28x28 MNIST digit comes out (nearly) unchanged: its background is flat zero, its strokes
saturate and its box is already 20 pixels. An image with no ink raises ``RowError`` with code
``no_digit``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from .errors import RowError
from .levels import Levels

FIELD = 28  # output side, pixels
BOX = 20  # longer side of the digit inside the field, as in MNIST
# MNIST's mean centre of mass, in array index coordinates, measured over the 10k test digits.
MNIST_CENTRE = (14.0, 14.0)
MIN_CONTRAST = 0.08  # ink differing from the background by less than this is no ink
BACKGROUND_SIDE = 100  # the uneven-paper estimate works on a copy about this many pixels wide
SPECK_FRACTION = 0.05  # components smaller than this share of the largest are noise
# Strokes thinner than this share of the digit's longer side are thickened to TARGET_STROKE.
THIN_STROKE = 0.075
TARGET_STROKE = 0.13
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)

NO_DIGIT = "no_digit"


def _no_ink(detail: str) -> RowError:
    return RowError(f"no digit found: {detail}; send an image with a visible digit", code=NO_DIGIT)


def ink_polarity(gray: np.ndarray, levels: Levels) -> tuple[np.ndarray, Levels]:
    """Make the ink bright and the background dark, whatever their polarity in the image.

    The paper is the majority of the pixels (their median); the ink is whichever tail of the
    histogram reaches farther from it. Extreme percentiles are used because a thin digit in a
    large photo may cover well under 1% of the pixels.
    """
    low, median, high = levels.percentile(0.1), levels.percentile(50), levels.percentile(99.9)
    if high - low < MIN_CONTRAST:
        raise _no_ink("the image is blank or uniform")
    if (median - low) > (high - median):
        return 1.0 - gray, levels.inverted()
    return gray, levels


def stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width of a binary mask: area over half the boundary length."""
    area = int(np.count_nonzero(mask))
    if area == 0:
        return 0.0
    boundary = area - int(np.count_nonzero(ndimage.binary_erosion(mask, border_value=0)))
    return 2.0 * area / max(boundary, 1)


def remove_background(ink: np.ndarray, levels: Levels) -> tuple[np.ndarray, Levels | None]:
    """Subtract the background (flat, or unevenly lit paper) from a bright-ink image.

    Uneven paper is estimated as a low percentile over windows a fifth of the image wide, on a
    copy reduced to about ``BACKGROUND_SIDE`` pixels (the light varies slowly, so nothing is lost),
    then smoothed and scaled back up. A low percentile is robust to the ink, which is bright here.
    Returns the ink and, when it is still valid, its histogram.
    """
    paper = levels.below(levels.otsu())
    if paper.total == 0:
        return ink, levels
    # The paper's spread, from its darker three quarters: the anti-aliased edges of the strokes
    # also fall below the threshold, but they are few and sit in the top quarter.
    p5, p50, p75 = paper.percentile(5), paper.percentile(50), paper.percentile(75)
    if p75 - p5 < 0.05:  # flat paper (MNIST's is exactly 0): a constant is all there is to remove
        return (np.clip(ink - p50, 0.0, None), None) if p50 > 0 else (ink, levels)
    height, width = ink.shape
    step = max(1, round(max(height, width) / BACKGROUND_SIDE))
    small = ink[::step, ::step]
    window = max(3, round(max(small.shape) / 5))
    background = ndimage.percentile_filter(small, 25, size=window, mode="nearest")
    background = ndimage.uniform_filter(background, size=max(3, window // 2), mode="nearest")
    full = Image.fromarray(background.astype(np.float32), mode="F").resize((width, height), Image.Resampling.BILINEAR)
    return np.clip(ink - np.asarray(full, dtype=np.float32), 0.0, None), None


def normalise_contrast(ink: np.ndarray, levels: Levels | None = None) -> np.ndarray:
    """Paper noise floor -> 0, the strokes' typical level -> 1."""
    levels = levels or Levels.of(ink)
    threshold = levels.otsu()
    paper, strokes = levels.below(threshold), levels.above(threshold)
    if strokes.total == 0:
        raise _no_ink("nothing stands out from the background")
    floor = 0.0
    if paper.total:
        median, deviation = paper.median_absolute_deviation()
        floor = median + 3.0 * 1.4826 * deviation
    level = strokes.percentile(75)
    if level - floor < MIN_CONTRAST:
        raise _no_ink("the ink is too faint")
    if floor == 0.0 and level == 1.0:
        return ink  # already MNIST-like: nothing to stretch
    return np.clip((ink - floor) / (level - floor), 0.0, 1.0)


def digit_region(ink: np.ndarray) -> tuple[np.ndarray, float]:
    """(mask of the digit's strokes and their anti-aliased edges, stroke width in pixels)."""
    strokes = ink > 0.25
    labels, count = ndimage.label(strokes, structure=_EIGHT_CONNECTED)
    if count == 0:
        raise _no_ink("nothing stands out from the background")
    areas = np.bincount(labels.ravel())
    areas[0] = 0
    if areas.max() < 4:
        raise _no_ink("only isolated specks")
    if count > 1:
        keep = areas >= SPECK_FRACTION * areas.max()
        keep[0] = False
        strokes = keep[labels]
    width = stroke_width(strokes)
    grow = max(1, round(width / 2))
    # Growing by ``grow`` steps of the 8-neighbourhood is a square maximum filter (separable, fast).
    return ndimage.maximum_filter(strokes, size=2 * grow + 1), width


def _bounding_box(values: np.ndarray) -> tuple[slice, slice]:
    rows, cols = np.flatnonzero(values.any(axis=1)), np.flatnonzero(values.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def thicken_thin_strokes(crop: np.ndarray, width: float) -> np.ndarray:
    """Dilate pen-thin strokes towards MNIST's stroke-to-size ratio; thicker ones pass unchanged."""
    longer = max(crop.shape)
    if width <= 0 or width / longer >= THIN_STROKE:
        return crop
    size = round(TARGET_STROKE * longer - width) + 1
    if size < 2:
        return crop
    padded = np.pad(crop, size)
    return ndimage.grey_dilation(padded, size=(size, size))


def fit_box(crop: np.ndarray, box: int = BOX) -> np.ndarray:
    """Scale so the longer side is ``box`` pixels, keeping the aspect ratio (anti-aliased)."""
    h, w = crop.shape
    scale = box / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size == (w, h):
        return crop
    resized = Image.fromarray(crop.astype(np.float32), mode="F").resize(size, Image.Resampling.LANCZOS)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def centre_by_mass(digit: np.ndarray, field: int = FIELD) -> np.ndarray:
    """Place ``digit`` in a ``field`` x ``field`` square with its centre of mass at the centre."""
    h, w = digit.shape
    total = float(digit.sum())
    cy = float(digit.sum(axis=1) @ np.arange(h)) / total
    cx = float(digit.sum(axis=0) @ np.arange(w)) / total
    top = int(np.clip(round(MNIST_CENTRE[0] - cy), 0, field - h))
    left = int(np.clip(round(MNIST_CENTRE[1] - cx), 0, field - w))
    out = np.zeros((field, field), dtype=np.float32)
    out[top : top + h, left : left + w] = digit
    return out


def paper_is_flat(gray: np.ndarray) -> bool:
    """Whether ``gray`` is a drawing, a scan or an MNIST digit rather than a photo: its paper one
    flat level, and that level black once the ink is made bright (white paper inverted). Such
    images take ``to_mnist``; photos take ``photo.fields``. Raises ``RowError`` for a blank image."""
    _, levels = ink_polarity(gray, Levels.of(gray))
    paper = levels.below(levels.otsu())
    return paper.total > 0 and paper.percentile(75) - paper.percentile(5) < 0.05 and paper.percentile(50) < 0.03


def to_mnist(gray: np.ndarray) -> np.ndarray:
    """Greyscale ``[H, W]`` in [0, 1] -> ``float32 [28, 28]`` in [0, 1], ink bright, MNIST-style."""
    ink, levels = ink_polarity(gray, Levels.of(gray))
    ink = normalise_contrast(*remove_background(ink, levels))
    region, width = digit_region(ink)
    ink = ink * region
    crop = ink[_bounding_box(ink > 0.02)]
    crop = thicken_thin_strokes(crop, width)
    crop = crop[_bounding_box(crop > 0.02)]
    return centre_by_mass(fit_box(crop))
