"""The short ways for plain greyscale PNGs: taken where they may be, and never a different answer.

Every case compares ``decode_levels`` (which takes the short way when it can), and
``decode_levels_many`` (which decodes small files together), with ``decode_with_pillow``
(``Image.open`` for every file): the same levels, or the same error.
"""

from __future__ import annotations

import io
import random
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from mnist_mlops.serve.model import small_png
from mnist_mlops.serve.model.decode import MIN_SIDE, WORKING_SIDE, decode_levels, decode_levels_many, decode_with_pillow
from mnist_mlops.serve.model.errors import RowError


def short_way(data: bytes) -> np.ndarray | None:
    return small_png.grey_levels(data, MIN_SIDE, WORKING_SIDE)


def answer(decode, data: bytes) -> tuple[str, object]:
    try:
        levels = decode(data)
    except RowError as error:
        return "error", str(error)
    return "levels", (levels.dtype.str, levels.shape, levels.tobytes())


def assert_same_answer(data: bytes) -> None:
    assert answer(decode_levels, data) == answer(decode_with_pillow, data)


def assert_same_answers_together(values: list[object]) -> None:
    """``decode_levels_many`` answers each value, decoded together, as Pillow does alone (and as
    ``decode_levels`` does a value that is not bytes)."""
    together = iter(decode_levels_many(values))

    def next_answer(_):
        got = next(together)
        if isinstance(got, RowError):
            raise got
        return got

    for index, value in enumerate(values):
        alone = decode_with_pillow if isinstance(value, bytes) else decode_levels
        assert answer(next_answer, value) == answer(alone, value), f"value {index}"


def png(array: np.ndarray, mode: str = "L", **save) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).convert(mode).save(buffer, format="PNG", **save)
    return buffer.getvalue()


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, body) of each chunk of a well-formed PNG."""
    found, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        found.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return found


def assemble(parts: list[tuple[bytes, bytes]]) -> bytes:
    return small_png.SIGNATURE + b"".join(chunk(kind, body) for kind, body in parts)


def noise(seed: int, height: int = 28, width: int = 28) -> np.ndarray:
    """Random levels: every PNG row filter gets used, and any unfiltering slip shows."""
    return np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)


def digit(height: int = 28, width: int = 28) -> np.ndarray:
    array = np.zeros((height, width), dtype=np.uint8)
    array[height // 4 : 3 * height // 4, width // 2 - 2 : width // 2 + 2] = 255
    array[height // 4, width // 3 : width // 2] = 180
    return array


PLAIN = {
    "noise": png(noise(0)),
    "digit": png(digit()),
    "best-compression": png(noise(1), compress_level=9),
    "no-compression": png(noise(2), compress_level=0),
    "optimize": png(digit(), optimize=True),
    "with-dpi": png(noise(3), dpi=(300, 300)),
    "wide": png(noise(4, 8, 400)),
    "tall": png(noise(5, 400, 8)),
    "smallest": png(noise(6, MIN_SIDE, MIN_SIDE)),
}


@pytest.mark.parametrize("data", PLAIN.values(), ids=PLAIN.keys())
def test_plain_greyscale_pngs_take_the_short_way_to_the_same_levels(data):
    levels = short_way(data)
    assert levels is not None
    assert levels.dtype == np.uint8
    assert np.array_equal(levels, decode_with_pillow(data))
    assert_same_answer(data)


def test_image_data_split_over_several_chunks_is_joined():
    parts = chunks(png(noise(7)))
    (kind, body) = parts[1]
    assert kind == b"IDAT"
    split = [parts[0], (b"IDAT", body[:10]), (b"IDAT", body[10:30]), (b"IDAT", body[30:]), *parts[2:]]
    data = assemble(split)
    assert short_way(data) is not None
    assert_same_answer(data)


def test_harmless_chunks_are_skipped():
    parts = chunks(png(noise(8)))
    gamma = (b"gAMA", struct.pack(">I", 45455))
    srgb = (b"sRGB", b"\x00")
    data = assemble([parts[0], gamma, srgb, *parts[1:-1], (b"tIME", b"\x07\xea\x0b\x1e\x00\x00\x00"), parts[-1]])
    assert short_way(data) is not None
    assert_same_answer(data)


def _with_text(key: str, value: str) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text(key, value)
    return png(digit(), pnginfo=info)


def _with_exif_orientation() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    return png(digit(), exif=exif.tobytes())


def _idat_runs_apart() -> bytes:
    parts = chunks(png(noise(9)))
    body = parts[1][1]
    return assemble([parts[0], (b"IDAT", body[:20]), (b"pHYs", b"\0" * 9), (b"IDAT", body[20:]), *parts[2:]])


def _interlace_flag_set() -> bytes:
    parts = chunks(png(noise(10)))
    header = bytearray(parts[0][1])
    header[12] = 1
    return assemble([(b"IHDR", bytes(header)), *parts[1:]])


ELSEWHERE = {
    "rgb": png(noise(11), "RGB"),
    "grey-with-alpha": png(noise(12), "LA"),
    "palette": png(noise(13), "P"),
    "bilevel": png(noise(14), "1"),
    "16-bit": png(noise(15).astype(np.uint16) * 257, "I;16"),
    "text-chunk": _with_text("Comment", "scanned at the post office"),
    "exif-orientation": _with_exif_orientation(),
    "transparency": png(noise(16), transparency=0),
    "idat-runs-apart": _idat_runs_apart(),
    "interlace-flag": _interlace_flag_set(),
    "too-small": png(noise(17, MIN_SIDE - 1, 28)),
    "too-large-to-skip-reduction": png(noise(18, 28, WORKING_SIDE + 1)),
    "jpeg-bytes": b"\xff\xd8\xff\xe0" + bytes(64),
    "empty": b"",
}


@pytest.mark.parametrize("data", ELSEWHERE.values(), ids=ELSEWHERE.keys())
def test_anything_pillow_might_answer_differently_goes_to_pillow(data):
    assert short_way(data) is None
    assert_same_answer(data)


def test_an_exif_orientation_is_still_honoured():
    levels = decode_levels(_with_exif_orientation())
    assert np.array_equal(levels, np.rot90(digit(), k=-1))


def _damaged(data: bytes, rng: random.Random) -> bytes:
    damage = rng.choice(["flip", "truncate", "insert", "delete", "length"])
    at = rng.randrange(8, len(data))
    if damage == "flip":
        return data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1 :]
    if damage == "truncate":
        return data[:at]
    if damage == "insert":
        return data[:at] + rng.randbytes(rng.randrange(1, 16)) + data[at:]
    if damage == "delete":
        return data[:at] + data[at + rng.randrange(1, 16) :]
    return data[:8] + struct.pack(">I", rng.choice([0, 12, 1 << 31, 0xFFFFFFFF])) + data[12:]


@pytest.mark.parametrize("seed", range(4))
def test_damaged_files_get_the_same_answer_as_from_pillow(seed):
    """Random damage, including the damage a CRC cannot see (its own bytes rewritten to match);
    one by one, and all together among undamaged files."""
    rng = random.Random(seed)
    originals = [png(noise(100 + seed)), png(digit()), png(noise(200 + seed), compress_level=1)]
    damaged = []
    for _ in range(150):
        damaged.append(_damaged(rng.choice(originals), rng))
        assert_same_answer(damaged[-1])
    for _ in range(150):  # damage inside the image data, CRCs recomputed: only the decoder can tell
        parts = chunks(rng.choice(originals))
        kind, body = parts[1]
        parts[1] = (kind, _damaged(b"\0" * 8 + body, rng)[8:])
        damaged.append(assemble(parts))
        assert_same_answer(damaged[-1])
    mixed = damaged + originals * 20
    rng.shuffle(mixed)
    assert_same_answers_together(mixed)


def filtered_png(seed: int, height: int, width: int, filters: list[int] | None = None) -> bytes:
    """A PNG whose rows carry the given filter types (random ones by default) over random bytes:
    any such rows are valid image data, and they exercise every filter, on first rows too."""
    rng = np.random.default_rng(seed)
    filters = filters if filters is not None else rng.integers(0, 5, height).tolist()
    rows = b"".join(bytes([f]) + rng.integers(0, 256, width, dtype=np.uint8).tobytes() for f in filters)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return assemble([(b"IHDR", header), (b"IDAT", zlib.compress(rows)), (b"IEND", b"")])


def test_files_decoded_together_get_the_levels_each_gets_alone():
    files = [png(noise(seed)) for seed in range(20)] + [png(digit())]
    files += [filtered_png(seed, 28, 28) for seed in range(40)]
    files += [filtered_png(100 + f, 28, 28, [f] * 28) for f in range(5)]  # one filter on every row
    files += [filtered_png(200 + seed, 9 + seed, 40 - seed) for seed in range(10)]  # sizes mixed
    files += [png(noise(300), compress_level=0), png(noise(301, 64, 64)), png(noise(302, 65, 20))]
    together = small_png.grey_levels_many(files, MIN_SIDE)
    for index, data in enumerate(files[:-1]):
        assert together[index] is not None, f"file {index} was not decoded together"
        assert np.array_equal(together[index], decode_with_pillow(data)), f"file {index}"
    assert together[-1] is None  # a side over JOINED_SIDE: one by one, as before
    assert_same_answers_together(files)


def test_a_few_files_of_a_size_are_decoded_one_by_one():
    files = [filtered_png(seed, 20, 20) for seed in range(small_png.JOINED_MIN_FILES - 1)]
    files += [filtered_png(seed, 30, 30) for seed in range(small_png.JOINED_MIN_FILES)]
    together = small_png.grey_levels_many(files, MIN_SIDE)
    assert all(np.array_equal(levels, decode_with_pillow(data)) for levels, data in zip(together, files, strict=True))
    assert_same_answers_together(files)


def test_more_files_than_one_joined_decode_takes():
    files = [filtered_png(seed, 8, 8) for seed in range(2 * small_png.JOINED_FILES + 3)]
    together = small_png.grey_levels_many(files, MIN_SIDE)
    assert all(np.array_equal(levels, decode_with_pillow(data)) for levels, data in zip(together, files, strict=True))


def _with_header_of(data: bytes, height: int) -> bytes:
    """``data`` with its header claiming ``height`` rows, its image data unchanged."""
    parts = chunks(data)
    header = bytearray(parts[0][1])
    header[4:8] = struct.pack(">I", height)
    return assemble([(b"IHDR", bytes(header)), *parts[1:]])


def test_a_file_whose_rows_do_not_fit_its_header_goes_on_alone():
    """An unknown filter, bytes after the stream, fewer or more rows than the header says: each
    such file gets None, and then the answer Pillow gives it alone; the others are decoded."""
    good = [filtered_png(seed, 28, 28) for seed in range(6)]
    parts = chunks(good[0])
    odd = [
        filtered_png(7, 28, 28, [0] * 27 + [5]),
        assemble([parts[0], (b"IDAT", parts[1][1] + b"\0\0"), *parts[2:]]),
        # as many of each size as are decoded together
        *(_with_header_of(data, 29) for data in good[: small_png.JOINED_MIN_FILES]),
        *(_with_header_of(data, 27) for data in good[: small_png.JOINED_MIN_FILES]),
    ]
    files = [*good[:3], *odd, *good[3:]]
    together = small_png.grey_levels_many(files, MIN_SIDE)
    assert [levels is None for levels in together] == [False] * 3 + [True] * len(odd) + [False] * 3
    assert_same_answers_together(files)


def test_errors_and_other_formats_keep_their_answers_among_files_decoded_together():
    files = [png(digit()), *ELSEWHERE.values(), png(noise(400)), *PLAIN.values()]
    assert_same_answers_together([*files, "not base64 at all", 12])
