"""Argument parsing shared by every command of the project (``mnist-train``, ``mnist-registry``,
``mnist-batch``, ``mnist-gateway``, ``mnist-replay``).

A usage error is one line (``prog: error: ...``) and exit status 2. Each option is spelled with
underscores, the way MLproject keys and logged params are, and also accepted with dashes. No
option may be abbreviated: argparse's prefix matching would take ``-P epoch=1`` (a typo in an
MLproject parameter) as ``--epochs 1`` and silently set another parameter.
"""

from __future__ import annotations

import argparse
import math
import sys


class OneLineArgumentParser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def add_option(parser: argparse.ArgumentParser, name: str, **kwargs) -> argparse.Action:
    """``--name_with_underscores`` (the name at every layer) and its dashed spelling."""
    flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    return parser.add_argument(*flags, **kwargs)


def whole_number(minimum: int, maximum: int | None = None):
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


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"true", "1", "yes", "on"}:
        return True
    if lowered in {"false", "0", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
