"""Labelled evaluation data: the MNIST test set by default, or a dataset a user points at.

Accepted ``--data`` paths:
- a folder holding MNIST IDX files (torchvision's ``MNIST/raw`` layout, or the files directly);
- a Parquet or CSV table with a ``label`` column and an ``image`` (encoded bytes, base64 text, or
  a file path) or ``pixels`` column.
The result is a model-input DataFrame plus the true labels, ready for ``pyfunc.predict``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mnist_mlops.registry.errors import RegistryError


@dataclass(frozen=True)
class LabelledData:
    name: str  # shown in reports and logged with the evaluation
    inputs: pd.DataFrame  # 'image' and/or 'pixels' columns, as the model takes them
    labels: np.ndarray  # int64

    def digest(self) -> str:
        h = hashlib.sha256(self.labels.tobytes())
        h.update(str(len(self.inputs)).encode())
        return h.hexdigest()[:16]


def _find_idx(root: Path) -> tuple[Path, Path] | None:
    for folder in (root / "MNIST" / "raw", root / "raw", root):
        images, labels = folder / "t10k-images-idx3-ubyte", folder / "t10k-labels-idx1-ubyte"
        if images.is_file() and labels.is_file():
            return images, labels
    return None


def _read_idx(path: Path, expected_dims: int) -> np.ndarray:
    data = path.read_bytes()
    if len(data) < 4 + 4 * expected_dims or data[2] != 0x08 or data[3] != expected_dims:
        raise RegistryError(f"{path} is not an IDX file of {expected_dims}-dimensional uint8 data")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(expected_dims))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * expected_dims)
    if body.size != int(np.prod(shape)):
        raise RegistryError(f"{path} is truncated: expected {int(np.prod(shape))} values, found {body.size}")
    return body.reshape(shape)


def mnist_test_set(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """The MNIST test set under ``root``: (uint8 images ``[N, 28, 28]``, int64 labels)."""
    found = _find_idx(root)
    if found is None:
        raise RegistryError(f"no t10k-images-idx3-ubyte / t10k-labels-idx1-ubyte under {root}")
    images, labels = _read_idx(found[0], 3), _read_idx(found[1], 1)
    if len(images) != len(labels):
        raise RegistryError(f"{root}: {len(images)} images but {len(labels)} labels")
    return images, labels.astype(np.int64)


def from_idx_folder(root: Path, name: str) -> LabelledData:
    images, labels = mnist_test_set(root)
    inputs = pd.DataFrame({"pixels": list(images.reshape(len(images), -1))})
    return LabelledData(name, inputs, labels.astype(np.int64))


def _read_table(path: Path) -> pd.DataFrame:
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path)
    except Exception as exc:  # pandas/pyarrow raise many types for a bad file
        raise RegistryError(f"cannot read {path}: {' '.join(str(exc).split())[:160]}") from None
    raise RegistryError(f"{path}: expected a folder of MNIST IDX files, a .parquet or a .csv table")


def from_table(path: Path) -> LabelledData:
    table = _read_table(path)
    if "label" not in table.columns or not ({"image", "pixels"} & set(table.columns)):
        raise RegistryError(f"{path} needs a 'label' column and an 'image' or 'pixels' column")
    inputs = table[[c for c in ("image", "pixels") if c in table.columns]].copy()
    if "image" in inputs.columns:
        inputs["image"] = [_image_value(value, path.parent) for value in inputs["image"]]
    return LabelledData(path.name, inputs, table["label"].to_numpy(dtype=np.int64))


def _image_value(value: object, base: Path) -> object:
    """A path (relative to the table) is read; bytes and base64 text pass through."""
    if isinstance(value, str) and len(value) < 1024:
        candidate = (base / value) if not Path(value).is_absolute() else Path(value)
        if candidate.suffix and candidate.is_file():
            return candidate.read_bytes()
    return value


def load(path: str | None, mnist_root: Path, max_samples: int | None = None) -> LabelledData:
    """``path`` if given, else the MNIST test set under ``mnist_root``; capped at ``max_samples``."""
    if path:
        source = Path(path).expanduser()
        if not source.exists():
            raise RegistryError(f"evaluation data {source} does not exist")
        data = from_idx_folder(source, source.name) if source.is_dir() else from_table(source)
    else:
        data = from_idx_folder(mnist_root, "mnist-test")
    if max_samples and max_samples < len(data.labels):
        data = LabelledData(f"{data.name}[:{max_samples}]", data.inputs.iloc[:max_samples], data.labels[:max_samples])
    if len(data.labels) == 0:
        raise RegistryError(f"the evaluation data {data.name} is empty")
    return data
