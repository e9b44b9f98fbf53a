"""Input normalisation: the one place the network's input scale is defined.

``MNIST_MEAN`` and ``MNIST_STD`` are defined here and nowhere else: training, the served model's
preprocessing and the benchmarks import them, so online and offline inputs are normalised alike.
"""

from __future__ import annotations

import torch

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
