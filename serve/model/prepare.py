"""Every input row -> its 28x28 fields (one or more readings of it), or why it cannot be scored.

Pixel rows are parsed; image rows are decoded, then preprocessed. Images whose paper is one flat
level (MNIST digits, drawings, scans) take MNIST's own recipe (``preprocess.to_mnist``): small ones
of one size together, vectorised (``preprocess_batch``), the same answer either way. Photos take
``photo.fields``, which reads the digit three ways; the pyfunc answers each row with its most
confident reading.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import pairwise

import numpy as np
import pandas as pd

from . import inputs, photo
from .decode import DecodeBudget, as_unit, decode_levels_many
from .errors import RowError
from .preprocess import paper_is_flat, to_mnist
from .preprocess_batch import MAX_SIDE, MIN_IMAGES, to_mnist_batch

# Images per vectorised stack: a stack's temporaries then stay in a core's cache (larger stacks
# were slower per image, smaller ones pay the fixed cost per call more often).
STACK_ROWS = 256


def _message(column: str | None, error: RowError) -> str:
    return f"column '{column}': {error}" if column else str(error)


def prepare_rows(frame: pd.DataFrame, budget: DecodeBudget | None = None) -> tuple[list[np.ndarray], list[str | None]]:
    """(per row that can be scored, in row order, its fields ``[k, 28, 28]``; per row, None or
    why not). ``budget`` bounds the decoding of the whole frame (``decode.DecodeBudget``)."""
    fields: list[np.ndarray | None] = [None] * len(frame)
    errors: list[str | None] = [None] * len(frame)
    images: list[tuple[int, object]] = []
    for row, kind in enumerate(inputs.row_kinds(frame)):
        if isinstance(kind, RowError):
            errors[row] = _message(None, kind)
            continue
        column, value = kind
        if column == inputs.IMAGE:
            images.append((row, value))
            continue
        try:
            fields[row] = inputs.pixels_to_image(value)[None]
        except RowError as error:
            errors[row] = _message(column, error)
    # Small images by size and by kind of levels (8-bit or float), each group stacked and converted at once.
    small: dict[tuple[tuple[int, int], np.dtype], list[tuple[int, np.ndarray]]] = defaultdict(list)
    for (row, _), levels in zip(images, decode_levels_many([value for _, value in images], budget), strict=True):
        try:
            if isinstance(levels, RowError):
                raise levels
            if max(levels.shape) <= MAX_SIDE:
                small[levels.shape, levels.dtype].append((row, levels))
            else:
                fields[row] = _readings(as_unit(levels))
        except RowError as error:
            errors[row] = _message(inputs.IMAGE, error)
    for group in small.values():
        # In stacks of at most STACK_ROWS, split evenly (no stray tail too small to vectorise).
        for start, stop in _even_pieces(len(group), STACK_ROWS):
            _prepare_small(group[start:stop], fields, errors)
    return [f for f in fields if f is not None], errors


def _even_pieces(count: int, most: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of ``ceil(count / most)`` pieces covering ``range(count)``, sizes within one."""
    pieces = -(-count // most)
    bounds = [count * i // max(pieces, 1) for i in range(pieces + 1)]
    return list(pairwise(bounds))


def _prepare_small(group: list[tuple[int, np.ndarray]], fields: list, errors: list) -> None:
    grays = np.stack([levels for _, levels in group])
    done = np.zeros(len(group), dtype=bool)
    if len(group) >= MIN_IMAGES:
        batch, batch_errors, done = to_mnist_batch(grays)
        for (row, _), field, error, handled in zip(group, batch, batch_errors, done, strict=True):
            if error is not None:
                errors[row] = _message(inputs.IMAGE, error)
            elif handled:
                fields[row] = field[None]
        done = done | np.array([e is not None for e in batch_errors])
    for (row, _), gray, handled in zip(group, grays, done, strict=True):
        if not handled:
            try:
                fields[row] = _readings(as_unit(gray))
            except RowError as error:
                errors[row] = _message(inputs.IMAGE, error)


def _readings(gray: np.ndarray) -> np.ndarray:
    """The fields ``[k, 28, 28]`` of one image: MNIST's recipe for flat paper, else the photo's."""
    if paper_is_flat(gray):
        return to_mnist(gray)[None]
    return np.stack(photo.fields(gray))
