"""Decoding: every accepted format and colour mode, EXIF, limits, and hostile bytes."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from mnist_mlops.serve.model.decode import (
    MAX_ENCODED_BYTES,
    WORKING_SIDE,
    as_bytes,
    as_unit,
    decode_image,
    decode_levels,
)
from mnist_mlops.serve.model.errors import RowError


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def digit_image(mode: str = "L", size: int = 64) -> Image.Image:
    """A bright bar on black (MNIST polarity) in the given mode."""
    array = np.zeros((size, size), dtype=np.uint8)
    array[size // 4 : 3 * size // 4, size // 2 - 3 : size // 2 + 3] = 255
    return Image.fromarray(array, mode="L").convert(mode)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF"])
def test_every_accepted_format_decodes_to_a_greyscale_array(fmt):
    decoded = decode_image(encode(digit_image("RGB" if fmt == "JPEG" else "L"), fmt))
    assert decoded.shape == (64, 64) and decoded.dtype == np.float32
    assert decoded.min() >= 0 and decoded.max() <= 1
    assert decoded[32, 32] > 0.8 and decoded[2, 2] < 0.2


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I", "F"])
def test_every_colour_mode_decodes(mode):
    fmt = "TIFF" if mode in ("CMYK", "F", "I") else "PNG"
    decoded = decode_image(encode(digit_image(mode), fmt))
    assert decoded.shape == (64, 64)
    assert decoded[32, 32] > decoded[2, 2]


def test_8_bit_greyscale_keeps_its_levels_and_converts_as_every_other_image_does():
    levels = np.random.default_rng(0).integers(0, 256, (32, 40), dtype=np.uint8)
    grey = decode_levels(encode(Image.fromarray(levels), "PNG"))
    assert grey.dtype == np.uint8 and np.array_equal(grey, levels)
    rgb = decode_levels(encode(Image.fromarray(np.stack([levels] * 3, axis=-1)), "PNG"))  # same greys in RGB
    assert rgb.dtype == np.float32
    np.testing.assert_array_equal(as_unit(grey), rgb)
    np.testing.assert_array_equal(as_unit(np.stack([grey, grey]))[1], rgb)  # stacked, converted at once
    np.testing.assert_array_equal(decode_image(encode(Image.fromarray(levels), "PNG")), rgb)


def test_16_bit_greyscale_uses_its_full_range():
    array = np.full((40, 40), 50_000, dtype=np.uint16)
    array[10:30, 18:22] = 5_000
    decoded = decode_image(encode(Image.fromarray(array), "PNG"))
    assert decoded[0, 0] == pytest.approx(50_000 / 65535, abs=1e-4)
    assert decoded[20, 20] == pytest.approx(5_000 / 65535, abs=1e-4)


def test_a_transparent_background_behind_black_strokes_becomes_white():
    rgba = np.zeros((40, 40, 4), dtype=np.uint8)  # black, fully transparent
    rgba[10:30, 18:22, 3] = 255  # opaque black strokes
    decoded = decode_image(encode(Image.fromarray(rgba, mode="RGBA"), "PNG"))
    assert decoded[0, 0] == pytest.approx(1.0) and decoded[20, 20] == pytest.approx(0.0)


def test_a_transparent_background_behind_white_strokes_becomes_black():
    rgba = np.zeros((40, 40, 4), dtype=np.uint8)
    rgba[10:30, 18:22] = 255
    decoded = decode_image(encode(Image.fromarray(rgba, mode="RGBA"), "PNG"))
    assert decoded[0, 0] == pytest.approx(0.0) and decoded[20, 20] == pytest.approx(1.0)


def test_a_gif_is_read_from_its_first_frame():
    first, second = digit_image(), Image.new("L", (64, 64), 0)
    buffer = io.BytesIO()
    first.save(buffer, format="GIF", save_all=True, append_images=[second])
    assert decode_image(buffer.getvalue())[32, 32] > 0.8


def _rotated_bar(fmt: str, carrier: str) -> bytes:
    image = Image.new("L", (80, 40), 0)  # a landscape bar...
    image.paste(255, (10, 18, 70, 22))
    exif = Image.Exif()
    exif[0x0112] = 6  # ...stored rotated: viewers turn it 90 degrees clockwise
    if carrier == "exif":
        return encode(image, fmt, exif=exif.tobytes())
    if carrier == "tiff tags":
        return encode(image, fmt, tiffinfo={0x0112: 6})
    xmp = '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
    if fmt == "PNG":  # an iTXt chunk, as image editors write XMP into PNG
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", xmp)
        return encode(image, fmt, pnginfo=info)
    return encode(image, fmt, xmp=xmp.encode())


@pytest.mark.parametrize(
    ("fmt", "carrier"),
    [("JPEG", "exif"), ("PNG", "exif"), ("WEBP", "exif"), ("TIFF", "tiff tags"), ("PNG", "xmp"), ("JPEG", "xmp")],
)
def test_an_orientation_is_honoured_wherever_the_file_carries_it(fmt, carrier):
    decoded = decode_image(_rotated_bar(fmt, carrier))
    assert decoded.shape == (80, 40)
    assert decoded[40, 20] > 0.5 and decoded[40, 5] < 0.5  # the bar now runs top to bottom


def test_an_image_without_metadata_keeps_its_orientation():
    image = Image.new("L", (80, 40), 0)
    image.paste(255, (10, 18, 70, 22))
    assert decode_image(encode(image, "PNG")).shape == (40, 80)


def test_a_large_photo_is_reduced_before_any_pixel_work():
    photo = Image.new("RGB", (4000, 3000), (200, 200, 200))
    decoded = decode_image(encode(photo, "JPEG", quality=80))
    assert max(decoded.shape) <= WORKING_SIDE
    assert decoded.shape[1] / decoded.shape[0] == pytest.approx(4 / 3, rel=0.02)


def test_base64_text_and_data_urls_are_accepted():
    png = encode(digit_image(), "PNG")
    text = base64.b64encode(png).decode()
    assert as_bytes(text) == png
    assert as_bytes(f"data:image/png;base64,{text}") == png


def test_base64_wrapped_in_lines_is_accepted_as_mlflows_binary_columns_accept_it():
    """MIME-style base64 (GNU ``base64`` without ``-w0``, Python's ``encodebytes``): lines of 76
    characters, LF or CRLF; any other character outside the alphabet is still refused."""
    png = encode(digit_image(), "PNG")
    wrapped = base64.encodebytes(png).decode()
    assert "\n" in wrapped.strip()
    assert as_bytes(wrapped) == png
    assert as_bytes(wrapped.replace("\n", "\r\n")) == png
    assert as_bytes(f"data:image/png;base64,{wrapped}") == png
    with pytest.raises(RowError, match="not valid base64"):
        as_bytes(wrapped.replace("\n", "\n*", 1))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose header declares ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "empty"),
        (b"\x00\x01garbage bytes, not an image", "not a decodable image; accepted formats: PNG, JPEG"),
        ("not base64 at all!", "not valid base64"),
        (12345, "expected base64 text or bytes"),
        (png_declaring(50_000, 50_000), "at most 50,000,000 accepted"),
        (png_declaring(7, 7), "at least 8x8"),
        (encode(digit_image(), "PNG")[:60], "truncated or corrupt"),
        (b"\x89PNG" + b"\x00" * (MAX_ENCODED_BYTES + 1), "at most 25 MB accepted"),
        ("A" * (MAX_ENCODED_BYTES * 2), "at most 25 MB accepted"),
    ],
    ids=[
        "empty",
        "garbage",
        "not-base64",
        "int",
        "decompression-bomb",
        "tiny",
        "truncated",
        "huge-bytes",
        "huge-text",
    ],
)
def test_hostile_input_raises_a_row_error_that_says_what_is_accepted(payload, message):
    with pytest.raises(RowError) as error:
        decode_image(payload)
    assert message in str(error.value)
