"""How ``examples/photo-of-a-3.jpg`` was made: MNIST test digit #30 (a handwritten 3), written in
dark ink on tinted, unevenly lit paper, off-centre and slightly rotated, 1600x1200 JPEG, by the
same generator the quality tests use. Run from the project root:

    MNIST_DATA_DIR=../shared/data .venv/bin/python -m examples.make_example_photo
"""

import os
from pathlib import Path

import numpy as np
from torchvision.datasets import MNIST

from tests.synthetic import phone_photo

INDEX = 30

if __name__ == "__main__":
    test = MNIST(os.environ.get("MNIST_DATA_DIR", "data"), train=False)
    assert int(test.targets[INDEX]) == 3
    photo = phone_photo(test.data[INDEX].numpy(), np.random.default_rng(3), size=(1600, 1200))
    Path(__file__).with_name("photo-of-a-3.jpg").write_bytes(photo)
