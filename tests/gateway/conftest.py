"""Real backend processes for the in-process gateways of this folder: the session's tiny model as
v1 (champion) and v2 (challenger) of a store of their own, each served by
``python -m mnist_mlops.serve.backend`` (MLflow's scoring protocol) on a free port."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.gateway_helpers import two_version_store
from tests.gateway.harness import Keys, write_keys
from tests.helpers import free_port, start_process, stop_process, subprocess_env, wait_for_http


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass(frozen=True)
class Backends:
    store_uri: str
    urls: dict[str, str]  # alias -> URL of the backend serving the version the alias names
    directory: Path
    keys: Keys


@pytest.fixture(scope="module")
def backends(trained_store, tmp_path_factory) -> Backends:
    directory = tmp_path_factory.mktemp("backends")
    uri = two_version_store(trained_store, directory)
    processes, urls = [], {}
    try:
        for alias, version in (("champion", "1"), ("challenger", "2")):
            port = free_port()
            command = [sys.executable, "-m", "mnist_mlops.serve.backend", "--model_uri", f"models:/mnist-cnn/{version}"]
            log = directory / f"backend-{alias}.log"
            processes.append(start_process([*command, "--port", str(port)], subprocess_env(uri), log))
            urls[alias] = f"http://127.0.0.1:{port}"
        for process, url in zip(processes, urls.values(), strict=True):
            wait_for_http(f"{url}/ping", process, timeout=180)
        yield Backends(uri, urls, directory, write_keys(directory))
    finally:
        for process in processes:
            stop_process(process)
