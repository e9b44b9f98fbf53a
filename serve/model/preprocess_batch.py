"""``to_mnist`` vectorised over a stack of same-sized small images (MNIST-like inputs).

Per image, the pipeline is a few dozen small NumPy calls whose fixed cost dominates on a 28x28
digit. Here each step runs once for the whole stack: one ``bincount`` for every histogram, one
``ndimage.label`` whose 3D structure never connects two images, vectorised percentiles and Otsu
thresholds. The result equals ``to_mnist`` image by image (a test checks it); images that need the
steps this path does not cover (uneven paper, thin strokes) are left to ``to_mnist``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .decode import as_unit
from .errors import RowError
from .levels import BINS
from .preprocess import (
    BOX,
    FIELD,
    MIN_CONTRAST,
    MNIST_CENTRE,
    SPECK_FRACTION,
    THIN_STROKE,
    _no_ink,
    fit_box,
)

MAX_SIDE = 64  # images up to this size take the vectorised path
MIN_IMAGES = 4  # below this, the per-image path is as fast

_CENTRES = np.arange(BINS, dtype=np.float64) / (BINS - 1)
_ONLY_WITHIN_AN_IMAGE = np.zeros((3, 3, 3), dtype=bool)
_ONLY_WITHIN_AN_IMAGE[1] = True  # 8-connected inside an image, never across the stack


def _histograms(images: np.ndarray) -> np.ndarray:
    """Per image, its counts in ``BINS`` bins: of values in [0, 1], or of 8-bit levels, which
    are their own bins (a level ``l`` as ``l / 255`` in ``float32`` falls back into bin ``l``)."""
    n = len(images)
    if images.dtype == np.uint8:
        levels = images.reshape(n, -1).astype(np.intp)
    else:
        levels = np.clip(images * (BINS - 1) + 0.5, 0, BINS - 1).astype(np.intp).reshape(n, -1)
    levels += (np.arange(n) * BINS)[:, None]
    return np.bincount(levels.ravel(), minlength=n * BINS).reshape(n, BINS).astype(np.float64)


def _percentile_bin(cumulative: np.ndarray, q: float) -> np.ndarray:
    """Per row, the bin of the ``q``-th percentile, from the row's cumulative histogram; bin 0
    (value 0.0, as ``Levels.percentile`` answers) for an empty histogram."""
    wanted = cumulative[:, -1:] * (q / 100.0)
    return np.minimum((cumulative < wanted).sum(axis=1), BINS - 1)


def _percentile(cumulative: np.ndarray, q: float) -> np.ndarray:
    """Per row, the ``q``-th percentile from the row's cumulative histogram (shared by callers:
    one ``cumsum`` answers every percentile of a histogram)."""
    return _CENTRES[_percentile_bin(cumulative, q)]


def _otsu(counts: np.ndarray, weight_low: np.ndarray) -> np.ndarray:
    """Otsu's threshold per row; ``weight_low`` is the rows' cumulative histogram."""
    weight_high = weight_low[:, -1:] - weight_low
    mass_low = np.cumsum(counts * _CENTRES, axis=1)
    # weight_low * weight_high * (mean_low - mean_high) ** 2, in that order of operations (the
    # per-image path's, so ties resolve alike), computed in place: a stack's temporaries are
    # megabytes each.
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = np.subtract(mass_low[:, -1:], mass_low)
        gap /= weight_high
        np.divide(mass_low, weight_low, out=mass_low)
        np.subtract(mass_low, gap, out=gap)
        np.square(gap, out=gap)
        between = np.multiply(weight_low, weight_high, out=weight_high)
        between *= gap
    return _CENTRES[np.argmax(np.nan_to_num(between, copy=False), axis=1)]


def _cut(counts: np.ndarray, threshold: np.ndarray, keep_below: bool) -> np.ndarray:
    cut = np.round(threshold * (BINS - 1)).astype(np.intp)[:, None] + 1
    below = np.arange(BINS)[None, :] < cut
    return np.where(below if keep_below else ~below, counts, 0.0)


def _distance_orders() -> tuple[np.ndarray, np.ndarray]:
    """Per median bin ``m``: the bins in order of distance from ``m`` (a stable argsort, as
    ``Levels.median_absolute_deviation`` sorts them) and those distances in that order."""
    distance = np.abs(_CENTRES[None, :] - _CENTRES[:, None])
    order = np.argsort(distance, axis=1, kind="stable")
    return order, np.take_along_axis(distance, order, axis=1)


# A median is always a bin centre, so each image's sort is one of these 256: looked up, not redone.
_ORDER_FROM_MEDIAN, _SORTED_DISTANCE_FROM_MEDIAN = _distance_orders()


def _median_absolute_deviation(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cumulative = np.cumsum(counts, axis=1)
    median_bin = _percentile_bin(cumulative, 50)
    deviation = np.zeros(len(counts))
    # Where the median's own bin holds half the values (a black paper), the deviation is 0: the
    # nearest bin is the median's. Only the others are sorted by distance.
    spread = np.take_along_axis(counts, median_bin[:, None], axis=1)[:, 0] < cumulative[:, -1] / 2.0
    if spread.any():
        order = _ORDER_FROM_MEDIAN[median_bin[spread]]
        cumulative = np.cumsum(np.take_along_axis(counts[spread], order, axis=1), axis=1)
        index = np.minimum((cumulative < cumulative[:, -1:] / 2.0).sum(axis=1), BINS - 1)
        deviation[spread] = _SORTED_DISTANCE_FROM_MEDIAN[median_bin[spread], index]
    return _CENTRES[median_bin], deviation


def _first_last(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and one-past-last index where ``mask[i]`` is true, per row."""
    first = np.argmax(mask, axis=1)
    last = mask.shape[1] - np.argmax(mask[:, ::-1], axis=1)
    return first, last


def to_mnist_batch(grays: np.ndarray) -> tuple[np.ndarray, list[RowError | None], np.ndarray]:
    """``grays`` ``[N, H, W]``, in [0, 1] or as ``uint8`` levels (``decode_levels``' answers)
    -> (fields ``[N, 28, 28]``, per-image RowError or None, which images were done here).
    Images not done here must go through ``to_mnist``."""
    n = len(grays)
    x = as_unit(grays) if grays.dtype == np.uint8 else grays.astype(np.float32, copy=True)
    errors: list[RowError | None] = [None] * n
    done = np.ones(n, dtype=bool)

    def fail(rows: np.ndarray, error: RowError) -> None:
        for i in np.flatnonzero(rows & done):
            errors[i] = error
        done[rows] = False

    # 1. polarity (ink_polarity)
    counts = _histograms(grays)
    cumulative = np.cumsum(counts, axis=1)
    low, median, high = (_percentile(cumulative, q) for q in (0.1, 50, 99.9))
    fail(high - low < MIN_CONTRAST, _no_ink("the image is blank or uniform"))
    invert = (median - low) > (high - median)
    x[invert] = 1.0 - x[invert]
    counts[invert] = counts[invert, ::-1]
    cumulative[invert] = np.cumsum(counts[invert], axis=1)
    # 2. background (remove_background): flat paper only; uneven paper is left to to_mnist
    threshold = _otsu(counts, cumulative)
    paper = _cut(counts, threshold, keep_below=True)
    paper_cumulative = np.cumsum(paper, axis=1)
    p5, p50, p75 = (_percentile(paper_cumulative, q) for q in (5, 50, 75))
    done &= ~((paper.sum(axis=1) > 0) & (p75 - p5 >= 0.05))
    shift = np.where(paper.sum(axis=1) > 0, p50, 0.0).astype(np.float32)
    shifted = shift > 0
    if shifted.any():
        x[shifted] = np.clip(x[shifted] - shift[shifted, None, None], 0.0, None)
    # 3. contrast (normalise_contrast). The histogram and threshold of the new levels: where an
    # 8-bit image's paper was already black (no shift, as on MNIST), its levels are the same
    # ``l / 255`` (or ``1 - l / 255`` inverted, which bins as ``255 - l``): they are kept.
    redo = shifted if grays.dtype == np.uint8 else np.ones(n, dtype=bool)
    if redo.all():
        counts = _histograms(x)
        threshold = _otsu(counts, np.cumsum(counts, axis=1))
    elif redo.any():
        counts[redo] = _histograms(x[redo])
        threshold[redo] = _otsu(counts[redo], np.cumsum(counts[redo], axis=1))
    paper, strokes = _cut(counts, threshold, True), _cut(counts, threshold, False)
    fail(strokes.sum(axis=1) == 0, _no_ink("nothing stands out from the background"))
    middle, deviation = _median_absolute_deviation(paper)
    floor = np.where(paper.sum(axis=1) > 0, middle + 3.0 * 1.4826 * deviation, 0.0)
    level = _percentile(np.cumsum(strokes, axis=1), 75)
    fail(level - floor < MIN_CONTRAST, _no_ink("the ink is too faint"))
    stretch = done & ~((floor == 0.0) & (level == 1.0))
    if stretch.any():
        # In place over the whole stack: an image not stretched takes (x - 0) / 1, clipped to
        # [0, 1], which leaves its levels as they are (cheaper than copying the others out and back).
        x -= np.where(stretch, floor, 0.0).astype(np.float32)[:, None, None]
        x /= np.where(stretch, level - floor, 1.0).astype(np.float32)[:, None, None]
        np.clip(x, 0.0, 1.0, out=x)
    # 4. the digit's region (digit_region), all images labelled at once
    strokes_mask = (x > 0.25) & done[:, None, None]
    labels, count = ndimage.label(strokes_mask, structure=_ONLY_WITHIN_AN_IMAGE)
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    areas[0] = 0
    owner = _owners(labels, count)
    largest = np.zeros(n, dtype=np.int64)
    np.maximum.at(largest, owner[1:], areas[1:])
    fail(done & (largest == 0), _no_ink("nothing stands out from the background"))
    fail(done & (largest < 4), _no_ink("only isolated specks"))
    keep = areas >= SPECK_FRACTION * largest[owner]
    keep[0] = False
    # Only images that lose a speck change: most keep every component, so their mask stands.
    specked = np.unique(owner[~keep & (areas > 0)])
    if len(specked):
        strokes_mask[specked] = keep[labels[specked]]
    area = strokes_mask.sum(axis=(1, 2))
    boundary = area - _interior_counts(strokes_mask)
    width = 2.0 * area / np.maximum(boundary, 1)
    grow = np.maximum(1, np.round(width / 2)).astype(int)
    region = np.zeros_like(strokes_mask)
    for g in np.unique(grow[done]):
        rows = done & (grow == g)
        region[rows] = _dilate_square(strokes_mask[rows], g)
    x *= region
    # 5. crop, scale, centre (the rest of to_mnist); thin strokes go back to to_mnist
    ink = x > 0.02
    top, bottom = _first_last(ink.any(axis=2))
    left, right = _first_last(ink.any(axis=1))
    longer = np.maximum(bottom - top, right - left)
    done &= ~((width > 0) & (width / np.maximum(longer, 1) < THIN_STROKE))
    fields = np.zeros((n, FIELD, FIELD), dtype=np.float32)
    # Centres of mass of the whole images: the same as their crops', shifted by the crop's corner.
    total = np.maximum(x.sum(axis=(1, 2)), 1e-12)
    cy_all = x.sum(axis=2) @ np.arange(x.shape[1], dtype=np.float32) / total
    cx_all = x.sum(axis=1) @ np.arange(x.shape[2], dtype=np.float32) / total
    # MNIST-like: the crop is already BOX on its longer side, as MNIST digits are; it is moved,
    # not scaled, so all of them are placed at once.
    as_is = done & (longer == BOX)
    _place(x, np.flatnonzero(as_is), (top, bottom, left, right), (cy_all, cx_all), fields)
    for i in np.flatnonzero(done & ~as_is):
        crop = fit_box(x[i, top[i] : bottom[i], left[i] : right[i]])
        mass = float(crop.sum())
        cy = float(crop.sum(axis=1) @ np.arange(crop.shape[0])) / mass
        cx = float(crop.sum(axis=0) @ np.arange(crop.shape[1])) / mass
        h, w = crop.shape
        y0 = min(max(round(MNIST_CENTRE[0] - cy), 0), FIELD - h)
        x0 = min(max(round(MNIST_CENTRE[1] - cx), 0), FIELD - w)
        fields[i, y0 : y0 + h, x0 : x0 + w] = crop
    return fields, errors, done


def _owners(labels: np.ndarray, count: int) -> np.ndarray:
    """Per label of a stack labelled image by image, the image it is in (0 for the background).

    ``ndimage.label`` numbers components in scan order, so each image's labels are one run,
    ending at the image's largest label: read from one maximum per image, not from a scatter of
    every pixel (an eighth of the cost).
    """
    last = np.maximum.accumulate(labels.reshape(len(labels), -1).max(axis=1))
    owner = np.zeros(count + 1, dtype=np.intp)
    owner[1:] = np.repeat(np.arange(len(labels)), np.diff(last, prepend=0))
    return owner


def _interior_counts(mask: np.ndarray) -> np.ndarray:
    """Per image, the pixels of ``mask`` whose four neighbours are in it too, outside the image
    counting as not: ``binary_erosion`` with a cross and ``border_value=0``, counted. As five
    slices of the stack, one ``&`` each: a fifth of ``binary_erosion``'s cost on small masks."""
    inner = mask[:, 1:-1, 1:-1] & mask[:, :-2, 1:-1] & mask[:, 2:, 1:-1] & mask[:, 1:-1, :-2] & mask[:, 1:-1, 2:]
    return inner.sum(axis=(1, 2))


def _dilate_square(mask: np.ndarray, reach: int) -> np.ndarray:
    """Per image, ``maximum_filter`` over a ``2 * reach + 1`` square: row shifts, then column shifts.

    The same answer as ``maximum_filter``'s default ``reflect`` border: a reflected pixel is one
    the window already covers, so the border adds nothing, as the shifts' zero fill does not.
    Half to a fifth of ``maximum_filter``'s cost on small masks, for the reaches that occur.
    """
    down = mask.copy()
    for step in range(1, reach + 1):
        down[:, step:, :] |= mask[:, :-step, :]
        down[:, :-step, :] |= mask[:, step:, :]
    out = down.copy()
    for step in range(1, reach + 1):
        out[:, :, step:] |= down[:, :, :-step]
        out[:, :, :-step] |= down[:, :, step:]
    return out


def _place(x: np.ndarray, rows: np.ndarray, box: tuple, centres: tuple, fields: np.ndarray) -> None:
    """Move each image's crop ``box`` (top, bottom, left, right) into its field, centre of mass
    at MNIST's centre, clamped inside the field: what ``centre_by_mass`` does. The offsets are
    computed for all images at once; the copies are slices, one per image (a third of the cost of
    one gather over index arrays of the whole stack)."""
    top, bottom, left, right = (edge[rows] for edge in box)
    cy, cx = (centre[rows].astype(np.float64) for centre in centres)
    y0 = np.minimum(np.maximum(np.round(MNIST_CENTRE[0] - (cy - top)), 0), FIELD - (bottom - top)).astype(np.intp)
    x0 = np.minimum(np.maximum(np.round(MNIST_CENTRE[1] - (cx - left)), 0), FIELD - (right - left)).astype(np.intp)
    edges = (rows, top, bottom, left, right, y0, x0)
    for row, y_from, y_to, x_from, x_to, y, x_at in zip(*(edge.tolist() for edge in edges), strict=True):
        fields[row, y : y + y_to - y_from, x_at : x_at + x_to - x_from] = x[row, y_from:y_to, x_from:x_to]
