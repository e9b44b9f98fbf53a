"""What the batch tests share: a store and a folder of real images the tests write (good, corrupt,
blank, oversized, not an image)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from torchvision.datasets import MNIST

from tests.helpers import (
    png_bytes,
)
from tests.integration.batch.helpers import GOOD, NESTED, OVERSIZED, ROOT


@pytest.fixture(scope="module")
def store_uri(trained_store, tmp_path_factory) -> str:
    return trained_store.copy_to(tmp_path_factory.mktemp("batch-store"))


@pytest.fixture(scope="module")
def digits(mnist_root):
    test = MNIST(str(mnist_root), train=False)
    return test.data[:40].numpy(), test.targets[:40].numpy()


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory, digits) -> Path:
    """12 digits (PNG and JPEG, some one subfolder deep, one suffix in mixed case), one corrupt file,
    one blank image, two files over the model's 25 MB limit and one text file.

    The two large files are sparse (no disk): one just over the limit, and one over 2 GB, which
    Spark's ``binaryFile`` fails the whole job on if it reads it. Both engines must name them in
    error rows without reading them."""
    root = tmp_path_factory.mktemp("photos") / ROOT
    (root / NESTED).mkdir(parents=True)
    images, _ = digits
    for i in range(GOOD):
        folder = root / NESTED if i % 3 == 0 else root
        if i % 2:
            (folder / f"digit-{i:02d}.png").write_bytes(png_bytes(images[i]))
        else:
            suffix = ".Jpg" if i == 4 else ".jpg"
            (folder / f"digit-{i:02d}{suffix}").write_bytes(png_bytes(255 - images[i], fmt="JPEG", quality=95))
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this file was cut short")
    (root / "blank.png").write_bytes(png_bytes(np.full((28, 28), 255, np.uint8)))
    for name, size in OVERSIZED.items():
        with open(root / name, "wb") as f:
            f.truncate(size)
    (root / "notes.txt").write_text("not an image: ignored")
    return root
