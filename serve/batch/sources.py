"""Batch inputs, streamed in chunks: folders of images (or one image), Parquet/CSV tables, MNIST IDX files.

Every source yields DataFrames with the columns ``id`` (str), ``image`` (bytes or text, or None),
``pixels`` (numbers, or None) and ``read_error`` (why the input could not be read, or None). Only
one chunk is in memory at a time, so the size of the input does not bound the job.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mnist_mlops.serve.batch.errors import BatchError
from mnist_mlops.serve.model.limits import MAX_ENCODED_BYTES, too_large_message

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
TABLE_SUFFIXES = frozenset({".parquet", ".pq", ".csv"})
COLUMNS = ("id", "image", "pixels", "read_error")
MAX_CHUNK_BYTES = 64 * 1024 * 1024  # a chunk closes early when its encoded images reach this size
# Text in a table's image column shorter than this may be a path, and is then the row's id.
MAX_ID_CHARS = 4096
# Binary on Windows; non-blocking so that opening a FIFO named like an image cannot hang the job
# (it is then refused as not a regular file). Looked up once (a miss costs 1 us).
_READ_ONLY = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)


def source_frame(rows: list[tuple]) -> pd.DataFrame:
    # Object columns from the start: inferring (text as Arrow strings) then converting back cost twice as much.
    return pd.DataFrame(rows, columns=list(COLUMNS), dtype=object)


def image_files(root: str | os.PathLike, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(id, path) of the image files under ``root``, recursively, in a stable (sorted) order,
    lazily; the id is the path relative to ``root`` with ``/`` separators.

    Plain strings and ``os`` calls, not ``pathlib``: on a folder of small images, building
    ``Path`` objects per file cost more than reading the files.
    """
    with os.scandir(root) as scan:
        entries = sorted(scan, key=lambda e: e.name)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from image_files(entry.path, f"{prefix}{entry.name}/")
        elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES and not entry.is_dir():
            # Not only regular files: a FIFO or a dangling link named like an image is listed and
            # becomes an error row (``read_file``), not silently skipped.
            yield prefix + entry.name, entry.path


def read_file(path: str | Path) -> tuple[bytes | None, str | None]:
    """(the file's bytes, None), or (None, why it cannot be scored). A file larger than the model
    accepts is not read: one huge file must not fill the job's memory; nor is anything but a
    regular file (a FIFO or a device would block or never end).

    ``os`` calls, not a file object: on a small image, setting up even an unbuffered ``FileIO``
    cost about half as much again as the reading itself.
    """
    try:
        fd = os.open(path, _READ_ONLY)
        try:
            status = os.fstat(fd)
            if not stat.S_ISREG(status.st_mode):
                return None, f"cannot read {os.path.basename(path)}: not a regular file (a folder, FIFO or device)"
            size = status.st_size
            data = _read_to_end(fd, size) if size <= MAX_ENCODED_BYTES else None
        finally:
            os.close(fd)
    except OSError as exc:
        return None, f"cannot read {os.path.basename(path)}: {exc.strerror or exc.__class__.__name__}"
    if data is None:
        return None, f"{os.path.basename(path)}: {too_large_message(max(size, MAX_ENCODED_BYTES + 1))}"
    return data, None


def _read_to_end(fd: int, size: int) -> bytes | None:
    """The file's bytes in one read when ``size`` (its ``fstat``) holds: one byte more is asked
    for, so a full answer is the whole file. Otherwise (a short read, a file that grew since) the
    rest as it comes, or None once it passes the model's limit."""
    data = os.read(fd, size + 1)
    if len(data) == size:
        return data
    parts, total = [data], len(data)
    while part := os.read(fd, 1 << 20):
        parts.append(part)
        total += len(part)
        if total > MAX_ENCODED_BYTES:
            return None
    return b"".join(parts)


@dataclass(frozen=True)
class ImageFilesSource:
    """A folder's image files, recursively (their ids: paths under the folder), or one image
    file (its id: its name)."""

    root: Path

    def files(self) -> Iterator[tuple[str, str]]:
        if self.root.is_dir():
            return image_files(self.root)
        return iter([(self.root.name, str(self.root))])

    def count(self) -> int:
        return sum(1 for _ in self.files())

    def chunks(self, rows: int) -> Iterator[pd.DataFrame]:
        batch, size = [], 0
        for file_id, path in self.files():
            data, error = read_file(path)
            batch.append((file_id, data, None, error))
            size += len(data or b"")
            if len(batch) >= rows or size >= MAX_CHUNK_BYTES:
                yield source_frame(batch)
                batch, size = [], 0
        if batch:
            yield source_frame(batch)


def image_cell(value: object, base: Path, paths_outside: bool = False) -> tuple[object, str | None]:
    """A table's image cell: bytes pass through, a path is read (relative to ``base``, the table's
    folder), other text is base64 for the model. (the bytes or text, None) or (None, why not).

    A path must lead (symbolic links followed) to a file under ``base`` unless ``paths_outside``:
    whoever writes a table must not make the job read ``/etc/shadow`` or another team's files.
    """
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None, None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), None
    if isinstance(value, str) and Path(value).suffix.lower() in IMAGE_SUFFIXES and len(value) < MAX_ID_CHARS:
        path = Path(value) if Path(value).is_absolute() else base / value
        if not paths_outside and not _inside(path, base):
            return None, f"{value} is outside the table's folder {base}; pass --allow_paths_outside to read it"
        return read_file(path)
    return value, None


def _inside(path: Path, folder: Path) -> bool:
    return os.path.realpath(path).startswith(os.path.join(os.path.realpath(folder), ""))


@dataclass(frozen=True)
class TableSource:
    path: Path
    paths_outside: bool = False  # image paths may lead outside the table's folder (``image_cell``)

    def count(self) -> int | None:
        if self.path.suffix.lower() == ".csv":
            return None
        import pyarrow.parquet as pq

        return pq.ParquetFile(self.path).metadata.num_rows

    def _raw_chunks(self, rows: int) -> Iterator[pd.DataFrame]:
        try:
            if self.path.suffix.lower() == ".csv":
                yield from pd.read_csv(self.path, chunksize=rows, dtype=object)
                return
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(self.path).iter_batches(batch_size=rows):
                yield batch.to_pandas()
        except (OSError, ValueError) as exc:
            raise BatchError(f"cannot read {self.path}: {' '.join(str(exc).split())[:160]}") from None

    def chunks(self, rows: int) -> Iterator[pd.DataFrame]:
        offset = 0
        for raw in self._raw_chunks(rows):
            if "image" not in raw.columns and "pixels" not in raw.columns:
                raise BatchError(f"{self.path} has no 'image' or 'pixels' column (columns: {', '.join(raw.columns)})")
            ids = _ids(raw, offset)
            images = raw["image"] if "image" in raw.columns else [None] * len(raw)
            pixels = raw["pixels"] if "pixels" in raw.columns else [None] * len(raw)
            out = []
            for row_id, image, pixel_row in zip(ids, images, pixels, strict=True):
                data, error = image_cell(image, self.path.parent, self.paths_outside)
                out.append((row_id, data, pixel_row if data is None else None, error))
            offset += len(raw)
            yield source_frame(out)


def _ids(raw: pd.DataFrame, offset: int) -> list[str]:
    """A row's id: its ``id`` (or ``path``) column; else its image cell when that is text short
    enough to be a path; else its row number in the table, from 0. The Spark engine's rule too."""
    for column in ("id", "path"):
        if column in raw.columns:
            return [str(v) for v in raw[column]]
    images = raw["image"] if "image" in raw.columns else [None] * len(raw)
    return [
        value if isinstance(value, str) and len(value) < MAX_ID_CHARS else str(row)
        for row, value in enumerate(images, start=offset)
    ]


def _idx_images(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        header = f.read(16)
    if len(header) < 16 or header[:4] != b"\x00\x00\x08\x03":
        raise BatchError(f"{path} is not an IDX file of 28x28 uint8 images")
    count, rows, cols = (int.from_bytes(header[i : i + 4], "big") for i in (4, 8, 12))
    expected = 16 + count * rows * cols
    if path.stat().st_size < expected or (rows, cols) != (28, 28):
        raise BatchError(f"{path} is truncated or not 28x28 (declares {count} images of {rows}x{cols})")
    return np.memmap(path, dtype=np.uint8, mode="r", offset=16, shape=(count, rows * cols))


@dataclass(frozen=True)
class IdxSource:
    path: Path

    def count(self) -> int:
        return len(_idx_images(self.path))

    def chunks(self, rows: int) -> Iterator[pd.DataFrame]:
        images = _idx_images(self.path)
        for start in range(0, len(images), rows):
            block = np.asarray(images[start : start + rows])
            yield source_frame([(str(start + i), None, block[i], None) for i in range(len(block))])


SHOWN_SKIPPED = 3  # files named in the message for a folder with nothing to score


def nothing_to_score(folder: Path) -> str | None:
    """Why ``folder`` holds nothing to score (no image file, no IDX file), naming what was skipped;
    None when it holds something."""
    if next(image_files(folder), None) is not None or list(folder.glob("*-images-idx3-ubyte")):
        return None
    if (folder / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file():
        return None
    skipped = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    if not skipped:
        return f"the folder {folder} is empty: nothing to score"
    shown = ", ".join(skipped[:SHOWN_SKIPPED]) + (
        f" and {len(skipped) - SHOWN_SKIPPED} more" if len(skipped) > SHOWN_SKIPPED else ""
    )
    suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
    return (
        f"no image files under {folder}: skipped {len(skipped)} file{'s' if len(skipped) != 1 else ''} "
        f"without an image suffix ({shown}); images end in {suffixes}"
    )


def open_source(path: Path, paths_outside: bool = False) -> ImageFilesSource | TableSource | IdxSource:
    """The right source for ``path``: a folder, one image file, a .parquet/.csv table, or an IDX
    images file."""
    if not path.exists():
        raise BatchError(f"input {path} does not exist")
    if path.is_dir():
        idx = sorted(path.glob("*-images-idx3-ubyte")) or sorted(path.glob("MNIST/raw/t10k-images-idx3-ubyte"))
        has_images = next(image_files(path), None) is not None
        if idx and not has_images:
            return IdxSource(idx[0])
        return ImageFilesSource(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:  # one image, picked by its suffix as a folder's are
        return ImageFilesSource(path)
    if path.suffix.lower() in TABLE_SUFFIXES:
        return TableSource(path, paths_outside)
    if path.name.endswith("idx3-ubyte"):
        return IdxSource(path)
    raise BatchError(
        f"input {path}: expected a folder of images, an image file ({', '.join(sorted(IMAGE_SUFFIXES))}), "
        "a .parquet or .csv table, or an IDX file"
    )
