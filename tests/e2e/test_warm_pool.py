"""The warm backend mode in a real gateway process: backends forked from a preloaded pool follow
an alias move and come back after being killed, as spawned processes do."""

from __future__ import annotations

import os
import signal
import time

import pytest
from mlflow import MlflowClient

from tests.e2e.gateway_helpers import model_location, start_gateway


@pytest.fixture(scope="module")
def gateway(trained_store, tmp_path_factory):
    directory = tmp_path_factory.mktemp("warm")
    uri = trained_store.copy_to(directory)
    running = start_gateway(uri, directory, "--backend_mode", "warm", "--inference_log", str(directory / "log.db"))
    yield running
    assert running.stop() == 0


def test_warm_pool_backends_follow_an_alias_move_and_restart(gateway, trained_store):
    """The warm mode forks backends from a preloaded pool; moves and restarts work as with processes."""
    client = MlflowClient(gateway.uri, gateway.uri)
    v2 = str(client.create_model_version("mnist-cnn", model_location(client)).version)
    client.set_registered_model_alias("mnist-cnn", "champion", v2)
    deadline = time.monotonic() + 60
    while gateway.variants()["champion"]["version"] != v2 and time.monotonic() < deadline:
        time.sleep(0.2)
    champion = gateway.variants()["champion"]
    assert champion["version"] == v2 and champion["state"] == "ready"
    os.killpg(champion["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = gateway.variants()["champion"]
        if state["state"] == "ready" and state["pid"] != champion["pid"]:
            break
        time.sleep(0.2)
    assert state["restarts"] >= 1 and state["state"] == "ready"
