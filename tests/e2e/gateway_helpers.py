"""Starting real gateways for tests: a store with two real versions, keys, a gateway process."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from mnist_mlops.serve.gateway.auth import new_key_entry
from mnist_mlops.serve.gateway.limits import Limits
from tests.helpers import free_port, start_process, stop_process, subprocess_env, wait_for_http

PIXELS = {
    "dataframe_split": {
        "columns": ["pixels"],
        "data": [[" ".join(["0"] * 300 + ["255"] * 184 + ["0"] * 300)]],
    }
}


@dataclass
class RunningGateway:
    url: str
    process: subprocess.Popen
    log: Path
    predict_key: str
    admin_key: str
    uri: str
    keys: dict[str, str]  # name -> key: every key in its keys file (``write_keys``)

    def headers(self, key: str | None = None, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.predict_key}", **extra}

    def variants(self) -> dict[str, dict]:
        answer = httpx.get(f"{self.url}/variants", headers=self.headers(self.admin_key), timeout=10)
        return {v["alias"]: v for v in answer.json()["variants"]}

    def wait_for_variant(self, alias: str, timeout: float = 120.0) -> None:
        """Until ``alias`` has a ready backend. ``/ready`` waits only for the variants that take
        live traffic: a shadow (weight 0) starts alongside them and may come up later."""
        deadline = time.monotonic() + timeout
        while self.variants().get(alias, {}).get("state") != "ready":
            assert time.monotonic() < deadline, f"{alias} not ready after {timeout:.0f} s: {self.variants()}"
            time.sleep(0.25)

    def stop(self) -> int:
        return stop_process(self.process)


def samples(metrics: str, name: str, **labels: str) -> list[Sample]:
    """The samples called ``name`` (``x_sum``, ``x_bucket``...) in a ``/metrics`` text whose labels
    include ``labels``, read with prometheus-client's own parser."""
    return [
        sample
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    ]


def two_version_store(trained_store, directory: Path) -> str:
    """A copy of the session store where v1 is the champion and v2 (same training) the challenger."""
    uri = trained_store.copy_to(directory)
    client = MlflowClient(uri, uri)
    v2 = client.create_model_version("mnist-cnn", model_location(client), trained_store.run_id)
    client.set_registered_model_alias("mnist-cnn", "champion", "1")
    client.set_registered_model_alias("mnist-cnn", "challenger", str(v2.version))
    return uri


def store_with(trained_store, directory, champion, challenger) -> str:
    """A store whose champion and challenger are the given real models ("tiny" or "weak"/LoggedModel)."""
    uri = trained_store.copy_to(directory)
    client = MlflowClient(uri, uri)
    sources = {}
    for alias, model in (("champion", champion), ("challenger", challenger)):
        source = model_location(client) if model == "tiny" else model.source
        version = str(client.create_model_version("mnist-cnn", source).version)
        client.set_registered_model_alias("mnist-cnn", alias, version)
        sources[alias] = version
    return uri


def model_location(client: MlflowClient) -> str:
    """Where v1's model files are: a source a new version can be registered from."""
    v1 = client.get_model_version("mnist-cnn", "1")
    return client.get_logged_model(v1.model_id or v1.source.removeprefix("models:/")).artifact_location


KEYS = {
    "svc-predict": ("predict", None),
    "ops-admin": ("admin", None),
    "other-client": ("predict", None),  # a second client, for what one key must not do to another's
    "ground-truth": ("labeler", None),
    "throttled": ("predict", Limits(rate_per_minute=3)),  # a burst of 3, then one request per 20 s
    "metered": ("predict", Limits(images_per_day=5)),  # a quota: five images a UTC day
}


def write_keys(directory: Path) -> tuple[Path, dict[str, str]]:
    """A keys file holding ``KEYS``; (its path, name -> key)."""
    path, keys, entries = directory / "keys.toml", {}, ""
    for name, (role, limits) in KEYS.items():
        keys[name], entry = new_key_entry(name, role, limits)
        entries += entry
    path.write_text(entries)
    return path, keys


def start_gateway(
    uri: str,
    directory: Path,
    *extra: str,
    scheme: str = "http",
    verify=True,
    unset: tuple[str, ...] = (),
    environment: dict[str, str] | None = None,
    keys: tuple[Path, dict[str, str]] | None = None,
) -> RunningGateway:
    """A gateway process on a free port, ready; ``unset`` names variables of the suite's environment
    it does not inherit, ``environment`` adds some; ``keys`` (``write_keys``' answer) shares one
    keys file between replicas, else each gets its own."""
    keys_file, keys = keys or write_keys(directory)
    port = free_port()
    log = directory / f"gateway-{port}.log"
    process = start_process(
        [
            sys.executable,
            "-m",
            "mnist_mlops.serve.gateway",
            "--api_keys",
            str(keys_file),
            "--port",
            str(port),
            "--log_dir",
            str(directory / "backends"),
            # This machine's interpreter lives under /root, out of reach of an unprivileged backend
            # user; tests/e2e/test_attacks.py covers the default (docs/security.md).
            "--backend_user",
            "root",
            # The suite's models are small trainings (about 95%): the gate on follow judges them
            # on how far a new version trails the old, not on the production bar of 0.97.
            "--follow_gate_min_accuracy",
            "0.5",
            "--follow_gate_samples",
            "500",
            *extra,
        ],
        {name: value for name, value in subprocess_env(uri).items() if name not in unset} | (environment or {}),
        log,
        cwd=directory,  # where its relative defaults (the inference log) land, not the checkout
    )
    url = f"{scheme}://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/ready", process, timeout=240) if verify is True else _wait_tls(url, verify, process)
    except Exception:
        stop_process(process)
        raise AssertionError(log.read_text()[-4000:]) from None
    return RunningGateway(url, process, log, keys["svc-predict"], keys["ops-admin"], uri, keys)


def _wait_tls(url: str, verify, process) -> None:
    import time

    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert process.poll() is None, "gateway exited"
        try:
            if httpx.get(f"{url}/ready", verify=verify, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError(url)
