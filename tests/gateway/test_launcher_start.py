"""The local launcher's start-up: the warm pool starts before the first backend is asked for
(``Launcher.prepare``) and the first backend is forked from that same pool; a pool that fails to
start leaves nothing behind and is started afresh by the next call; a version's files come from
the gateway's own store whatever the environment names."""

from __future__ import annotations

import os
import sys
import time

import psutil
import pytest

from mnist_mlops.serve.gateway.control import launcher as launcher_module
from mnist_mlops.serve.gateway.control.launcher import Launcher, stop
from tests.helpers import running

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def store_uri(trained_store, tmp_path_factory) -> str:
    return trained_store.copy_to(tmp_path_factory.mktemp("launcher-start"))


async def test_the_pool_started_ahead_is_the_one_the_first_backend_forks_from(store_uri):
    launcher = Launcher("mnist-cnn", store_uri, mode="warm")
    try:
        await launcher.prepare()
        pool = launcher.pool.process
        assert pool is not None and pool.returncode is None  # ready: it printed so
        backend = await launcher.start("1")
        try:
            assert launcher.pool.process is pool  # not a second pool
            assert psutil.Process(backend.handle.pid).ppid() == pool.pid
            # Its own process group when the pool answers, so a stop at once reaches it (killpg);
            # before, a stop that quick signalled no group and waited out its grace.
            assert os.getpgid(backend.handle.pid) == backend.handle.pid
        finally:
            await stop(backend)
    finally:
        await launcher.close()


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


async def test_nothing_to_prepare_where_backends_are_not_forked(store_uri):
    launcher = Launcher("mnist-cnn", store_uri, mode="mlflow")
    await launcher.prepare()
    assert launcher.pool is None
    two_workers = Launcher("mnist-cnn", store_uri, mode="warm", workers=2)
    await two_workers.prepare()
    assert two_workers.pool is None


async def test_a_pool_that_does_not_start_is_stopped_and_started_afresh(store_uri, tmp_path, monkeypatch, caplog):
    # An interpreter that says something other than "ready" and then hangs: a pool that broke.
    broken = tmp_path / "python"
    pids = tmp_path / "pids"
    broken.write_text(f'#!/bin/sh\necho $$ >> {pids}\necho "ImportError: no torch"\nexec sleep 600\n')
    broken.chmod(0o755)
    python = sys.executable
    monkeypatch.setattr(launcher_module.sys, "executable", str(broken))
    launcher = Launcher("mnist-cnn", store_uri, mode="warm")
    try:
        await launcher.prepare()  # does not raise: the first fork will try again and report
        assert "did not start ahead of the first backend" in caplog.text
        assert launcher.pool.process is None
        first = int(pids.read_text().split()[0])
        deadline = time.monotonic() + 10
        while running(first) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running(first)  # killed, not left hanging beside the next one
        monkeypatch.setattr(launcher_module.sys, "executable", python)
        await launcher.prepare()
        assert launcher.pool.process is not None and launcher.pool.process.returncode is None
        assert launcher.pool.process.pid != first and os.path.exists(launcher.pool.socket)
    finally:
        await launcher.close()
