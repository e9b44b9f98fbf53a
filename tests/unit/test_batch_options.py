"""The ``batch_score`` entry point and ``mnist-batch`` agree: one name and one default per option."""

from __future__ import annotations

from pathlib import Path

import yaml

from serve.batch.cli import build_parser
from serve.batch.options import output_format
from tests.helpers import PROJECT_ROOT


def batch_score() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "MLproject").read_text())["entry_points"]["batch_score"]


def options() -> dict:
    return {action.dest: action for action in build_parser()._actions}


def test_every_batch_score_parameter_reaches_mnist_batch_under_its_own_name():
    entry, flags = batch_score(), options()
    command = " ".join(entry["command"].split())
    for name in entry["parameters"]:
        assert f"--{name} {{{name}}}" in command, f"{name} is not passed as --{name}"
        assert name in flags, f"mnist-batch has no --{name}"


def test_batch_score_defaults_are_mnist_batchs_defaults():
    flags = options()
    for name, spec in batch_score()["parameters"].items():
        if "default" not in spec:
            continue
        action = flags[name]
        parsed = action.type(str(spec["default"])) if action.type else str(spec["default"])
        assert parsed == action.default, name


def test_the_output_format_follows_the_outputs_name_unless_given():
    assert output_format("auto", Path("scores.csv")) == "csv"
    assert output_format("auto", Path("out/Scores.CSV")) == "csv"
    assert output_format("auto", Path("scores.parquet")) == "parquet"
    assert output_format("auto", Path("scores/")) == "parquet"  # Spark's and the watch mode's folders
    assert output_format("parquet", Path("scores.csv")) == "parquet"
    assert output_format("csv", Path("scores.parquet")) == "csv"
