"""The ``batch_score`` entry point and ``mnist-batch`` agree: one name and one default per option."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mnist_mlops.serve.batch.cli import READ_BY, build_parser, unread_option
from mnist_mlops.serve.batch.options import output_format
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


def unread(*argv: str) -> str | None:
    parser = build_parser()
    return unread_option(parser, parser.parse_args(["--output", "out", *argv]))


def test_the_mlproject_command_with_its_defaults_gives_no_option_its_way_of_running_ignores():
    entry = batch_score()
    values = {name: str(spec.get("default", "x")) for name, spec in entry["parameters"].items()}
    if "workers" in values:  # MLflow passes a float parameter as it is written, e.g. 0.0
        values["workers"] = str(float(values["workers"]))
    argv = entry["command"].split()[3:]  # after "python -m mnist_mlops.serve.batch"
    parser = build_parser()
    args = parser.parse_args([a.format(**values) for a in argv])
    assert unread_option(parser, args) is None
    for engine in ("pandas", "spark"):
        args.engine = engine
        assert unread_option(parser, args) is None, engine
    assert set(READ_BY) <= set(options())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--input", "in", "--master", "spark://host:7077"], "--master applies only to --engine spark"),
        (["--input", "in", "--env_manager", "conda"], "--env_manager applies only to --engine spark"),
        (["--input", "in", "--engine", "spark", "--workers", "2"], "--workers applies only to the pandas engine"),
        (["--input", "in", "--engine", "spark", "--chunk_rows", "8"], "--chunk_rows applies only to the pandas"),
        (["--input", "in", "--poll_seconds", "3"], "--poll_seconds applies only to --watch"),
        (["--watch", "in", "--input", "in"], "--input applies only to scoring an input once"),
        (["--watch", "in", "--engine", "spark"], "--engine applies only to scoring an input once"),
        (["--watch", "in", "--overwrite"], "--overwrite applies only to scoring an input once"),
        (["--watch", "in", "--workers", "2"], "--workers applies only to the pandas engine"),
    ],
)
def test_an_option_the_chosen_way_of_running_would_ignore_is_a_usage_error(argv, message):
    assert message in unread(*argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["--input", "in", "--workers", "2", "--chunk_rows", "8", "--overwrite"],
        ["--input", "in", "--engine", "spark", "--master", "local[2]", "--env_manager", "virtualenv"],
        ["--watch", "in", "--chunk_rows", "8", "--poll_seconds", "2", "--settle_seconds", "0"],
    ],
)
def test_options_each_way_of_running_reads_are_taken(argv):
    assert unread(*argv) is None
