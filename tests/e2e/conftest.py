"""Real servers on free loopback ports, started the way a user starts them."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from mnist_mlops.train.export import log_model
from tests.fullmodel import full_network, full_temperature
from tests.helpers import free_port, start_process, stop_process, subprocess_env, wait_for_http


@pytest.fixture(scope="session")
def full_store(tmp_path_factory, mnist_test) -> str:
    """A SQLite store whose ``mnist-cnn`` v1 (champion) is the model from the full default training."""
    directory = tmp_path_factory.mktemp("full-store")
    uri = f"sqlite:///{directory / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    # Artifacts beside the store, not in ./mlruns of the checkout (the session's working folder).
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("full-model", (directory / "artifacts").as_uri()))
    with mlflow.start_run() as run:
        info = log_model(full_network(), mnist_test[0][0], full_temperature())
    client = MlflowClient(uri, uri)
    client.create_registered_model("mnist-cnn")
    version = client.create_model_version("mnist-cnn", info.model_uri, run.info.run_id, model_id=info.model_id)
    client.set_registered_model_alias("mnist-cnn", "champion", version.version)
    return uri


@pytest.fixture(scope="session")
def model_server(full_store, tmp_path_factory):
    """``mlflow models serve -m models:/mnist-cnn@champion --env-manager local`` on a free port."""
    port = free_port()
    log = tmp_path_factory.mktemp("model-server") / "server.log"
    process = start_process(
        [
            "mlflow",
            "models",
            "serve",
            "-m",
            "models:/mnist-cnn@champion",
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
            "--env-manager",
            "local",
        ],
        subprocess_env(full_store),
        log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/ping", process, timeout=180)
    except Exception:
        stop_process(process)
        raise AssertionError(log.read_text()[-3000:]) from None
    yield url
    stop_process(process)
