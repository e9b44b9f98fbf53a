"""Every input row -> a 28x28 field, or the reason it cannot be scored.

Pixel rows are parsed; image rows are decoded, then preprocessed: small images of the same size
(the MNIST-like inputs of batch jobs and apps) together, vectorised (``preprocess_batch``), and
everything else one by one (``preprocess.to_mnist``). The answer is the same either way.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import pairwise

import numpy as np
import pandas as pd

from . import inputs
from .decode import as_unit, decode_levels_many
from .errors import RowError
from .preprocess import to_mnist
from .preprocess_batch import MAX_SIDE, MIN_IMAGES, to_mnist_batch

# Images per vectorised stack: a stack's temporaries then stay in a core's cache (larger stacks
# were slower per image, smaller ones pay the fixed cost per call more often).
STACK_ROWS = 256


def _message(column: str | None, error: RowError) -> str:
    return f"column '{column}': {error}" if column else str(error)


def prepare_rows(frame: pd.DataFrame) -> tuple[list[np.ndarray], list[str | None]]:
    """(the fields of the rows that can be scored, in row order; per row, None or why not)."""
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
            fields[row] = inputs.pixels_to_image(value)
        except RowError as error:
            errors[row] = _message(column, error)
    # Small images by size and by kind of levels (8-bit or float), each group stacked and converted at once.
    small: dict[tuple[tuple[int, int], np.dtype], list[tuple[int, np.ndarray]]] = defaultdict(list)
    for (row, _), levels in zip(images, decode_levels_many([value for _, value in images]), strict=True):
        try:
            if isinstance(levels, RowError):
                raise levels
            if max(levels.shape) <= MAX_SIDE:
                small[levels.shape, levels.dtype].append((row, levels))
            else:
                fields[row] = to_mnist(as_unit(levels))
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
                fields[row] = field
        done = done | np.array([e is not None for e in batch_errors])
    for (row, _), gray, handled in zip(group, grays, done, strict=True):
        if not handled:
            try:
                fields[row] = to_mnist(as_unit(gray))
            except RowError as error:
                errors[row] = _message(inputs.IMAGE, error)
