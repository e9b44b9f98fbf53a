"""Progress display: a tqdm bar when a person watches (stderr is a TTY), nothing otherwise.

The per-epoch summary line is logged by the loop either way, so CI logs stay short and readable.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


class _Silent:
    def update(self, n: int = 1) -> None:
        pass


def interactive() -> bool:
    return sys.stderr.isatty()


@contextlib.contextmanager
def batch_progress(total: int, description: str, unit: str = "img") -> Iterator:
    """A progress bar over ``total`` items if stderr is a terminal; a no-op object otherwise."""
    if not interactive():
        yield _Silent()
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=description, unit=unit, unit_scale=True, leave=False) as bar:
        yield bar
