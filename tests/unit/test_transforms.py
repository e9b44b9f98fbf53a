import torch

from mnist_mlops.serve.model.transforms import MNIST_MEAN, MNIST_STD, normalize, to_unit_range
from mnist_mlops.train.augment import random_affine


def test_normalize_uses_the_mnist_constants():
    x = torch.tensor([0.0, MNIST_MEAN, 1.0])
    torch.testing.assert_close(normalize(x), (x - 0.1307) / 0.3081)
    assert normalize(torch.tensor([MNIST_MEAN])).item() == 0.0
    assert MNIST_STD == 0.3081


def test_to_unit_range_adds_a_channel_and_scales_to_one():
    images = torch.full((3, 28, 28), 255, dtype=torch.uint8)
    out = to_unit_range(images)
    assert out.shape == (3, 1, 28, 28)
    assert out.max().item() == 1.0


def test_random_affine_is_reproducible_from_the_generator_seed():
    images = torch.rand(8, 1, 28, 28)
    a = random_affine(images, torch.Generator().manual_seed(3))
    b = random_affine(images, torch.Generator().manual_seed(3))
    c = random_affine(images, torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_random_affine_with_no_range_is_the_identity():
    images = torch.rand(4, 1, 28, 28)
    out = random_affine(images, torch.Generator().manual_seed(0), 0.0, 0.0, (1.0, 1.0))
    torch.testing.assert_close(out, images, rtol=1e-4, atol=1e-4)
