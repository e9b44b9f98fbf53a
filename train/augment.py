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
        return torch.rand(n, generator=generator) * (high - low) + low

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
