"""MNIST from torchvision: loading, integrity checks, the seeded validation split, the fingerprint.

The data root comes from ``--data_dir`` or ``MNIST_DATA_DIR`` (default ``./data``) and holds
torchvision's layout, ``<root>/MNIST/raw/*-ubyte``. When the files are absent they are downloaded
(torchvision's mirrors), which needs the internet.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from mnist_mlops.common.names import DATA_DIR_ENV
from mnist_mlops.train.errors import TrainingError

logger = logging.getLogger(__name__)

DEFAULT_DATA_DIR = "./data"

RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
# The published MNIST files (uncompressed); a match is recorded as ``dataset_verified=true``.
KNOWN_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


def resolve_data_dir(value: str | None) -> Path:
    """``--data_dir`` if given (non-empty), else ``$MNIST_DATA_DIR``, else ``./data``."""
    return Path(value or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser()


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8 [N, 28, 28], ink bright on a black background
    labels: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class MnistData:
    train: Split
    val: Split
    test: Split
    root: Path
    fingerprint: str  # sha256 over the four raw files, in RAW_FILES order
    verified: bool  # every file matches the published digests


def raw_dir(root: Path) -> Path:
    return root / "MNIST" / "raw"


def _files_present(root: Path) -> bool:
    return all((raw_dir(root) / name).is_file() for name in RAW_FILES)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(root: Path) -> tuple[str, bool]:
    """(sha256 over the raw files, whether each matches the published MNIST digest)."""
    combined = hashlib.sha256()
    verified = True
    for name in RAW_FILES:
        file_digest = _file_sha256(raw_dir(root) / name)
        verified &= file_digest == KNOWN_SHA256[name]
        combined.update(f"{file_digest}  {name}\n".encode())
    return combined.hexdigest(), verified


def _download(root: Path) -> None:
    """Download MNIST under ``root``; on failure, remove the folders the attempt created (a
    mistyped path must not be left behind) and quote the whole error."""
    from torchvision.datasets import MNIST

    logger.info("MNIST not found under %s: downloading it with torchvision", root)
    created = _missing_ancestors(raw_dir(root))
    try:
        MNIST(root=str(root), train=True, download=True)
    except Exception as exc:  # network errors come in many types; all mean the same to the user
        if created:  # the raw folder with what the attempt left in it, then its empty parents
            shutil.rmtree(created[0], ignore_errors=True)
            for folder in created[1:]:
                with contextlib.suppress(OSError):
                    folder.rmdir()
        reason = " ".join(str(exc).split())
        raise TrainingError(
            f"MNIST is not under {raw_dir(root)} and could not be downloaded ({reason}); "
            "set MNIST_DATA_DIR or --data_dir to a folder holding MNIST/raw/*-ubyte"
        ) from None


def _missing_ancestors(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    for candidate in [folder, *folder.parents]:
        if candidate.exists():
            break
        missing.append(candidate)
    return missing


def _read(root: Path, train: bool) -> Split:
    from torchvision.datasets import MNIST

    dataset = MNIST(root=str(root), train=train, download=False)
    return Split(dataset.data.contiguous(), dataset.targets.long().contiguous())


def _check_shapes(split: Split, expected: int, name: str, root: Path) -> None:
    ok = (
        split.images.dtype == torch.uint8
        and tuple(split.images.shape) == (expected, 28, 28)
        and tuple(split.labels.shape) == (expected,)
        and int(split.labels.min()) >= 0
        and int(split.labels.max()) <= 9
    )
    if not ok:
        raise TrainingError(
            f"the MNIST {name} files under {raw_dir(root)} are not the expected {expected} labelled "
            "28x28 images; delete them to download again, or point MNIST_DATA_DIR at a good copy"
        )


def load_mnist(root: Path, *, download: bool = True) -> tuple[Split, Split, Path, str, bool]:
    """Read (and if absent, download) MNIST: ``(train60k, test10k, root, fingerprint, verified)``.

    Raises ``TrainingError`` with a one-line explanation for a missing, empty or corrupt folder.
    """
    root = Path(root)
    if not _files_present(root):
        if root.exists() and not root.is_dir():
            raise TrainingError(f"data_dir {root} is a file, not a folder")
        if not download:
            raise TrainingError(f"MNIST is not under {raw_dir(root)} (expected {', '.join(RAW_FILES)})")
        _download(root)
    try:
        train, test = _read(root, train=True), _read(root, train=False)
    except Exception as exc:  # torchvision raises assertions, ValueErrors, RuntimeErrors on bad files
        raise TrainingError(
            f"the MNIST files under {raw_dir(root)} are corrupt or truncated ({exc.__class__.__name__}); "
            "delete them to download again, or point MNIST_DATA_DIR at a good copy"
        ) from None
    _check_shapes(train, 60_000, "training", root)
    _check_shapes(test, 10_000, "test", root)
    digest, verified = fingerprint(root)
    if not verified:
        logger.warning("MNIST files under %s differ from the published digests", raw_dir(root))
    return train, test, root, digest, verified


def split_train_val(train: Split, val_samples: int, seed: int) -> tuple[Split, Split]:
    """Carve a validation split out of the 60k training images with a seeded permutation."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train), generator=generator)
    val_idx, train_idx = order[:val_samples], order[val_samples:]
    return (
        Split(train.images[train_idx], train.labels[train_idx]),
        Split(train.images[val_idx], train.labels[val_idx]),
    )


def prepare(root: Path, val_samples: int, seed: int, max_train_samples: int | None) -> MnistData:
    """Everything a run needs: the seeded train/validation split, the test set and the fingerprint.

    ``max_train_samples`` caps the training split (the fast mode for tests and CI); the validation
    and test sets stay whole, so their figures stay comparable between runs.
    """
    train60k, test, root, digest, verified = load_mnist(root)
    train, val = split_train_val(train60k, val_samples, seed)
    if max_train_samples:
        train = Split(train.images[:max_train_samples], train.labels[:max_train_samples])
    return MnistData(train, val, test, root, digest, verified)
