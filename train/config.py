"""The training parameters: one name per parameter at every layer.

The MLproject key, the command-line flag and the logged MLflow param are spelled alike
(``batch_size`` everywhere). MLproject types are ``float``/``string`` only and MLflow does not check
them, so every value is validated here and a bad one stops with a single readable line.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

from mnist_mlops.common.cli import OneLineArgumentParser, boolean, non_negative_float, positive_float, whole_number
from mnist_mlops.common.names import DATA_DIR_ENV, DEFAULT_MODEL_NAME
from mnist_mlops.registry.defaults import DEFAULT_MIN_ACCURACY


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
    card_samples: int = 300
    champion_gate: float = DEFAULT_MIN_ACCURACY

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
    "card_samples": "images per evaluation set in the run's model card (0: no card)",
    "champion_gate": "lowest test accuracy at which a model's first version becomes champion (the promotion gate's)",
}


def _model_name(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a registered model name, got an empty string")
    return text.strip()


def unit_fraction(text: str) -> float:
    value = non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}")
    return value


PARSERS = {
    "epochs": whole_number(1),
    "batch_size": whole_number(1),
    "lr": positive_float,
    "weight_decay": non_negative_float,
    "seed": whole_number(0),
    "val_samples": whole_number(1, maximum=59_999),
    "data_dir": str,
    "max_train_samples": whole_number(0),
    "model_name": _model_name,
    "register": boolean,
    "card_samples": whole_number(0),
    "champion_gate": unit_fraction,
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
