"""The evaluation sets: labelled images the preprocessing was not tuned on, built from a seed.

Each set answers one question about real handwriting that MNIST's own test set cannot:

- ``writers``: another population of writers. The UCI optical digits that ship inside
  scikit-learn (43 writers, none of MNIST's), 8x8 scans rendered as small, soft photos of grey
  pencil on paper under uneven light.
- ``canvas``: digits drawn with a mouse or a finger on a web canvas. MNIST test digits reduced to
  their centre lines and drawn again with a round brush, thin or thick, dark or coloured, on a
  white or a transparent background (PNG).
- ``faint``: faint and soft ink. Pencil-grey, low-contrast strokes, defocus or motion blur, a digit
  20-40 pixels tall in the photo, heavy JPEG compression.
- ``paper``: paper and light. Shadows and gradients, ruled or squared paper, coloured paper, a
  digit touching the border or filling the frame, a slight perspective.
- ``nodigit``: no digit at all (label -1): blank paper, ruled or squared paper, paper texture, a
  smudge of graphite, a photo of a desk. The model should refuse them all.

The sources are picked by the seed too (a permutation of the MNIST test set, of the UCI digits), so
one seed's set shares no image with another's: preprocessing is tuned on one seed (``TUNING_SEED``)
and reported on another (``REPORT_SEED``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from mnist_mlops.registry.evalsets import render

TUNING_SEED, REPORT_SEED = 0, 1
SET_SIZE = 300
NO_DIGIT = -1
HANDWRITING_SETS = ("writers", "canvas", "faint", "paper")
SETS = (*HANDWRITING_SETS, "nodigit")


@dataclass(frozen=True)
class Sample:
    data: bytes  # an encoded image file, as a client sends it
    label: int  # the digit, or NO_DIGIT
    kind: str  # how it was made, for reports ("pencil", "ruled", "smudge", ...)


@dataclass(frozen=True)
class Sources:
    mnist_images: np.ndarray  # uint8 [N, 28, 28], ink bright
    mnist_labels: np.ndarray
    uci_images: np.ndarray  # float [M, 8, 8] in [0, 1], ink bright
    uci_labels: np.ndarray

    @classmethod
    def load(cls, mnist_root: Path) -> Sources:
        from sklearn.datasets import load_digits

        from mnist_mlops.registry.datasets import mnist_test_set

        images, labels = mnist_test_set(mnist_root)
        uci = load_digits()
        return cls(images, labels, uci.images.astype(np.float32) / 16.0, uci.target.astype(np.int64))


def build(name: str, sources: Sources, seed: int, count: int = SET_SIZE) -> list[Sample]:
    """``count`` samples of the set ``name``, the same for the same seed."""
    if name not in BUILDERS:
        raise ValueError(f"unknown evaluation set {name!r}; the sets are {', '.join(SETS)}")
    # Each set draws from its own stream, so adding a set never changes another one.
    rng = np.random.default_rng([seed, SETS.index(name)])
    return list(BUILDERS[name](sources, rng, count))


def _picks(rng: np.random.Generator, pool: int, count: int) -> np.ndarray:
    return rng.permutation(pool)[:count]


def _writers(sources: Sources, rng: np.random.Generator, count: int) -> Iterator[Sample]:
    for index in _picks(rng, len(sources.uci_labels), count):
        height, width = int(rng.integers(48, 140)), int(rng.integers(48, 140))
        digit_height = int(rng.integers(20, 41))
        alpha = render.digit_alpha(sources.uci_images[index], digit_height, rng.uniform(-8, 8))
        image = render.paper(rng, height, width, str(rng.choice(["white", "cream", "grey"])))
        image *= render.lighting(rng, height, width, rng.uniform(0.05, 0.35))[..., None]
        top = int(rng.integers(0, max(1, height - alpha.shape[0])))
        left = int(rng.integers(0, max(1, width - alpha.shape[1])))
        grey = rng.uniform(0.25, 0.55)  # pencil: grey, not black
        image = render.ink(image, render.place((height, width), alpha, top, left) * rng.uniform(0.6, 0.95), [grey] * 3)
        image = render.defocus(image, rng.uniform(0.4, 1.2))
        yield Sample(render.encode(image, "JPEG", int(rng.integers(55, 90))), int(sources.uci_labels[index]), "uci")


def _canvas(sources: Sources, rng: np.random.Generator, count: int) -> Iterator[Sample]:
    from skimage.morphology import skeletonize

    for index in _picks(rng, len(sources.mnist_labels), count):
        side = int(rng.choice([200, 280, 400]))
        finger = rng.random() < 0.4
        brush = rng.uniform(0.05, 0.1) * side if finger else rng.uniform(0.008, 0.03) * side
        scale = rng.uniform(0.45, 0.9) * side / 20  # the 20-pixel MNIST box to this share of the canvas
        up = render.digit_alpha(sources.mnist_images[index] / 255.0, int(28 * scale), rng.uniform(-10, 10))
        centre_line = skeletonize(up > 0.5)
        distance = ndimage.distance_transform_edt(~centre_line)
        stroke = np.clip(brush / 2 - distance + 0.5, 0.0, 1.0)  # a round brush, anti-aliased
        top = int(rng.integers(-int(0.05 * side), max(1, side - stroke.shape[0] + int(0.05 * side))))
        left = int(rng.integers(-int(0.05 * side), max(1, side - stroke.shape[1] + int(0.05 * side))))
        alpha = render.place((side, side), stroke, top, left)
        colour = [0.05, 0.05, 0.05] if rng.random() < 0.6 else list(rng.uniform(0.0, 0.6, 3))
        if rng.random() < 0.5:  # a canvas export: the strokes alone, on a transparent background
            rgba = np.concatenate(
                [np.broadcast_to(np.asarray(colour, np.float32), (side, side, 3)), alpha[..., None]], -1
            )
            yield Sample(render.encode(rgba, "PNG"), int(sources.mnist_labels[index]), "transparent")
        else:
            image = render.ink(np.ones((side, side, 3), np.float32), alpha, colour)
            yield Sample(render.encode(image, "PNG"), int(sources.mnist_labels[index]), "white")


def _faint(sources: Sources, rng: np.random.Generator, count: int) -> Iterator[Sample]:
    for index in _picks(rng, len(sources.mnist_labels), count):
        height, width = int(rng.integers(50, 170)), int(rng.integers(50, 170))
        digit_height = int(rng.integers(20, 41))
        field = sources.mnist_images[index] / 255.0
        alpha = render.digit_alpha(field, round(digit_height * 28 / 20), rng.uniform(-10, 10))
        image = render.paper(rng, height, width, str(rng.choice(["white", "cream", "grey"])), rng.uniform(0.01, 0.03))
        image *= render.lighting(rng, height, width, rng.uniform(0.0, 0.25))[..., None]
        top = int(rng.integers(0, max(1, height - alpha.shape[0])))
        left = int(rng.integers(0, max(1, width - alpha.shape[1])))
        contrast = rng.uniform(0.2, 0.5)  # how much darker than the paper the strokes are
        image = render.ink(image, render.place((height, width), alpha, top, left) * contrast, [0.0] * 3)
        blur = rng.choice(["defocus", "motion", "both"])
        if blur in ("defocus", "both"):
            image = render.defocus(image, rng.uniform(0.7, 1.8))
        if blur in ("motion", "both"):
            image = render.motion_blur(image, int(rng.integers(3, 7)), rng.uniform(0, 180))
        yield Sample(render.encode(image, "JPEG", int(rng.integers(15, 45))), int(sources.mnist_labels[index]), blur)


def _paper(sources: Sources, rng: np.random.Generator, count: int) -> Iterator[Sample]:
    for index in _picks(rng, len(sources.mnist_labels), count):
        height, width = int(rng.integers(160, 480)), int(rng.integers(160, 480))
        kind = str(rng.choice(["shadow", "ruled", "squared", "coloured", "border", "filling"]))
        tint = str(rng.choice(["yellow", "pink", "blue", "green"])) if kind == "coloured" else "white"
        image = render.paper(rng, height, width, tint)
        if kind in ("ruled", "squared"):
            image = render.ruled(image, rng, squared=kind == "squared")
        side = min(height, width)
        share = rng.uniform(0.85, 1.15) if kind == "filling" else rng.uniform(0.35, 0.7)
        alpha = render.digit_alpha(sources.mnist_images[index] / 255.0, int(side * share), rng.uniform(-10, 10))
        if kind == "border":  # the digit's box touches (or is cut by) an edge of the frame
            top = int(rng.choice([-int(0.08 * alpha.shape[0]), height - alpha.shape[0]]))
            left = int(rng.integers(0, max(1, width - alpha.shape[1])))
        else:
            top = (height - alpha.shape[0]) // 2 + int(rng.integers(-side // 8, side // 8 + 1))
            left = (width - alpha.shape[1]) // 2 + int(rng.integers(-side // 8, side // 8 + 1))
        colour = [rng.uniform(0.0, 0.2), rng.uniform(0.0, 0.2), rng.uniform(0.05, 0.45)]
        image = render.ink(image, render.place((height, width), alpha, top, left) * rng.uniform(0.75, 1.0), colour)
        depth = rng.uniform(0.35, 0.6) if kind == "shadow" else rng.uniform(0.0, 0.25)
        image *= render.shadow(rng, height, width, depth)[..., None]
        image *= render.lighting(rng, height, width, rng.uniform(0.1, 0.45))[..., None]
        image = render.perspective(render.defocus(image, rng.uniform(0.3, 1.0)), rng, rng.uniform(0.0, 0.06))
        yield Sample(render.encode(image, "JPEG", int(rng.integers(60, 92))), int(sources.mnist_labels[index]), kind)


def _nodigit(sources: Sources, rng: np.random.Generator, count: int) -> Iterator[Sample]:
    makers: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
        "blank": _blank,
        "ruled": lambda r, h, w: render.ruled(_blank(r, h, w), r, squared=bool(r.random() < 0.5)),
        "texture": _texture,
        "smudge": _smudge,
        "desk": _desk,
    }
    kinds = list(makers)
    for i in range(count):
        kind = kinds[i % len(kinds)]
        height, width = int(rng.integers(60, 420)), int(rng.integers(60, 420))
        image = makers[kind](rng, height, width)
        image = render.defocus(image, rng.uniform(0.2, 1.2))
        yield Sample(render.encode(image, "JPEG", int(rng.integers(40, 92))), NO_DIGIT, kind)


def _blank(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    tint = str(rng.choice(list(render.PAPER_TINTS)))
    image = render.paper(rng, height, width, tint)
    image *= render.lighting(rng, height, width, rng.uniform(0.0, 0.45))[..., None]
    return image * render.shadow(rng, height, width, rng.uniform(0.0, 0.4))[..., None]


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Coarse paper (recycled, card): grain and fibres far stronger than a writing pad's."""
    return _blank(rng, height, width) * (1.0 - _noise_field(rng, height, width, rng.uniform(1.0, 4.0), 0.12))[..., None]


def _smudge(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A rubbed-out or smeared patch of graphite: soft, without strokes."""
    image = _blank(rng, height, width)
    blob = np.zeros((height, width), dtype=np.float32)
    cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
    for _ in range(int(rng.integers(1, 4))):
        y, x = int(cy + rng.normal(0, 0.08) * height), int(cx + rng.normal(0, 0.08) * width)
        blob[min(max(y, 0), height - 1), min(max(x, 0), width - 1)] = 1.0
    radius = rng.uniform(0.06, 0.2) * min(height, width)
    blob = ndimage.gaussian_filter(blob, radius)
    blob = blob / blob.max() * rng.uniform(0.25, 0.6)
    blob *= 1.0 - _noise_field(rng, height, width, radius / 4, 0.5)
    grey = rng.uniform(0.2, 0.45)
    return render.ink(image, blob, [grey] * 3)


def _desk(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Wood grain: stretched noise in a warm brown, lit unevenly."""
    grain = ndimage.gaussian_filter(rng.normal(0, 1, (height, width)), (rng.uniform(0.5, 2), rng.uniform(8, 30)))
    grain = (grain - grain.min()) / (np.ptp(grain) + 1e-6)
    base = np.array([rng.uniform(0.45, 0.75), rng.uniform(0.3, 0.5), rng.uniform(0.15, 0.3)], dtype=np.float32)
    image = base[None, None, :] * (0.75 + 0.4 * grain[..., None]).astype(np.float32)
    return image * render.lighting(rng, height, width, rng.uniform(0.1, 0.5))[..., None]


def _noise_field(rng: np.random.Generator, height: int, width: int, scale: float, strength: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.normal(0, 1, (height, width)), scale)
    field = (field - field.min()) / (np.ptp(field) + 1e-6)
    return (field * strength).astype(np.float32)


BUILDERS: dict[str, Callable[[Sources, np.random.Generator, int], Iterator[Sample]]] = {
    "writers": _writers,
    "canvas": _canvas,
    "faint": _faint,
    "paper": _paper,
    "nodigit": _nodigit,
}
