"""Data loading from small IDX files the tests write themselves; the internet is mocked away."""

import numpy as np
import pytest
import torch

from mnist_mlops.train import data as data_module
from mnist_mlops.train.data import RAW_FILES, Split, load_mnist, resolve_data_dir, split_train_val
from mnist_mlops.train.errors import TrainingError
from tests.helpers import write_idx_images, write_idx_labels


def write_fake_mnist(root, train_count=60_000, test_count=10_000, seed=0):
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx_images(raw / "train-images-idx3-ubyte", rng.integers(0, 256, (train_count, 28, 28)))
    write_idx_labels(raw / "train-labels-idx1-ubyte", rng.integers(0, 10, train_count))
    write_idx_images(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, (test_count, 28, 28)))
    write_idx_labels(raw / "t10k-labels-idx1-ubyte", rng.integers(0, 10, test_count))
    return root


@pytest.fixture
def no_internet(monkeypatch):
    """This machine has no internet; make that explicit and fast: torchvision's download fails."""

    def refuse(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: <urlopen error no network>")

    monkeypatch.setattr("torchvision.datasets.MNIST.download", refuse)


def test_loads_idx_files_written_in_torchvisions_layout(tmp_path):
    root = write_fake_mnist(tmp_path)
    train, test, _, fingerprint, verified = load_mnist(root, download=False)
    assert train.images.shape == (60_000, 28, 28) and train.images.dtype == torch.uint8
    assert test.labels.shape == (10_000,)
    assert len(fingerprint) == 64
    assert verified is False  # not the published files


def test_fingerprint_changes_when_a_file_changes(tmp_path):
    a = write_fake_mnist(tmp_path / "a", seed=1)
    b = write_fake_mnist(tmp_path / "b", seed=1)
    assert data_module.fingerprint(a) == data_module.fingerprint(b)
    raw = b / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    content = bytearray(raw.read_bytes())
    content[-1] = (content[-1] + 1) % 10
    raw.write_bytes(bytes(content))
    assert data_module.fingerprint(a)[0] != data_module.fingerprint(b)[0]


def test_the_shared_mnist_copy_matches_the_published_digests(mnist_root):
    assert data_module.fingerprint(mnist_root)[1] is True


def test_missing_folder_without_internet_fails_with_one_readable_line(tmp_path, no_internet):
    with pytest.raises(TrainingError) as error:
        load_mnist(tmp_path / "nowhere")
    message = str(error.value)
    assert "\n" not in message
    assert "could not be downloaded" in message and "MNIST_DATA_DIR" in message


def test_empty_folder_without_internet_fails_the_same_way(tmp_path, no_internet):
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    with pytest.raises(TrainingError, match="could not be downloaded"):
        load_mnist(tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_files_fail_with_one_readable_line(tmp_path, damage):
    root = write_fake_mnist(tmp_path, train_count=100, test_count=10)
    target = root / "MNIST" / "raw" / RAW_FILES[0]
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:1000])
    else:
        target.write_bytes(b"this is not an IDX file" * 10)
    with pytest.raises(TrainingError) as error:
        load_mnist(root, download=False)
    assert "corrupt" in str(error.value) and "\n" not in str(error.value)


def test_files_with_the_wrong_counts_are_refused(tmp_path):
    root = write_fake_mnist(tmp_path, train_count=100, test_count=10)
    with pytest.raises(TrainingError, match="not the expected 60000"):
        load_mnist(root, download=False)


def test_validation_split_is_seeded_disjoint_and_complete():
    images = torch.arange(1000, dtype=torch.int64).view(1000, 1, 1).expand(1000, 28, 28).to(torch.uint8)
    labels = torch.arange(1000) % 10
    split = Split(images, labels)
    train_a, val_a = split_train_val(split, 100, seed=5)
    train_b, val_b = split_train_val(split, 100, seed=5)
    _, val_c = split_train_val(split, 100, seed=6)
    assert len(train_a) == 900 and len(val_a) == 100
    assert torch.equal(val_a.labels, val_b.labels) and torch.equal(train_a.images, train_b.images)
    assert not torch.equal(val_a.images, val_c.images)


def test_data_dir_comes_from_the_flag_then_the_environment_then_the_default(monkeypatch, tmp_path):
    monkeypatch.setenv("MNIST_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir("/explicit").as_posix() == "/explicit"
    assert resolve_data_dir("") == tmp_path / "env"
    monkeypatch.delenv("MNIST_DATA_DIR")
    assert resolve_data_dir(None).as_posix() == "data"
