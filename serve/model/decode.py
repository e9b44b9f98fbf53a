"""Encoded image bytes -> a greyscale ``float32`` array in [0, 1], reduced early when large.

Accepted: PNG, JPEG, BMP, GIF (first frame), WebP and TIFF, from ``MIN_SIDE`` x ``MIN_SIDE`` up to
``MAX_PIXELS`` pixels; RGB, RGBA, greyscale 8/16/32-bit, palette, CMYK. EXIF orientation is honoured.
Transparency is flattened onto the background colour that contrasts with the drawn pixels, so a
canvas export (black strokes on a transparent background) and white strokes alike stay visible.

Large images are reduced before any float work: JPEGs are decoded at a reduced DCT scale
(``Image.draft``) and everything else is shrunk in Pillow's C code to at most ``WORKING_SIDE``
pixels on the longer side, so a 12-megapixel photo costs milliseconds.

What one call may spend on decoding is bounded (``DecodeBudget``): the pixels it decodes in all
(after the reduced-scale JPEG decode) and the seconds it spends, so that a request of many large
PNGs, or a small file declaring a huge image, cannot hold a server for a minute or take gigabytes.
A serving process reads its budget from the environment (``REQUEST_PIXELS_ENV``; 0 turns it off,
as batch jobs do for their own chunks); a client cannot raise it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import os
import time
import warnings
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import REQUEST_PIXELS_ENV, small_png
from .errors import RequestTooCostly, RowError
from .limits import MAX_ENCODED_BYTES, too_large_message

ACCEPTED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
ACCEPTED_TEXT = "PNG, JPEG, BMP, GIF, WebP or TIFF"
MIN_SIDE = 8
MAX_PIXELS = 50_000_000  # 4x a 12-megapixel phone photo; anything larger is refused before decoding
WORKING_SIDE = 400  # longer side after early reduction: a digit filling a third of it keeps > 100 px
REQUEST_PIXELS = 32_000_000  # pixels decoded per call: two and a half full-size 12-megapixel PNGs
REQUEST_SECONDS = 10.0  # seconds of decoding per call


class DecodeBudget:
    """What one call may spend on decoding; ``spend`` raises ``RequestTooCostly`` past it."""

    def __init__(self, pixels: int | None = REQUEST_PIXELS, seconds: float | None = REQUEST_SECONDS) -> None:
        self.pixels, self.seconds = pixels, seconds
        self.spent = 0
        self.started = time.monotonic()

    @classmethod
    def from_environment(cls) -> DecodeBudget | None:
        """The budget ``REQUEST_PIXELS_ENV`` sets (default ``REQUEST_PIXELS``); None when it is 0."""
        text = os.environ.get(REQUEST_PIXELS_ENV, "").strip()
        pixels = int(text) if text.isdigit() else REQUEST_PIXELS
        return cls(pixels) if pixels > 0 else None

    def spend(self, pixels: int) -> None:
        self.spent += pixels
        if self.pixels is not None and self.spent > self.pixels:
            raise RequestTooCostly(
                f"the request's images need more than {self.pixels:,} decoded pixels; at most {self.pixels:,} "
                "per request: send fewer or smaller images per request "
                f"({REQUEST_PIXELS_ENV} sets the bound; 0 lifts it)"
            )
        self.check_time()

    def check_time(self) -> None:
        if self.seconds is not None and time.monotonic() - self.started > self.seconds:
            raise RequestTooCostly(
                f"decoding the request's images took over {self.seconds:g} s, the most one request may take: "
                "send fewer or smaller images per request"
            )


def _too_large(size: int) -> RowError:
    return RowError(too_large_message(size))


def as_bytes(value: object) -> bytes:
    """Raw bytes from ``bytes``/``bytearray`` or a base64 string (JSON's form of binary data).

    Base64 is decoded strictly, except that line breaks and other ASCII whitespace are allowed
    anywhere: MIME-style base64 (GNU ``base64`` without ``-w0``, Python's ``encodebytes``) wraps
    its lines, and MLflow's own binary columns accept it (``base64.decodebytes``). Any other
    character outside the alphabet is refused, not skipped: it means the text is not what the
    client thinks it is.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("data:") and "," in text:  # a data URL, as a browser canvas exports it
            text = text.split(",", 1)[1]
        # Refuse before allocating the decoded copy; wrapped lines (76 characters and a CRLF) may
        # make the text a little longer than its content. The decoded size is checked exactly later.
        if len(text) > (MAX_ENCODED_BYTES * 4 // 3 + 4) * 78 // 76:
            raise _too_large(len(text) * 3 // 4)
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            unwrapped = "".join(text.split())  # wrapped text is the rare case: only then copied
        if len(unwrapped) != len(text):
            with contextlib.suppress(binascii.Error, ValueError):
                return base64.b64decode(unwrapped, validate=True)
        raise RowError("not valid base64; send the encoded image file base64-encoded")
    raise RowError(f"expected base64 text or bytes, got {type(value).__name__}")


def _open(data: bytes) -> Image.Image:
    if not data:
        raise RowError(f"empty; send an encoded {ACCEPTED_TEXT} file")
    if len(data) > MAX_ENCODED_BYTES:
        raise _too_large(len(data))
    try:
        with warnings.catch_warnings():
            # Pillow warns between MAX_IMAGE_PIXELS and 2x; our own limit below is stricter.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError:
        raise RowError(f"the image declares more than {MAX_PIXELS:,} pixels; at most {MAX_PIXELS:,} accepted") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise RowError(f"not a decodable image; accepted formats: {ACCEPTED_TEXT}") from None
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise RowError(f"the image is {width}x{height} = {width * height:,} pixels; at most {MAX_PIXELS:,} accepted")
    if min(width, height) < MIN_SIDE:
        raise RowError(f"the image is {width}x{height}; at least {MIN_SIDE}x{MIN_SIDE} pixels accepted")
    return image


def _reduce_early(image: Image.Image) -> Image.Image:
    """Shrink to at most WORKING_SIDE on the longer side, in integer steps then antialiased."""
    longer = max(image.size)
    if longer <= WORKING_SIDE:
        return image
    factor = longer // WORKING_SIDE
    if factor >= 2 and image.mode in ("L", "LA", "RGB", "RGBA", "I", "F"):
        image = image.reduce(factor)  # box filter in C: fast and alias-free
    if max(image.size) > WORKING_SIDE:
        image = image.copy()
        image.thumbnail((WORKING_SIDE, WORKING_SIDE), Image.Resampling.BILINEAR)
    return image


def _to_mode_with_alpha(image: Image.Image) -> Image.Image:
    """Bring any colour mode to L, LA, RGB, RGBA, I or F (the modes handled below)."""
    if image.mode in ("L", "LA", "RGB", "RGBA", "F"):
        return image
    if image.mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode == "PA":
        return image.convert("RGBA")
    if image.mode == "1":
        return image.convert("L")
    if image.mode.startswith("I;16") or image.mode == "I":
        return image.convert("I")
    return image.convert("RGB")  # CMYK, YCbCr, LAB, HSV


def _luminance_and_alpha(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    alpha = None
    if image.mode in ("LA", "RGBA"):
        alpha = np.asarray(image.getchannel("A"), dtype=np.float32) / 255.0
        image = image.convert("L")
    elif image.mode == "RGB":
        image = image.convert("L")
    if image.mode == "L":
        return np.asarray(image, dtype=np.float32) / 255.0, alpha
    values = np.asarray(image, dtype=np.float32)  # "I" (16/32-bit integers) or "F"
    if image.mode == "I":
        top = 65535.0 if values.max(initial=0) <= 65535 else float(values.max())
        return np.clip(values / top, 0.0, 1.0), None
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    return np.nan_to_num((values - low) / (high - low) if high > low else values * 0), None


def _flatten_alpha(luminance: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """Composite onto the background colour that contrasts with the drawn (opaque) pixels."""
    if alpha is None or alpha.min() >= 1.0:
        return luminance
    opaque = alpha > 0.5
    drawn = float(luminance[opaque].mean()) if opaque.any() else 0.0
    background = 1.0 if drawn < 0.5 else 0.0
    return luminance * alpha + background * (1.0 - alpha)


# Where Pillow's ``getexif`` finds an orientation: EXIF in info (JPEG, PNG eXIf, WebP), an
# ImageMagick text chunk, XMP, or TIFF's own tags.
_ORIENTATION_SOURCES = ("exif", "Raw profile type exif", "XML:com.adobe.xmp", "xmp")


def _upright(image: Image.Image) -> Image.Image:
    """The (first) frame loaded and turned upright by its EXIF orientation, if it has one.

    ``ImageOps.exif_transpose`` parses the metadata and copies the image even when there is no
    orientation (a seventh of a small PNG's decoding time), so it runs only when the image carries
    metadata it could read an orientation from.
    """
    image.load()
    if hasattr(image, "tag_v2") or any(key in image.info for key in _ORIENTATION_SOURCES):
        image = ImageOps.exif_transpose(image)
    return image


def decode_levels(value: object) -> np.ndarray:
    """Encoded image (bytes or base64) -> greyscale ``[H, W]``: ``uint8`` levels 0-255 for an
    8-bit greyscale image without transparency (most MNIST-like inputs), else ``float32`` in
    [0, 1]; white is the top of the range either way. ``as_unit`` brings either to [0, 1].

    The levels are left unconverted so that a stack of same-sized images converts in one
    operation (converting one by one costs about as much as decoding a small PNG). A plain 8-bit greyscale PNG
    takes ``small_png``'s short way to the same levels.
    Raises ``RowError`` naming the problem and what is accepted.
    """
    return _decode_data(as_bytes(value))


def decode_levels_many(values: Sequence[object], budget: DecodeBudget | None = None) -> list[np.ndarray | RowError]:
    """``decode_levels`` of each value: its levels, or the ``RowError`` it raises (returned, not
    raised). The same answers; the small plain greyscale PNGs among them are decoded together
    (``small_png.grey_levels_many``), at under half the cost of one by one. Only their bytes are
    held until then: every other file is decoded as it comes, so a request of large photos
    never holds all of them at once. ``budget`` bounds the whole call's decoding (its
    ``RequestTooCostly`` is raised, not returned)."""
    answers: list[np.ndarray | RowError | None] = [None] * len(values)
    joinable: dict[int, bytes] = {}
    for index, value in enumerate(values):
        try:
            data = as_bytes(value)
            if small_png.may_join(data):
                joinable[index] = data
            else:
                answers[index] = _decode_data(data, budget)
        except RowError as error:
            answers[index] = error
    joined = small_png.grey_levels_many(list(joinable.values()), MIN_SIDE)
    for (index, data), levels in zip(joinable.items(), joined, strict=True):
        try:
            if levels is not None and budget is not None:
                budget.spend(levels.size)  # small by construction: at most WORKING_SIDE squared
            answers[index] = levels if levels is not None else _decode_data(data, budget)
        except RowError as error:
            answers[index] = error
    return answers


def _decode_data(data: bytes, budget: DecodeBudget | None = None) -> np.ndarray:
    if budget is not None:
        budget.check_time()
    if len(data) <= MAX_ENCODED_BYTES:
        levels = small_png.grey_levels(data, MIN_SIDE, WORKING_SIDE)  # never over MAX_PIXELS
        if levels is not None:
            if budget is not None:
                budget.spend(levels.size)
            return levels
    return decode_with_pillow(data, budget)


def decode_with_pillow(data: bytes, budget: DecodeBudget | None = None) -> np.ndarray:
    """``decode_levels`` for any accepted file, through ``Image.open``; the pixels it will decode
    are charged to ``budget`` before any is decoded."""
    image = _open(data)
    try:
        if image.format == "JPEG" and max(image.size) > 2 * WORKING_SIDE:
            # Decode at 1/2, 1/4 or 1/8 scale straight from the DCT coefficients.
            image.draft(image.mode if image.mode in ("L", "RGB") else "RGB", (WORKING_SIDE, WORKING_SIDE))
        if budget is not None:
            budget.spend(image.size[0] * image.size[1])
        image = _upright(image)
        image = _reduce_early(_to_mode_with_alpha(image))
        if image.mode == "L":
            return np.asarray(image)
        luminance, alpha = _luminance_and_alpha(image)
    except RowError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        # A truncated or inconsistent file fails only when its pixels are read.
        raise RowError(f"the image data is truncated or corrupt; accepted formats: {ACCEPTED_TEXT}") from None
    return _flatten_alpha(luminance, alpha)


def as_unit(levels: np.ndarray) -> np.ndarray:
    """``decode_levels``' answer (or a stack of them) as ``float32`` in [0, 1]."""
    # One pass, the same float32 quotients as ``levels.astype(np.float32) / 255.0``.
    return np.divide(levels, np.float32(255.0), dtype=np.float32) if levels.dtype == np.uint8 else levels


def decode_image(value: object) -> np.ndarray:
    """Encoded image (bytes or base64) -> greyscale ``float32 [H, W]`` in [0, 1]; 1 is white.

    Raises ``RowError`` naming the problem and what is accepted.
    """
    return as_unit(decode_levels(value))
