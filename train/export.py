"""Log the trained network as the served pyfunc model: weights, code, signature, requirements.

Weight format, chosen on purpose: a plain ``state_dict`` saved with ``torch.save`` and loaded with
``weights_only=True`` into the eager module that ships with the model; the pyfunc itself is logged
from code (a two-line entry point), not pickled. So loading runs no pickled code, the eager module
runs faster here than MLflow's default ``pt2`` export (which ran at 0.59x at batch 1), and
``pt2``'s traced shapes would reject some of the inputs we accept.

The code a model runs ships inside it: the model package (``mnist_mlops.serve.model``: decoding,
preprocessing, the network, the pyfunc) is copied into the model's ``code_paths`` under a name of
its own, ``mnist_model_<hash of its files>``. No host process imports that name (they import the
package as ``mnist_mlops.serve.model``), and two versions with different code have different
names, so any process can load any versions side by side, each running exactly the code it was
logged with, with no module eviction or import-path surgery. ``pip_requirements`` pins what the
package imports, so a model loads wherever MLflow runs without this project installed.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from PIL import Image

import mnist_mlops.serve.model as model_package
from mnist_mlops.serve.model.schema import SIGNATURE

ARTIFACT_PATH = "model"
PACKAGE_PREFIX = "mnist_model_"
ENTRY_POINT = """\
# The model's code entry point (MLflow "models from code"): MLflow runs this file when the model
# loads, with the model's code_paths on sys.path. Written by mnist_mlops.train.export.
import mlflow

from {package}.pyfunc import DigitClassifier

mlflow.models.set_model(DigitClassifier())
"""
# Distributions the shipped modules import (the pyfunc flavor also needs cloudpickle).
REQUIRED_DISTRIBUTIONS = ("torch", "numpy", "pandas", "scipy", "pillow", "cloudpickle")


def pip_requirements() -> list[str]:
    """Pinned requirements of the logged model (local build tags such as ``+cpu`` dropped)."""
    pins = [f"{name}=={version(name).split('+')[0]}" for name in REQUIRED_DISTRIBUTIONS]
    return [f"mlflow=={version('mlflow').split('+')[0]}", *pins]


def model_package_files() -> list[Path]:
    """The model package's modules: every ``.py`` file of ``mnist_mlops.serve.model``."""
    folder = Path(model_package.__file__).resolve().parent
    return sorted(folder.glob("*.py"))


def package_name(files: list[Path]) -> str:
    """``mnist_model_<first 12 hex digits of the sha256 of the files' names and bytes>``."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return PACKAGE_PREFIX + digest.hexdigest()[:12]


def stage_code(destination: Path) -> tuple[str, Path]:
    """Copy the model package under ``destination`` with its own name and write the entry point
    beside it: (the package folder, for ``code_paths``; the entry point, for ``python_model``)."""
    files = model_package_files()
    package = destination / package_name(files)
    package.mkdir(parents=True)
    for path in files:
        shutil.copyfile(path, package / path.name)
    entry_point = destination / "entrypoint.py"
    entry_point.write_text(ENTRY_POINT.format(package=package.name))
    return str(package), entry_point


def example_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 ``[28, 28]`` image."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def input_example(image: np.ndarray) -> pd.DataFrame:
    """A one-row request: the given 28x28 digit as a base64 PNG, as a client sends it."""
    return pd.DataFrame({"image": [base64.b64encode(example_png(image)).decode("ascii")]})


@contextmanager
def _importable(folder: Path) -> Iterator[None]:
    """``folder`` on ``sys.path`` while MLflow logs the model: it runs the entry point then, to
    check it, and the staged package must import. (Its name is its content's hash, so leaving it
    imported in this process shadows nothing.)"""
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path.remove(str(folder))


@contextmanager
def _model_parts(network: torch.nn.Module, example_digit: np.ndarray, temperature: float) -> Iterator[dict]:
    """The keyword arguments of ``log_model``/``save_model``, staged in a temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        weights = tmp_path / "weights.pt"
        state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
        torch.save(state, weights)
        architecture = tmp_path / "architecture.json"
        # The temperature the logits are divided by: fitted after training (``train.calibration``).
        architecture.write_text(json.dumps(network.architecture() | {"temperature": temperature}))
        package, entry_point = stage_code(tmp_path / "code")
        with _importable(Path(package).parent):
            yield {
                "python_model": str(entry_point),
                "artifacts": {"weights": str(weights), "architecture": str(architecture)},
                "code_paths": [package],
                "signature": SIGNATURE,
                "input_example": input_example(example_digit),
                "pip_requirements": pip_requirements(),
            }


def log_model(
    network: torch.nn.Module, example_digit: np.ndarray, temperature: float = 1.0
) -> mlflow.models.model.ModelInfo:
    """Log ``network`` as the pyfunc under the active run's ``model`` artifact path."""
    with _model_parts(network, example_digit, temperature) as parts:
        return mlflow.pyfunc.log_model(name=ARTIFACT_PATH, **parts)


def save_model(network: torch.nn.Module, example_digit: np.ndarray, path: Path, temperature: float = 1.0) -> None:
    """Save ``network`` as the same pyfunc to a local folder (no tracking store involved)."""
    with _model_parts(network, example_digit, temperature) as parts:
        mlflow.pyfunc.save_model(path=str(path), **parts)
