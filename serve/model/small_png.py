"""A short way through Pillow for the commonest input: a small, plain 8-bit greyscale PNG.

MNIST-like images (a 28x28 digit saved by Pillow, OpenCV or a canvas export converted to grey)
are mostly such files. Through ``Image.open`` most of the cost of one is Pillow's Python:
identifying the format, a chunk reader that copies each chunk through a file object, the decoder
loop of ``load`` and the encoder loop behind ``np.asarray``. Here the file's chunks are walked
once, checked, and the image data handed to the same C decoder (Pillow's ``zip`` decoder, the
one ``PngImagePlugin`` uses): the same pixels, in a fraction of the time (``make bench``, section
pyfunc: "decoding 64 PNGs").

The short way is taken only when nothing in the file could make Pillow answer differently:
8-bit greyscale, not interlaced, chunks limited to those that never change a greyscale image's
levels or orientation, every CRC correct, the image data in one run, the size inside the limits
and small enough not to be reduced. Anything else (including every damaged file) answers None,
and the caller decodes the bytes with Pillow as usual, which names the problem.

A batch goes shorter still (``grey_levels_many``): the files of one size are unfiltered together,
by one call of the same decoder, where its fixed cost per call was most of a small file's cost.
"""

from __future__ import annotations

import struct
import zlib
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from PIL import Image

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHUNK_HEAD = struct.Struct(">I4s")  # length, type
_IHDR = struct.Struct(">IIBBBBB")  # width, height, bit depth, colour type, compression, filter, interlace
_PLAIN_GREY_8 = (8, 0, 0, 0, 0)  # 8-bit, greyscale, deflate, adaptive filtering, not interlaced
# Colour space, density and timestamp: recorded by Pillow in ``info``, never applied to pixels.
# Text chunks are absent on purpose: they can carry EXIF or XMP, hence an orientation.
_HARMLESS = frozenset({b"gAMA", b"cHRM", b"sRGB", b"pHYs", b"tIME", b"sBIT"})
_LAST_FILTER = 4  # PNG's row filters: 0 none, 1 sub, 2 up, 3 average, 4 Paeth
# Files decoded together: at most this many, of at most JOINED_SIDE on a side, so that a joined
# image stays small (256 x 65 x 65 bytes at most) whatever the number of files given.
JOINED_FILES = 256
JOINED_MIN_FILES = 4  # fewer files of a size are decoded one by one: joining costs about two files' decoding
JOINED_SIDE = 64
# Larger files are not worth holding for a joined decode: a plain 64x64 file is at most about 4.3 KB.
JOINED_BYTES = 16 * 1024


def _image_data(data: bytes, min_side: int, max_side: int) -> tuple[tuple[int, int], bytes] | None:
    """((width, height), the concatenated IDAT payload) of a plain 8-bit greyscale PNG whose
    sides lie in [``min_side``, ``max_side``], or None. A file of any other size is given up at
    its header, before its image data is checked (the full decoder reads it anyway)."""
    if not data.startswith(SIGNATURE):
        return None
    pos, end_of_file = len(SIGNATURE), len(data)
    size: tuple[int, int] | None = None
    parts: list[bytes] = []
    after_image_data = False
    while pos + 12 <= end_of_file:
        length, kind = _CHUNK_HEAD.unpack_from(data, pos)
        start = pos + 8
        end = start + length
        if end + 4 > end_of_file:
            return None
        body = data[start:end]
        if zlib.crc32(body, zlib.crc32(kind)) != int.from_bytes(data[end : end + 4], "big"):
            return None
        if size is None:  # IHDR comes first
            if kind != b"IHDR" or length != _IHDR.size:
                return None
            width, height, *layout = _IHDR.unpack(body)
            if tuple(layout) != _PLAIN_GREY_8 or not (min_side <= min(width, height) <= max(width, height) <= max_side):
                return None
            size = (width, height)
        elif kind == b"IDAT":
            if after_image_data:  # Pillow reads only the first run of IDAT chunks
                return None
            parts.append(body)
        elif kind == b"IEND":
            return (size, b"".join(parts)) if parts else None
        elif kind in _HARMLESS:
            after_image_data = bool(parts)
        else:
            return None
        pos = end + 4
    return None  # no IEND: truncated


def grey_levels(data: bytes, min_side: int, max_side: int) -> np.ndarray | None:
    """The ``uint8 [H, W]`` levels of ``data`` if it is a plain 8-bit greyscale PNG whose sides
    lie in [``min_side``, ``max_side``]; else None.

    Never raises on malformed bytes: None sends them to the full decoder, which explains them.
    """
    found = _image_data(data, min_side, max_side)
    return None if found is None else _decode_one(*found)


def _decode_one(size: tuple[int, int], compressed: bytes) -> np.ndarray | None:
    width, height = size
    try:
        image = Image.frombytes("L", (width, height), compressed, "zip", "L")
    except (ValueError, OSError):  # a short or broken deflate stream
        return None
    return np.frombuffer(image.tobytes(), dtype=np.uint8).reshape(height, width)


def may_join(data: bytes) -> bool:
    """Whether ``data`` could be decoded by ``grey_levels_many`` (a cheap look at its size and
    signature; the full checks are made there)."""
    return len(data) <= JOINED_BYTES and data.startswith(SIGNATURE)


def grey_levels_many(datas: Sequence[bytes], min_side: int) -> list[np.ndarray | None]:
    """Per file, what ``grey_levels(data, min_side, JOINED_SIDE)`` answers, or None; the plain
    greyscale PNGs of one size are decoded together, by one call of Pillow's decoder.

    On a 28x28 file, that call's fixed cost is most of ``grey_levels``' cost. Here each file's
    image data is inflated by ``zlib`` and checked: one complete stream, exactly a filter byte and
    ``width`` levels per row, known filters. The rows of many files are then joined into one tall
    image, with a zero row before each file: PNG unfilters a file's first row against a zero row,
    so each file unfilters exactly as on its own. Stored in one uncompressed zlib stream, the
    tall image goes through the same ``zip`` decoder: the same levels, at under half the cost.

    None is this function's "not here", never an error: a file that fails a check (including one
    that Pillow would still read, such as one with bytes after its stream) goes on to the caller's
    other decoders, which answer as they would have.
    """
    answers: list[np.ndarray | None] = [None] * len(datas)
    by_size: dict[tuple[int, int], list[tuple[int, bytes]]] = defaultdict(list)
    for index, data in enumerate(datas):
        found = _image_data(data, min_side, JOINED_SIDE)
        if found is not None:
            size, compressed = found
            by_size[size].append((index, compressed))
    for size, files in by_size.items():
        if len(files) < JOINED_MIN_FILES:
            for index, compressed in files:
                answers[index] = _decode_one(size, compressed)
            continue
        inflated = [(index, rows) for index, compressed in files if (rows := _inflate(compressed, size)) is not None]
        for start in range(0, len(inflated), JOINED_FILES):
            piece = inflated[start : start + JOINED_FILES]
            for (index, _), levels in zip(piece, _decode_joined(piece, *size), strict=True):
                answers[index] = levels
    return answers


def _inflate(compressed: bytes, size: tuple[int, int]) -> bytes | None:
    """The filtered rows of one file: exactly ``height * (1 + width)`` bytes from one complete
    zlib stream, its checksum verified, nothing after it; else None. Never inflates more than it
    keeps (a stream that would inflate further stops one byte past the expected size)."""
    width, height = size
    expected = height * (1 + width)
    inflater = zlib.decompressobj()
    try:
        rows = inflater.decompress(compressed, expected + 1)
    except zlib.error:
        return None
    if len(rows) != expected or not inflater.eof or inflater.unused_data or inflater.unconsumed_tail:
        return None
    return rows


def _decode_joined(files: list[tuple[int, bytes]], width: int, height: int) -> list[np.ndarray | None]:
    """Unfilter the rows of ``files`` (all ``width`` x ``height``) with one call of Pillow's PNG
    decoder; a file whose rows name an unknown filter gets None."""
    joined = np.zeros((len(files), 1 + height, 1 + width), dtype=np.uint8)  # row 0: a zero row, filter 0
    joined[:, 1:] = np.frombuffer(b"".join(rows for _, rows in files), dtype=np.uint8).reshape(-1, height, 1 + width)
    known = joined[:, 1:, 0].max(axis=1) <= _LAST_FILTER
    if not known.all():
        kept = [file for file, ok in zip(files, known, strict=True) if ok]
        decoded = iter(_decode_joined(kept, width, height) if kept else [])
        return [next(decoded) if ok else None for ok in known]
    try:
        image = Image.frombytes("L", (width, joined.shape[0] * joined.shape[1]), zlib.compress(joined, 0), "zip", "L")
    except (ValueError, OSError):  # not expected after the checks; the files go on one by one
        return [None] * len(files)
    levels = np.frombuffer(image.tobytes(), dtype=np.uint8).reshape(len(files), 1 + height, width)
    return list(levels[:, 1:])
