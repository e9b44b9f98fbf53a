"""Parameter validation: every bad value stops with one line naming the flag and what is accepted."""

import subprocess
import sys

import pytest

from mnist_mlops.train.config import TrainConfig, parse_config
from tests.helpers import PROJECT_ROOT, subprocess_env


def test_defaults_are_the_documented_ones():
    assert parse_config([]) == TrainConfig()


def test_mlflow_float_params_are_accepted_as_whole_numbers():
    config = parse_config(["--epochs", "3.0", "--batch_size", "64", "--register", "false"])
    assert config.epochs == 3 and config.batch_size == 64 and config.register is False


@pytest.mark.parametrize(
    ("argv", "flag", "accepted"),
    [
        (["--epochs", "-1"], "--epochs", "whole number >= 1"),
        (["--epochs", "ten"], "--epochs", "whole number"),
        (["--epochs", "1.5"], "--epochs", "whole number"),
        (["--lr", "fast"], "--lr", "a number"),
        (["--lr", "0"], "--lr", "positive"),
        (["--lr", "inf"], "--lr", "positive finite"),
        (["--batch_size", "0"], "--batch_size", ">= 1"),
        (["--val_samples", "60000"], "--val_samples", "from 1 to 59999"),
        (["--register", "maybe"], "--register", "true or false"),
        (["--model_name", " "], "--model_name", "registered model name"),
        (["--no_such_flag", "1"], "unrecognized arguments", ""),
    ],
)
def test_invalid_parameters_exit_2_with_one_line(capsys, argv, flag, accepted):
    with pytest.raises(SystemExit) as stop:
        parse_config(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert flag in err and accepted in err


def test_the_cli_reports_a_bad_parameter_in_one_line_and_exits_non_zero():
    result = subprocess.run(
        [sys.executable, "-m", "mnist_mlops.train", "--epochs", "-3"],
        cwd=PROJECT_ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("mnist-train: error: argument --epochs")
