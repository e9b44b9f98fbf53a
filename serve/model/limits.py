"""The largest encoded image the model accepts, importable without the image stack: batch jobs
check a file's size against it before reading the file."""

from __future__ import annotations

MAX_ENCODED_BYTES = 25 * 1024 * 1024


# printf-style, with the size in MB as its one argument: Spark formats it with the same text.
TOO_LARGE_TEMPLATE = f"the file is %.1f MB; at most {MAX_ENCODED_BYTES // (1024 * 1024)} MB accepted"


def too_large_message(size: int) -> str:
    return TOO_LARGE_TEMPLATE % (size / (1024 * 1024))
