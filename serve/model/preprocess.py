"""A greyscale image of a digit -> a 28x28 MNIST-style image, the way MNIST itself was made.

MNIST digits are light ink on a black background, cropped to the ink, scaled so the longer side
is 20 pixels (keeping the aspect ratio, anti-aliased) and placed in a 28x28 field with the centre
of mass at the centre. ``to_mnist`` does the same to any image, after undoing what a photo adds:

1. polarity: the ink is whatever differs from the background, which is read off the border
   (dark ink on light paper is the usual photo; MNIST is light on dark);
2. uneven paper: a shaded or tinted background is estimated by a grey opening wider than the
   strokes and subtracted;
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

from serve.model.errors import RowError

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


def _otsu(values: np.ndarray, bins: int = 64) -> float:
    """Otsu's threshold of values in [0, 1]."""
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(hist)
    weight_high = weight_low[-1] - weight_low
    mass_low = np.cumsum(hist * centres)
    mean_low = mass_low / np.maximum(weight_low, 1e-12)
    mean_high = (mass_low[-1] - mass_low) / np.maximum(weight_high, 1e-12)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[1:][int(np.argmax(between))])


def _no_ink(detail: str) -> RowError:
    return RowError(f"no digit found: {detail}; send an image with a visible digit", code=NO_DIGIT)


def ink_polarity(gray: np.ndarray) -> np.ndarray:
    """Make the ink bright and the background dark, whatever their polarity in the image.

    The paper is the majority of the pixels (their median); the ink is whichever tail of the
    histogram reaches farther from it. Extreme percentiles are used because a thin digit in a
    large photo may cover well under 1% of the pixels.
    """
    low, median, high = np.percentile(gray, [0.1, 50, 99.9])
    if high - low < MIN_CONTRAST:
        raise _no_ink("the image is blank or uniform")
    return 1.0 - gray if (median - low) > (high - median) else gray


def _stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width of a binary mask: area over half the boundary length."""
    area = int(mask.sum())
    if area == 0:
        return 0.0
    boundary = int((mask & ~ndimage.binary_erosion(mask, border_value=0)).sum())
    return 2.0 * area / max(boundary, 1)


def remove_background(ink: np.ndarray) -> np.ndarray:
    """Subtract the background (flat, or unevenly lit paper) from a bright-ink image.

    Uneven paper is estimated as a low percentile over windows a fifth of the image wide, on a
    copy reduced to about ``BACKGROUND_SIDE`` pixels (the light varies slowly, so nothing is lost),
    then smoothed and scaled back up. A low percentile is robust to the ink, which is bright here.
    """
    threshold = _otsu(ink)
    paper = ink[ink <= threshold]
    if paper.size == 0:
        return ink
    # The paper's spread, from its darker three quarters: the anti-aliased edges of the strokes
    # also fall below the threshold, but they are few and sit in the top quarter.
    p5, p50, p75 = np.percentile(paper, [5, 50, 75])
    if p75 - p5 < 0.05:  # flat paper (MNIST's is exactly 0): a constant is all there is to remove
        return np.clip(ink - p50, 0.0, None)
    height, width = ink.shape
    step = max(1, round(max(height, width) / BACKGROUND_SIDE))
    small = ink[::step, ::step]
    window = max(3, round(max(small.shape) / 5))
    background = ndimage.percentile_filter(small, 25, size=window, mode="nearest")
    background = ndimage.uniform_filter(background, size=max(3, window // 2), mode="nearest")
    full = Image.fromarray(background.astype(np.float32), mode="F").resize((width, height), Image.Resampling.BILINEAR)
    return np.clip(ink - np.asarray(full, dtype=np.float32), 0.0, None)


def normalise_contrast(ink: np.ndarray) -> np.ndarray:
    """Paper noise floor -> 0, the strokes' typical level -> 1."""
    threshold = _otsu(ink)
    paper, strokes = ink[ink <= threshold], ink[ink > threshold]
    if strokes.size == 0:
        raise _no_ink("nothing stands out from the background")
    if paper.size:
        median = float(np.median(paper))
        spread = 1.4826 * float(np.median(np.abs(paper - median)))
        floor = median + 3.0 * spread
    else:
        floor = 0.0
    level = float(np.percentile(strokes, 75))
    if level - floor < MIN_CONTRAST:
        raise _no_ink("the ink is too faint")
    return np.clip((ink - floor) / (level - floor), 0.0, 1.0)


def digit_region(ink: np.ndarray) -> tuple[np.ndarray, float]:
    """(mask of the digit's strokes and their anti-aliased edges, stroke width in pixels)."""
    strokes = ink > 0.25
    labels, count = ndimage.label(strokes, structure=_EIGHT_CONNECTED)
    if count == 0:
        raise _no_ink("nothing stands out from the background")
    areas = np.bincount(labels.ravel())[1:]
    keep = np.flatnonzero(areas >= SPECK_FRACTION * areas.max()) + 1
    if areas.max() < 4:
        raise _no_ink("only isolated specks")
    kept = np.isin(labels, keep) if count > 1 else strokes
    width = _stroke_width(kept)
    grow = max(1, round(width / 2))
    return ndimage.binary_dilation(kept, structure=_EIGHT_CONNECTED, iterations=grow), width


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
    cy, cx = ndimage.center_of_mass(digit)
    top = int(np.clip(round(MNIST_CENTRE[0] - cy), 0, field - h))
    left = int(np.clip(round(MNIST_CENTRE[1] - cx), 0, field - w))
    out = np.zeros((field, field), dtype=np.float32)
    out[top : top + h, left : left + w] = digit
    return out


def to_mnist(gray: np.ndarray) -> np.ndarray:
    """Greyscale ``[H, W]`` in [0, 1] -> ``float32 [28, 28]`` in [0, 1], ink bright, MNIST-style."""
    ink = normalise_contrast(remove_background(ink_polarity(gray)))
    region, width = digit_region(ink)
    ink = ink * region
    crop = ink[_bounding_box(ink > 0.02)]
    crop = thicken_thin_strokes(crop, width)
    crop = crop[_bounding_box(crop > 0.02)]
    return centre_by_mass(fit_box(crop))
