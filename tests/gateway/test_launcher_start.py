"""The local launcher fetches a version's files from the gateway's own store, whatever store the
environment names."""

from __future__ import annotations

import pytest

from mnist_mlops.serve.gateway.control.launcher import Launcher

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def store_uri(trained_store, tmp_path_factory) -> str:
    return trained_store.copy_to(tmp_path_factory.mktemp("launcher-fetch"))


async def test_a_version_is_fetched_from_the_gateways_store_not_the_environments(store_uri, tmp_path, monkeypatch):
    """``--tracking_uri`` names the store; ``$MLFLOW_TRACKING_URI`` may name another (or none).
    MLflow resolves a ``models:/`` URI in the environment's registry: fetched that way, this
    failed with "Registered Model with name=mnist-cnn not found" (another store's v1 otherwise)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    launcher = Launcher("mnist-cnn", store_uri)
    try:
        workdir = await launcher.fetch("1")
        assert (workdir / "model" / "MLmodel").is_file()
    finally:
        await launcher.close()
