"""A photo of a digit on paper -> MNIST-style 28x28 fields, whatever the light, the paper and the ink.

``preprocess.to_mnist`` is MNIST's own recipe, exact for images whose background is one flat
level (MNIST digits, drawings, scans). A photo's paper is never flat: shadows and gradients, grain
and JPEG blocks, printed lines, ink far fainter than a pen's. Here:

1. polarity: the paper's level is a median over windows wider than a stroke (so a shadow over half
   the page moves it locally, not everywhere), and the ink is what departs farthest from it;
2. the ink, as a share of the paper's own level (``1 - image / paper`` for dark ink, with the
   paper a grey closing wider than the strokes): a shadow or uneven light scales the paper and the
   ink on it alike, so the ratio is the same in the shade as in the light. The closing's width
   follows the strokes (estimated on a first pass), so a digit filling the frame keeps its strokes;
3. printed lines (ruled or squared paper: straight, thin, spanning half the image) are removed;
4. the digit is found on the ink smoothed at twice the grain's scale, against the paper's noise
   (a robust deviation), not a fixed contrast: faint pencil that stands clearly above the grain is
   a digit, bright grain is not. Components far smaller than the digit, or away from it, go. The
   ink's edges must stand out too: a smudge of graphite is ink that fades out, a stroke has edges;
5. crop, thin strokes thickened, the longer side to 20 pixels, centre of mass at the centre.

``fields`` returns three readings of the digit, and the pyfunc answers with the one the network is
most confident of: smoothed at two scales (``SCALES``: the grain of a sharp photo and of a heavily
compressed one differ), and plainly, the ink scaled by its own peak and cut at a fifth of it, which
keeps the faintest strokes that the noise-based cut loses.
"""

from __future__ import annotations

import contextlib
from functools import partial

import numpy as np
from PIL import Image
from scipy import ndimage

from .errors import RowError
from .levels import Levels
from .preprocess import NO_DIGIT, centre_by_mass, fit_box, stroke_width, thicken_thin_strokes

SCALES = (0.8, 1.6)  # smoothing of the ink, in pixels per 150 pixels of the image's shorter side
DETECT_SCALE = 2.0  # the smoothing the digit is found on (same unit)
NOISE_FLOOR = 4.0  # ink counts above the paper's median plus this many robust deviations
MIN_SIGNAL = 10.0  # the digit's strokes must stand this many deviations above the paper
MIN_SPREAD = 0.02  # an image whose levels span less than this is blank
PAPER_GRID, PAPER_WINDOW = 32, 11  # polarity: medians over windows of 11/32 of the image
CLOSING_SHARE = 0.15  # the first closing: 15% of the shorter side, wider than most strokes
EDGE_SIGNAL = 11.5  # a digit's strongest edges stand this many deviations above the paper's
LINE_SHARE = 0.5  # printed lines span at least half the image
REGION_CUT = 0.5  # the digit's outline: above half its strokes' level (JPEG blocks around faint ink are not)
KEPT_MASS, NEAR_MASS, NEAR_MARGIN = 0.08, 0.01, 0.15  # component selection (shares)
PLAIN_CUT = 0.2  # the plain reading keeps ink above this share of its peak
EIGHT = np.ones((3, 3), dtype=bool)


def _no_digit(detail: str) -> RowError:
    return RowError(f"no digit found: {detail}; send an image with a visible digit", code=NO_DIGIT)


def fields(gray: np.ndarray) -> list[np.ndarray]:
    """Greyscale ``[H, W]`` in [0, 1] -> its readings, ``float32 [28, 28]`` each: one per ``SCALES``
    entry, then the plain one.

    Whether the image holds a digit is the sharpest reading's call: it raises ``RowError`` (code
    ``no_digit``) when nothing stands out there, or when what stands out has no stroke's edges (a
    smudge). The finest smoothing keeps a faint, thin stroke's peak, which a softer one can sink
    under the grain: a later reading that finds nothing is left out, and the others answer.
    """
    dark = dark_ink(gray)
    side = min(gray.shape)
    ink = ink_of(gray, dark, side)
    readings = [_field(ink, side, SCALES[0])]
    _has_edges(ink, side)
    for read in [*(partial(_field, ink, side, scale) for scale in SCALES[1:]), partial(_plain_field, ink)]:
        with contextlib.suppress(RowError):
            readings.append(read())
    return readings


def dark_ink(gray: np.ndarray) -> bool:
    """Whether the ink is darker than the paper, by what departs farthest from the local paper."""
    levels = Levels.of(gray)
    if levels.percentile(99.5) - levels.percentile(0.5) < MIN_SPREAD:
        raise _no_digit("the image is blank or uniform")
    small = _resized(gray, (PAPER_GRID, PAPER_GRID))
    paper = _resized(ndimage.median_filter(small, size=PAPER_WINDOW, mode="nearest"), gray.shape[::-1])
    residual = ndimage.gaussian_filter(gray - paper, 1.0)
    return -residual.min() > residual.max()


def ink_of(gray: np.ndarray, dark: bool, side: int) -> np.ndarray:
    """The ink, bright on black, with the paper, its light and its printed lines removed."""
    width = max(3, round(CLOSING_SHARE * side))
    ink = _ink(gray, dark, width)
    rough = ndimage.gaussian_filter(ink, max(0.8, side / 150))
    median, deviation = _robust(rough)
    strokes = stroke_width(rough > median + 5 * deviation)
    wanted = int(np.clip(round(3 * strokes) + 1, 3, round(0.5 * side)))
    return _ink(gray, dark, wanted) if wanted > width else ink


def _ink(gray: np.ndarray, dark: bool, width: int) -> np.ndarray:
    if dark:
        paper = ndimage.uniform_filter(ndimage.grey_closing(gray, size=(width, width)), size=max(3, width // 2))
        ink = 1.0 - gray / np.maximum(paper, 0.02)
    else:
        background = ndimage.uniform_filter(ndimage.grey_opening(gray, size=(width, width)), size=max(3, width // 2))
        ink = gray - background
    return _without_lines(np.clip(ink, 0.0, None).astype(np.float32))


def _without_lines(ink: np.ndarray) -> np.ndarray:
    """Remove thin straight lines spanning ``LINE_SHARE`` of the image, across and down."""
    height, width = ink.shape
    for footprint in ((1, max(3, int(width * LINE_SHARE))), (max(3, int(height * LINE_SHARE)), 1)):
        ink = ink - ndimage.grey_opening(ink, size=footprint)
    return np.clip(ink, 0.0, None)


def _robust(values: np.ndarray) -> tuple[float, float]:
    """(median, median absolute deviation scaled to a normal's standard deviation)."""
    median = float(np.median(values))
    return median, float(np.median(np.abs(values - median))) * 1.4826 + 1e-4


def _field(ink: np.ndarray, side: int, scale: float) -> np.ndarray:
    zoom = max(1.0, side / 150)
    smooth = ndimage.gaussian_filter(ink, scale * zoom)
    median, deviation = _robust(smooth)
    floor = median + NOISE_FLOOR * deviation
    strong = smooth[smooth > floor]
    if strong.size < 4:
        raise _no_digit("nothing stands out from the background")
    level = float(np.percentile(strong, 90))
    if (level - median) / deviation < MIN_SIGNAL:
        raise _no_digit("the ink is too faint to tell from the paper")
    region = _digit_region(ink, zoom)
    width = stroke_width(region)
    region = ndimage.maximum_filter(region, size=2 * max(1, round(width / 2)) + 1)
    digit = np.clip((smooth - floor) / (level - floor), 0.0, 1.0) * region
    crop = _cropped(digit)
    crop = _cropped(thicken_thin_strokes(crop, width))
    return centre_by_mass(fit_box(crop))


def _has_edges(ink: np.ndarray, side: int) -> None:
    """Raise ``RowError`` (no digit) unless the ink's strongest edges (the top 1% of those above the
    noise floor: a stroke's outline, not the many faint remains of printed lines) stand
    ``EDGE_SIGNAL`` deviations above the paper's. A pen's stroke, however faint or fat, ends in
    sharp edges; a smudge of graphite fades out, so its ink clears the floor but its edges do not."""
    edges = ndimage.gaussian_gradient_magnitude(ink, SCALES[0] * max(1.0, side / 150))
    median, deviation = _robust(edges)
    strong = edges[edges > median + NOISE_FLOOR * deviation]
    if strong.size < 4 or (float(np.percentile(strong, 99)) - median) / deviation < EDGE_SIGNAL:
        raise _no_digit("the marks on the paper have no pen stroke's edges (a smudge or a shadow is not a digit)")


def _plain_field(ink: np.ndarray) -> np.ndarray:
    """The ink scaled by its peak and cut at ``PLAIN_CUT`` of it: a textbook reading, no noise model."""
    peak = float(np.percentile(ink, 99.9))
    if peak <= 0:
        raise _no_digit("nothing stands out from the background")
    digit = np.clip(ink / peak, 0.0, 1.0)
    digit[digit < PLAIN_CUT] = 0.0
    return centre_by_mass(fit_box(_cropped(digit)))


def _digit_region(ink: np.ndarray, zoom: float) -> np.ndarray:
    """The digit's strokes: components of the ink smoothed at ``DETECT_SCALE``, the heaviest and
    those beside them; specks and far-off marks dropped."""
    detect = ndimage.gaussian_filter(ink, DETECT_SCALE * zoom)
    median, deviation = _robust(detect)
    strong = detect[detect > median + NOISE_FLOOR * deviation]
    level = float(np.percentile(strong, 90)) if strong.size else float(detect.max())
    labels, count = ndimage.label(detect - median > REGION_CUT * (level - median), structure=EIGHT)
    if count == 0:
        raise _no_digit("nothing stands out from the background")
    index = np.arange(count + 1)
    mass = np.asarray(ndimage.sum(np.clip(detect - median, 0, None), labels, index))
    mass[0] = 0.0
    keep = mass >= KEPT_MASS * mass.max()
    keep[0] = False
    core = keep[labels]
    rows, cols = np.flatnonzero(core.any(axis=1)), np.flatnonzero(core.any(axis=0))
    margin_rows = NEAR_MARGIN * (rows[-1] - rows[0] + 1)
    margin_cols = NEAR_MARGIN * (cols[-1] - cols[0] + 1)
    for label, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None or keep[label] or mass[label] < NEAR_MASS * mass.max():
            continue
        keep[label] = (
            box[0].start >= rows[0] - margin_rows
            and box[0].stop <= rows[-1] + 1 + margin_rows
            and box[1].start >= cols[0] - margin_cols
            and box[1].stop <= cols[-1] + 1 + margin_cols
        )
    return keep[labels]


def _cropped(image: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(image.max(axis=1) > 0.05), np.flatnonzero(image.max(axis=0) > 0.05)
    if not rows.size:
        raise _no_digit("nothing stands out from the background")
    return image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _resized(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` resized to ``size`` (width, height), bilinear, as float32."""
    return np.asarray(Image.fromarray(image.astype(np.float32), mode="F").resize(size, Image.Resampling.BILINEAR))
