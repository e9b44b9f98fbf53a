"""The largest encoded image the model accepts, importable without the image stack: batch jobs
check a file's size against it before reading the file."""

from __future__ import annotations

MAX_ENCODED_BYTES = 25 * 1024 * 1024


def too_large_message(size: int) -> str:
    megabytes = 1024 * 1024
    return f"the file is {size / megabytes:.1f} MB; at most {MAX_ENCODED_BYTES // megabytes} MB accepted"
