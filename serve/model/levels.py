"""Grey-level statistics from one 256-bin histogram: percentiles, Otsu's threshold, medians.

Preprocessing asks for a dozen order statistics per image. Sorting the pixels for each
(``np.percentile``) costs more than everything else on a 28x28 digit; one ``bincount`` answers
them all at 1/255 resolution, which is the resolution of 8-bit images anyway.
"""

from __future__ import annotations

import numpy as np

BINS = 256
_CENTRES = np.arange(BINS, dtype=np.float64) / (BINS - 1)


class Levels:
    """The histogram of an image with values in [0, 1] (or of part of it)."""

    __slots__ = ("counts", "cumulative")

    def __init__(self, counts: np.ndarray) -> None:
        self.counts = counts
        self.cumulative = np.cumsum(counts)

    @classmethod
    def of(cls, image: np.ndarray) -> Levels:
        quantised = np.clip(image * (BINS - 1) + 0.5, 0, BINS - 1).astype(np.intp)
        return cls(np.bincount(quantised.ravel(), minlength=BINS).astype(np.float64))

    @property
    def total(self) -> float:
        return float(self.cumulative[-1])

    def percentile(self, q: float) -> float:
        """The value below which ``q`` percent of the pixels lie."""
        if self.total == 0:
            return 0.0
        index = int(np.searchsorted(self.cumulative, self.total * q / 100.0, side="left"))
        return float(_CENTRES[min(index, BINS - 1)])

    def below(self, threshold: float) -> Levels:
        """The histogram of the pixels at or below ``threshold``."""
        cut = round(threshold * (BINS - 1)) + 1
        counts = self.counts.copy()
        counts[cut:] = 0
        return Levels(counts)

    def above(self, threshold: float) -> Levels:
        cut = round(threshold * (BINS - 1)) + 1
        counts = self.counts.copy()
        counts[:cut] = 0
        return Levels(counts)

    def inverted(self) -> Levels:
        return Levels(self.counts[::-1].copy())

    def median_absolute_deviation(self) -> tuple[float, float]:
        """(median, median of the absolute deviations from it)."""
        median = self.percentile(50)
        if self.total == 0:
            return median, 0.0
        distance = np.abs(_CENTRES - median)
        order = np.argsort(distance, kind="stable")
        cumulative = np.cumsum(self.counts[order])
        index = int(np.searchsorted(cumulative, self.total / 2.0, side="left"))
        return median, float(distance[order[min(index, BINS - 1)]])

    def otsu(self) -> float:
        """Otsu's threshold: the level that best separates the histogram into two classes."""
        weight_low = self.cumulative
        weight_high = weight_low[-1] - weight_low
        mass_low = np.cumsum(self.counts * _CENTRES)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean_low = mass_low / weight_low
            mean_high = (mass_low[-1] - mass_low) / weight_high
            between = np.nan_to_num(weight_low * weight_high * (mean_low - mean_high) ** 2)
        return float(_CENTRES[int(np.argmax(between))])
