"""Rendering primitives for the evaluation sets: paper, ink, light, blur, compression, geometry.

Images are float32 RGB arrays ``[H, W, 3]`` in [0, 1] (1 is white) until ``encode`` writes a file.
Every random draw comes from the ``numpy.random.Generator`` passed in, so a set is the same for the
same seed on every machine.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage

PAPER_TINTS = {
    "white": (0.95, 0.95, 0.93),
    "cream": (0.96, 0.93, 0.82),
    "yellow": (0.98, 0.93, 0.60),
    "pink": (0.97, 0.82, 0.86),
    "blue": (0.78, 0.87, 0.96),
    "green": (0.80, 0.93, 0.78),
    "grey": (0.80, 0.80, 0.80),
}


def paper(rng: np.random.Generator, height: int, width: int, tint: str = "white", grain: float = 0.02) -> np.ndarray:
    """Paper of ``tint`` with a little brightness variation and grain."""
    base = np.array(PAPER_TINTS[tint], dtype=np.float32) * np.float32(rng.uniform(0.92, 1.03))
    noise = rng.normal(0.0, grain, (height, width)).astype(np.float32)
    fibres = ndimage.gaussian_filter(rng.normal(0.0, grain * 2, (height, width)), 2.0).astype(np.float32)
    return np.clip(base[None, None, :] + (noise + fibres)[..., None], 0.0, 1.0)


def lighting(rng: np.random.Generator, height: int, width: int, strength: float) -> np.ndarray:
    """A multiplicative light field ``[H, W]``: a tilted gradient times a vignette, down to
    ``1 - strength`` at its darkest."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ys, xs = ys / height - 0.5, xs / width - 0.5
    angle = rng.uniform(0, 2 * np.pi)
    gradient = 0.5 + xs * np.cos(angle) + ys * np.sin(angle)
    vignette = (xs**2 + ys**2) * 2
    field = 1.0 - strength * np.clip(0.6 * gradient + 0.4 * vignette, 0.0, 1.0)
    return field.astype(np.float32)


def shadow(rng: np.random.Generator, height: int, width: int, depth: float) -> np.ndarray:
    """A soft-edged shadow over part of the page (a hand, a phone): multiply by the result."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    offset = rng.uniform(-0.25, 0.35) * max(height, width)
    distance = (xs - width / 2) * np.cos(angle) + (ys - height / 2) * np.sin(angle) - offset
    softness = rng.uniform(0.03, 0.12) * max(height, width)
    covered = 1.0 / (1.0 + np.exp(-distance / softness))
    return (1.0 - depth * covered).astype(np.float32)


def ruled(image: np.ndarray, rng: np.random.Generator, squared: bool) -> np.ndarray:
    """Ruled (or squared) paper's printed lines, pale blue-grey, every 14-30 pixels."""
    height, width, _ = image.shape
    spacing = rng.uniform(14, 30)
    colour = np.array([rng.uniform(0.45, 0.7), rng.uniform(0.6, 0.8), rng.uniform(0.8, 0.95)], dtype=np.float32)
    strength = rng.uniform(0.35, 0.75)
    mask = np.zeros((height, width), dtype=np.float32)
    start = rng.uniform(0, spacing)
    for y in np.arange(start, height, spacing):
        mask[int(y)] = 1.0
    if squared:
        for x in np.arange(rng.uniform(0, spacing), width, spacing):
            mask[:, int(x)] = 1.0
    mask = ndimage.gaussian_filter(mask, 0.5) * 2.0
    return ink(image, np.clip(mask, 0, 1) * strength, colour)


def ink(image: np.ndarray, alpha: np.ndarray, colour) -> np.ndarray:
    """Ink of ``colour`` (RGB in [0, 1]) laid on ``image`` with coverage ``alpha`` ``[H, W]``:
    it darkens towards the ink's colour, as pigment on paper does."""
    colour = np.asarray(colour, dtype=np.float32)
    a = np.clip(alpha, 0.0, 1.0)[..., None]
    return image * (1.0 - a) + image * colour[None, None, :] * a


def digit_alpha(levels: np.ndarray, height: int, degrees: float = 0.0) -> np.ndarray:
    """A digit's coverage (levels in [0, 1], ink bright) scaled to ``height`` pixels tall (aspect
    kept), rotated by ``degrees``: soft, as a small digit photographed is."""
    source = Image.fromarray((np.clip(levels, 0, 1) * 255).astype(np.uint8), mode="L")
    scale = height / levels.shape[0]
    size = (max(1, round(levels.shape[1] * scale)), max(1, height))
    scaled = source.resize(size, Image.Resampling.BICUBIC)
    if degrees:
        scaled = scaled.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=0)
    return np.asarray(scaled, dtype=np.float32) / 255.0


def place(canvas_shape: tuple[int, int], alpha: np.ndarray, top: int, left: int) -> np.ndarray:
    """``alpha`` pasted at (top, left) in a zero field of ``canvas_shape``, cut at the edges."""
    field = np.zeros(canvas_shape, dtype=np.float32)
    height, width = canvas_shape
    a_top, a_left = max(0, -top), max(0, -left)
    top, left = max(0, top), max(0, left)
    rows = min(alpha.shape[0] - a_top, height - top)
    cols = min(alpha.shape[1] - a_left, width - left)
    if rows > 0 and cols > 0:
        field[top : top + rows, left : left + cols] = alpha[a_top : a_top + rows, a_left : a_left + cols]
    return field


def defocus(image: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(image, (sigma, sigma, 0)) if sigma > 0 else image


def motion_blur(image: np.ndarray, length: int, degrees: float) -> np.ndarray:
    """Blur along a line ``length`` pixels long at ``degrees``: a hand that moved."""
    if length < 2:
        return image
    kernel = np.zeros((length, length), dtype=np.float32)
    kernel[length // 2, :] = 1.0
    kernel = ndimage.rotate(kernel, degrees, reshape=False, order=1)
    kernel /= kernel.sum()
    return np.stack([ndimage.convolve(image[..., c], kernel, mode="nearest") for c in range(3)], axis=-1)


def perspective(image: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """A slight perspective (the phone not held square to the page): corners moved by up to
    ``amount`` of the side, the uncovered border filled with the image's edge."""
    height, width, _ = image.shape
    source = Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8), mode="RGB")
    jitter = lambda side: rng.uniform(-amount, amount) * side  # noqa: E731
    corners = [
        (jitter(width), jitter(height)),
        (width + jitter(width), jitter(height)),
        (width + jitter(width), height + jitter(height)),
        (jitter(width), height + jitter(height)),
    ]
    target = [(0, 0), (width, 0), (width, height), (0, height)]
    coefficients = _perspective_coefficients(target, corners)
    warped = source.transform((width, height), Image.Transform.PERSPECTIVE, coefficients, Image.Resampling.BICUBIC)
    border = np.asarray(source, dtype=np.float32) / 255.0
    result = np.asarray(warped, dtype=np.float32) / 255.0
    empty = np.asarray(
        Image.new("L", (width, height), 255).transform(
            (width, height), Image.Transform.PERSPECTIVE, coefficients, Image.Resampling.NEAREST
        )
    )
    return np.where((empty == 0)[..., None], np.median(border.reshape(-1, 3), axis=0), result)


def _perspective_coefficients(target, source) -> tuple:
    """PIL's eight perspective coefficients mapping ``target`` corners onto ``source`` corners."""
    rows = []
    for (x, y), (u, v) in zip(target, source, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    matrix = np.array(rows, dtype=np.float64)
    values = np.array([c for point in source for c in point], dtype=np.float64)
    return tuple(np.linalg.solve(matrix, values))


def encode(image: np.ndarray, fmt: str = "JPEG", quality: int = 90) -> bytes:
    """``image`` (RGB, or RGBA/greyscale as given) as a file of ``fmt``."""
    array = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    mode = "L" if array.ndim == 2 else {3: "RGB", 4: "RGBA"}[array.shape[-1]]
    buffer = io.BytesIO()
    picture = Image.fromarray(array, mode=mode)
    if fmt == "JPEG":
        picture.convert("RGB").save(buffer, format="JPEG", quality=quality)
    else:
        picture.save(buffer, format=fmt)
    return buffer.getvalue()
