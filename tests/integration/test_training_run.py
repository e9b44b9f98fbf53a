"""The real ``mlflow run . --env-manager local`` (once per session): what the run logs and registers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from torchvision.datasets import MNIST

from mnist_mlops.train.config import PARSERS, TrainConfig
from mnist_mlops.train.data import fingerprint
from tests.helpers import PROJECT_ROOT


def mlproject() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "MLproject").read_text())


def test_every_mlproject_parameter_reaches_the_script_under_its_own_name():
    entry = mlproject()["entry_points"]["main"]
    command = " ".join(entry["command"].split())
    assert set(entry["parameters"]) == set(PARSERS), "MLproject and train/config.py declare the same params"
    for name in entry["parameters"]:
        assert f"--{name} {{{name}}}" in command, f"{name} is not passed as --{name}"


def test_mlproject_defaults_match_the_scripts_defaults():
    defaults = TrainConfig()
    for name, spec in mlproject()["entry_points"]["main"]["parameters"].items():
        parsed = PARSERS[name](str(spec["default"]))
        assert parsed == getattr(defaults, name), name


def test_every_parameter_given_to_mlflow_run_reaches_the_script_and_is_logged(trained_store, mnist_root):
    run = trained_store.client().get_run(trained_store.run_id)
    parsed_by_the_script = json.loads(run.data.tags["train_config"])
    assert set(parsed_by_the_script) == set(PARSERS)
    for name, value in trained_store.params.items():
        assert parsed_by_the_script[name] == PARSERS[name](value), name
        assert PARSERS[name](run.data.params[name]) == PARSERS[name](value), name
    assert set(PARSERS) <= set(run.data.params)
    assert run.data.params["train_samples"] == trained_store.params["max_train_samples"]
    # data_dir was empty: it resolves from MNIST_DATA_DIR, and the folder used is logged beside it.
    assert run.data.params["data_dir"] in ("", "''")
    assert run.data.params["data_dir_resolved"] == str(mnist_root)
    assert run.info.status == "FINISHED"


def test_the_run_logs_curves_per_epoch_and_final_test_figures(trained_store):
    client = trained_store.client()
    epochs = int(trained_store.params["epochs"])
    for metric in ("train_loss", "val_loss", "val_accuracy"):
        history = client.get_metric_history(trained_store.run_id, metric)
        assert [m.step for m in history] == list(range(1, epochs + 1)), metric
    metrics = client.get_run(trained_store.run_id).data.metrics
    assert metrics["test_accuracy"] > 0.9
    for digit in range(10):
        assert 0 <= metrics[f"test_precision_{digit}"] <= 1
        assert 0 <= metrics[f"test_recall_{digit}"] <= 1
    assert 0 < metrics["tracking_overhead_fraction"] < 1


def test_the_run_logs_pictures_a_person_can_open(trained_store, tmp_path):
    client = trained_store.client()
    names = {a.path for a in client.list_artifacts(trained_store.run_id, "plots")}
    assert names == {"plots/learning_curves.png", "plots/confusion_matrix.png", "plots/misclassified.png"}
    for name in names:
        local = client.download_artifacts(trained_store.run_id, name, str(tmp_path))
        with Image.open(local) as picture:
            assert picture.format == "PNG" and min(picture.size) > 200


def test_the_run_is_tagged_with_the_data_fingerprint_and_the_git_commit(trained_store, mnist_root):
    tags = trained_store.client().get_run(trained_store.run_id).data.tags
    assert tags["dataset_fingerprint"] == fingerprint(mnist_root)[0]
    assert tags["dataset_verified"] == "true"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    if head.returncode == 0:
        assert tags["mlflow.source.git.commit"] == head.stdout.strip()


def test_the_run_registers_version_1_as_challenger_and_first_champion(trained_store):
    client = trained_store.client()
    version = client.get_model_version(trained_store.model_name, "1")
    assert set(version.aliases) == {"challenger", "champion"}
    assert version.run_id == trained_store.run_id
    assert version.tags["run_id"] == trained_store.run_id
    assert float(version.tags["test_accuracy"]) > 0.9
    assert len(version.tags["dataset_fingerprint"]) == 64
    assert version.current_stage == "Production"


def test_the_challenger_loads_by_alias_and_predicts(trained_store, mnist_root):
    mlflow.set_tracking_uri(trained_store.uri)
    model = mlflow.pyfunc.load_model(f"models:/{trained_store.model_name}@challenger")
    test = MNIST(str(mnist_root), train=False)
    images, labels = test.data[:300].numpy(), test.targets[:300].numpy()
    frame = pd.DataFrame({"pixels": [image.ravel().tolist() for image in images]})
    predictions = model.predict(frame)
    assert list(predictions.columns) == ["label", "confidence", "probabilities", "uncertain"]
    assert (predictions["label"].to_numpy() == labels).mean() > 0.85
    sums = np.array([sum(p) for p in predictions["probabilities"]])
    np.testing.assert_allclose(sums, 1.0, atol=1e-9)


def test_the_logged_model_has_a_signature_and_an_input_example(trained_store):
    mlflow.set_tracking_uri(trained_store.uri)
    info = mlflow.models.get_model_info(f"models:/{trained_store.model_name}/1")
    assert [c["name"] for c in info.signature.inputs.to_dict()] == ["image", "pixels"]
    assert {c["name"] for c in info.signature.outputs.to_dict()} >= {"label", "confidence", "probabilities"}
    assert info.saved_input_example_info is not None


@pytest.mark.parametrize("form", ["pixels", "image"])
def test_the_input_example_scores(trained_store, form):
    mlflow.set_tracking_uri(trained_store.uri)
    model = mlflow.pyfunc.load_model(f"models:/{trained_store.model_name}/1")
    example = model.input_example
    assert example is not None and "image" in example.columns
    assert len(model.predict(example)) == 1


def test_the_run_logs_a_model_card_over_every_evaluation_set(trained_store):
    """The card: the served model's figures on each set, as artifacts and as metrics."""
    client = trained_store.client()
    card = json.loads(Path(client.download_artifacts(trained_store.run_id, "model_card.json")).read_text())
    assert [row["name"] for row in card] == ["mnist-png", "writers", "canvas", "faint", "paper", "nodigit"]
    assert all(0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["refused"] <= 1.0 for row in card)
    assert card[0]["count"] == 10_000 and card[1]["count"] == 20
    metrics = client.get_run(trained_store.run_id).data.metrics
    wanted = {"card_writers_accuracy", "card_nodigit_refused", "card_faint_ece", "temperature", "test_ece"}
    assert wanted <= set(metrics)
    assert metrics["temperature"] > 0
    markdown = Path(client.download_artifacts(trained_store.run_id, "model_card.md")).read_text()
    assert "| writers | 20 |" in markdown
