"""The training parameters: one name per parameter at every layer.

The MLproject key, the command-line flag and the logged MLflow param are spelled alike
(``batch_size`` everywhere). MLproject types are ``float``/``string`` only and MLflow does not check
them, so every value is validated here and a bad one stops with a single readable line.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass

from train.data import DATA_DIR_ENV

DEFAULT_MODEL_NAME = "mnist-cnn"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 128
    lr: float = 0.1
    weight_decay: float = 5e-4
    seed: int = 42
    val_samples: int = 5000
    data_dir: str = ""
    max_train_samples: int = 0
    model_name: str = DEFAULT_MODEL_NAME
    register: bool = True

    def as_params(self) -> dict[str, str]:
        return {key: str(value) for key, value in asdict(self).items()}


HELP = {
    "epochs": "passes over the training split",
    "batch_size": "images per optimisation step",
    "lr": "peak learning rate of the one-cycle schedule (SGD with Nesterov momentum)",
    "weight_decay": "L2 weight decay",
    "seed": "seeds the validation split, data order, augmentation and initial weights",
    "val_samples": "training images held out for validation (the test set is used only at the end)",
    "data_dir": f"MNIST root in torchvision's layout; empty means ${DATA_DIR_ENV} or ./data",
    "max_train_samples": "cap on training images, 0 for all (the fast mode for tests and CI)",
    "model_name": "registered model that receives the new version",
    "register": "register the model as a new version (true/false)",
}


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``train: error: ...``) and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def _integer(minimum: int, maximum: int | None = None):
    """A whole number in range; "12.0" is accepted because MLflow's ``float`` params look like it."""

    def parse(text: str) -> int:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        in_range = value >= minimum and (maximum is None or value <= maximum)
        if not value.is_integer() or not in_range:
            bound = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
            raise argparse.ArgumentTypeError(f"expected a whole number {bound}, got {text!r}")
        return int(value)

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    value = 0.0 if text.strip() in {"0", "0.0"} else _positive_float(text)
    return value


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"true", "1", "yes", "on"}:
        return True
    if lowered in {"false", "0", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _model_name(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a registered model name, got an empty string")
    return text.strip()


PARSERS = {
    "epochs": _integer(1),
    "batch_size": _integer(1),
    "lr": _positive_float,
    "weight_decay": _non_negative_float,
    "seed": _integer(0),
    "val_samples": _integer(1, maximum=59_999),
    "data_dir": str,
    "max_train_samples": _integer(0),
    "model_name": _model_name,
    "register": _boolean,
}


def build_parser(prog: str = "mnist-train") -> argparse.ArgumentParser:
    defaults = TrainConfig()
    parser = OneLineArgumentParser(
        prog=prog, description="Train the MNIST CNN, track the run in MLflow and register it."
    )
    for name, parse in PARSERS.items():
        default = getattr(defaults, name)
        shown = "true" if default is True else ("''" if default == "" else default)
        parser.add_argument(f"--{name}", type=parse, default=default, help=f"{HELP[name]} (default: {shown})")
    return parser


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    args = build_parser().parse_args(argv)
    return TrainConfig(**vars(args))
