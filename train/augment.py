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
