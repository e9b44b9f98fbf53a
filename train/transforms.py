"""Input normalisation and on-tensor augmentation.

``MNIST_MEAN`` and ``MNIST_STD`` are defined here and nowhere else: training, the served model's
preprocessing and the benchmarks import them, so online and offline inputs are normalised alike.
This module depends on torch only; the served model ships it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Mean and standard deviation of the 60,000 MNIST training images scaled to [0, 1].
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

IMAGE_SIZE = 28


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Map images in [0, 1] (ink bright, background 0) to the network's input scale."""
    return (images - MNIST_MEAN) / MNIST_STD


def to_unit_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 images ``[N, 28, 28]`` -> float ``[N, 1, 28, 28]`` in [0, 1]."""
    return images_uint8.unsqueeze(1).float().div_(255.0)


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
