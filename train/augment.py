"""On-tensor augmentation for training: each image of a batch gets its own random transform.

Runs on whole batches (one ``affine_grid``/``grid_sample`` call), so augmentation costs a fraction
of a training step; the random draws come from a CPU ``torch.Generator``, so a run is reproducible
from its seed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine(
    images: torch.Tensor,
    generator: torch.Generator,
    max_degrees: float = 12.0,
    max_shift: float = 0.1,
    scale_range: tuple[float, float] = (0.9, 1.1),
) -> torch.Tensor:
    """Rotate, scale and shift each image of a batch ``[N, 1, H, W]`` by its own random amount.

    Runs as one ``affine_grid``/``grid_sample`` call on the whole batch, so augmentation costs a
    fraction of a training step. ``max_shift`` is a fraction of the image side. The random draws
    come from ``generator`` (on the CPU), so a run is reproducible from its seed.
    """
    n = images.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return _uniform(n, low, high, generator)

    angle = uniform(-max_degrees, max_degrees) * (math.pi / 180.0)
    scale = uniform(*scale_range)
    # affine_grid maps output coordinates to input coordinates in [-1, 1], so a shift of
    # ``max_shift`` of the side is ``2 * max_shift`` in grid units, and scaling by s samples
    # the input with step 1/s.
    shift_x = uniform(-2 * max_shift, 2 * max_shift)
    shift_y = uniform(-2 * max_shift, 2 * max_shift)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift_x], dim=1), torch.stack([sin, cos, shift_y], dim=1)], dim=1).to(
        images.device, images.dtype
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_degradation(images: torch.Tensor, generator: torch.Generator, share: float = 0.5) -> torch.Tensor:
    """What a photo does to a digit that preprocessing cannot undo, on ``share`` of a batch
    ``[N, 1, H, W]`` in [0, 1]: strokes thinner or thicker, a blur, a lower resolution, a noise
    floor. Each chosen image gets one or two of them; the rest pass unchanged.

    The served model reads photos of pencil, canvas drawings and 8x8 scans through a
    preprocessing that normalises contrast and size but keeps the blur, the blockiness and the
    stroke width of what it was given: the network learns them here.
    """
    n = images.shape[0]
    out = images.clone()
    for degrade in (_stroke_width, _blur, _low_resolution, _noise_floor):
        # The batch is in random order already: a random run of it is a random subset, and
        # slicing it costs nothing where a boolean mask gathers and scatters.
        count = int((torch.rand(n, generator=generator) < share / 2).sum())
        if count:
            start = int(torch.randint(0, n - count + 1, (1,), generator=generator))
            out[start : start + count] = degrade(out[start : start + count], generator)
    return out


def _stroke_width(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A pen one pixel wider (dilation) or narrower (erosion), at random."""
    thicker = torch.rand(images.shape[0], generator=generator) < 0.5
    dilated = F.max_pool2d(images, 3, stride=1, padding=1)
    eroded = -F.max_pool2d(-images, 3, stride=1, padding=1)
    return torch.where(thicker[:, None, None, None], dilated, eroded)


def _blur(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A Gaussian blur of 0.5 to 1.5 pixels, renormalised so the strokes still reach full ink."""
    sigma = float(torch.empty(1).uniform_(0.5, 1.5, generator=generator))
    radius = 3
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    blurred = F.conv2d(images, kernel.view(1, 1, 1, -1), padding=(0, radius))
    blurred = F.conv2d(blurred, kernel.view(1, 1, -1, 1), padding=(radius, 0))
    peak = blurred.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    return (blurred / peak).clamp(0, 1)


def _low_resolution(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Down to 7-14 pixels a side (an 8x8 scan, a digit a few millimetres tall in a photo) and
    back up: soft, blocky strokes."""
    side = int(torch.randint(7, 15, (1,), generator=generator))
    height, width = images.shape[-2:]
    small = F.interpolate(images, size=(side, side), mode="area")
    up = F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)
    peak = up.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    return (up / peak).clamp(0, 1)


def _noise_floor(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Grain that survived the background removal: faint noise, strongest where there is ink."""
    noise = torch.randn(images.shape, generator=generator) * 0.08
    return (images + noise * (0.3 + images)).clamp(0, 1)


def regional_forms(
    images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator, share: float = 0.4
) -> torch.Tensor:
    """The continental European forms of two digits MNIST's American writers rarely use, drawn on
    ``share`` of a batch's 1s and 7s (``[N, 1, 28, 28]`` in [0, 1], before ``random_affine``): a 1
    with a flag (a short stroke down to the left from its top), which the network otherwise reads
    as a 7, and a 7 with a bar across its stem. Other images pass unchanged; labels do not change.
    """
    out = images.clone()
    n = images.shape[0]
    chosen = torch.rand(n, generator=generator) < share
    ones = torch.nonzero(chosen & (labels == 1)).flatten()
    sevens = torch.nonzero(chosen & (labels == 7)).flatten()
    if len(ones):
        out[ones] = _with_flag(out[ones], generator)
    if len(sevens):
        out[sevens] = _with_crossbar(out[sevens], generator)
    return out


def _ink_rows(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image ``[k, 1, H, W]``: (top row, bottom row, ink column weights ``[k, H, W]``)."""
    ink = images[:, 0]
    rows = (ink > 0.5).any(dim=2)
    height = ink.shape[1]
    index = torch.arange(height).expand_as(rows)
    top = torch.where(rows, index, height).amin(dim=1)
    bottom = torch.where(rows, index, -1).amax(dim=1)
    return top, bottom.clamp_min(top), ink


def _column_at(ink: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
    """The ink's mean column in ``row`` of each image (the middle when the row is empty)."""
    line = ink[torch.arange(len(row)), row.clamp(0, ink.shape[1] - 1)]
    columns = torch.arange(ink.shape[2], dtype=ink.dtype)
    return (line * columns).sum(1) / line.sum(1).clamp_min(1e-6) + (line.sum(1) <= 0) * (ink.shape[2] - 1) / 2


def _stroke(shape: torch.Size, start: torch.Tensor, end: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """Anti-aliased straight strokes ``[k, 1, H, W]`` from ``start`` to ``end`` (``[k, 2]``: row,
    column), ``width`` pixels wide."""
    height, wide = shape[-2:]
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=start.dtype), torch.arange(wide, dtype=start.dtype), indexing="ij"
    )
    points = torch.stack([ys, xs], dim=-1).reshape(1, -1, 2)
    direction = (end - start)[:, None, :]
    along = ((points - start[:, None, :]) * direction).sum(-1) / (direction**2).sum(-1).clamp_min(1e-6)
    nearest = start[:, None, :] + along.clamp(0, 1)[..., None] * direction
    distance = (points - nearest).norm(dim=-1)
    return (width[:, None] / 2 + 0.5 - distance).clamp(0, 1).reshape(-1, 1, height, wide)


def _uniform(count: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    """``count`` draws from U(low, high) off ``generator``."""
    return torch.rand(count, generator=generator) * (high - low) + low


def _with_flag(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    top, bottom, ink = _ink_rows(images)
    k = len(top)
    start = torch.stack([top.float(), _column_at(ink, top)], dim=1)
    length = (bottom - top + 1).float() * _uniform(k, 0.2, 0.38, generator)
    angle = _uniform(k, 25.0, 60.0, generator) * (math.pi / 180.0)  # below the horizontal
    end = start + torch.stack([torch.sin(angle), -torch.cos(angle)], dim=1) * length[:, None]
    return torch.maximum(images, _stroke(images.shape, start, end, _uniform(k, 1.5, 3.0, generator)))


def _with_crossbar(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    top, bottom, ink = _ink_rows(images)
    k = len(top)
    middle = (top + (bottom - top) * _uniform(k, 0.4, 0.6, generator)).round().long()
    centre = torch.stack([middle.float(), _column_at(ink, middle)], dim=1)
    half = (bottom - top + 1).float() * _uniform(k, 0.12, 0.22, generator)
    tilt = _uniform(k, -10.0, 10.0, generator) * (math.pi / 180.0)
    offset = torch.stack([torch.sin(tilt), torch.cos(tilt)], dim=1) * half[:, None]
    return torch.maximum(
        images, _stroke(images.shape, centre - offset, centre + offset, _uniform(k, 1.5, 3.0, generator))
    )
