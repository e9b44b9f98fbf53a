"""The local launcher's start-up: the warm pool starts before the first backend is asked for
(``Launcher.prepare``) and the first backend is forked from that same pool; a pool that fails to
start leaves nothing behind and is started afresh by the next call; a version's files come from
the gateway's own store whatever the environment names; ``mnist-gateway`` starts the pool before
its own heavy imports, and leaves none behind when it refuses to start or is stopped meanwhile; a
pool, and the backends forked from it, stop when the gateway is gone."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from mnist_mlops.serve.gateway.control import launcher as launcher_module
from mnist_mlops.serve.gateway.control.launcher import Launcher, stop
from tests.helpers import free_port, running, subprocess_env, wait_for_http

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def store_uri(trained_store, tmp_path_factory) -> str:
    return trained_store.copy_to(tmp_path_factory.mktemp("launcher-start"))


async def test_the_pool_started_ahead_is_the_one_the_first_backend_forks_from(store_uri):
    launcher = Launcher("mnist-cnn", store_uri, mode="warm")
    try:
        await launcher.prepare()
        pool = launcher.pool.process
        assert pool is not None and pool.poll() is None  # ready: it printed so
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
        assert launcher.pool.process is not None and launcher.pool.process.poll() is None
        assert launcher.pool.process.pid != first and os.path.exists(launcher.pool.socket)
    finally:
        await launcher.close()


# Run by `mnist-gateway`'s own functions in a fresh interpreter: what it has imported when the
# pool starts, and whether it starts one at all.
POOL_AHEAD = """
import asyncio, json, os, sys
from mnist_mlops.serve.gateway import cli
launcher = cli.pool_ahead(cli.settings_from(cli.build_parser().parse_args(sys.argv[1:])))
pool = launcher.pool.process if launcher.pool else None
imported = sorted(name for name in ("mlflow", "torch", "fastapi", "uvicorn") if name in sys.modules)
ready = None
if pool is not None:
    asyncio.run(launcher.pool.ensure_started())
    ready = launcher.pool.process is pool
launcher.close_now()
print(json.dumps({"imported": imported, "pool": pool.pid if pool else None, "ready": ready,
                  "directory_left": bool(launcher.directory and os.path.exists(launcher.directory))}))
"""


def _pool_ahead(store_uri: str, *options: str) -> dict:
    # This machine's interpreter is out of reach of the default backend user when the suite runs as root.
    command = [sys.executable, "-c", POOL_AHEAD, "--no_auth", "--tracking_uri", store_uri, "--backend_user", "root"]
    command += options
    result = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_command_line_starts_the_pool_before_it_imports_mlflow(store_uri):
    started = _pool_ahead(store_uri, "--backend_mode", "warm")
    assert started["pool"] is not None and started["imported"] == []
    assert started["ready"]  # the pool the gateway waits for is the one started ahead
    assert not running(started["pool"]) and not started["directory_left"]  # close_now leaves nothing


def test_no_pool_ahead_where_no_backend_is_forked_at_once(store_uri):
    assert _pool_ahead(store_uri, "--backend_mode", "mlflow")["pool"] is None
    assert _pool_ahead(store_uri, "--backend_mode", "warm", "--min_replicas", "0")["pool"] is None
    assert _pool_ahead(store_uri, "--backend_mode", "warm", "--backend_workers", "2")["pool"] is None
    external = ["--backend", "champion=http://127.0.0.1:9"]
    assert _pool_ahead(store_uri, "--backend_mode", "warm", *external)["pool"] is None


def test_a_gateway_that_refuses_to_start_leaves_no_pool_behind(store_uri, tmp_path):
    """The pool starts before the key file is read; the refusal kills it and removes its directory."""
    keys = tmp_path / "keys.toml"
    keys.write_text("[[keys]]\nname = 'svc'\n")  # no role, no hash
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    command = [sys.executable, "-m", "mnist_mlops.serve.gateway", "--api_keys", str(keys), "--backend_mode", "warm"]
    command += ["--tracking_uri", store_uri, "--port", str(free_port()), "--backend_user", "root"]
    result = subprocess.run(
        command, env=subprocess_env(TMPDIR=str(scratch)), capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"mnist-gateway: error: {keys}: each [[keys]] needs a name, a role (predict, labeler, admin) and a sha256"
    ]
    assert list(scratch.iterdir()) == []  # the backends' private directory, pool socket and all
    assert _processes_naming(str(scratch)) == []


def _processes_naming(text: str) -> list[int]:
    return [p.pid for p in psutil.process_iter(["cmdline"]) if text in " ".join(p.info["cmdline"] or [])]


def test_a_gateway_stopped_while_its_pool_starts_leaves_nothing_behind(store_uri, tmp_path):
    """SIGTERM in the second between the pool's start and uvicorn's own handlers (the gateway's
    imports): the command still kills its pool and removes its directory."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    command = [sys.executable, "-m", "mnist_mlops.serve.gateway", "--no_auth", "--backend_mode", "warm"]
    command += ["--tracking_uri", store_uri, "--port", str(free_port()), "--backend_user", "root"]
    gateway = subprocess.Popen(
        command, env=subprocess_env(TMPDIR=str(scratch)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while not _processes_naming(f"{scratch}/") and time.monotonic() < deadline:
            time.sleep(0.01)
        pools = _processes_naming(f"{scratch}/")
        assert pools, "the gateway started no pool"
        gateway.terminate()
        _, stderr = gateway.communicate(timeout=60)
    finally:
        gateway.kill()
    assert gateway.returncode in (0, 128 + 15) and b"Traceback" not in stderr, stderr.decode()[-2000:]
    assert not any(running(pid) for pid in pools) and list(scratch.iterdir()) == []


# The stop signal lands at the worst moment: the pool's process exists, Popen has not returned.
# The command's own handler (it raises SystemExit) and its own cleanup, as in `mnist-gateway`.
STOPPED_INSIDE_POPEN = """
import os, signal, subprocess, sys
from pathlib import Path
from mnist_mlops.serve.gateway import cli
from mnist_mlops.serve.gateway.control import launcher as launcher_module
from mnist_mlops.serve.gateway.control.launcher import WarmPool

real_popen = subprocess.Popen
def popen_then_stopped(*args, **kwargs):
    process = real_popen(*args, **kwargs)
    print(process.pid, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    return process
launcher_module.subprocess.Popen = popen_then_stopped
signal.signal(signal.SIGTERM, cli._exit_on_signal)
pool = WarmPool(dict(os.environ), Path(sys.argv[1]))
try:
    pool.spawn()
    print("not stopped", flush=True)
finally:
    pool.kill()
"""


def test_a_stop_signal_inside_the_pools_popen_still_finds_the_pool_to_kill(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", STOPPED_INSIDE_POPEN, str(tmp_path)],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 128 + 15 and "Traceback" not in result.stderr, result.stderr[-2000:]
    (pool,) = map(int, result.stdout.split())  # stopped before "not stopped": at spawn's end
    assert not running(pool)


def test_a_pool_started_while_the_stop_signals_were_held_still_obeys_sigterm(tmp_path):
    """The signal mask outlives exec: the pool unblocks it, or the gateway's SIGTERM would wait."""
    pool = launcher_module.WarmPool(subprocess_env(), tmp_path)
    pool.spawn()
    try:
        os.killpg(pool.process.pid, signal.SIGTERM)  # during its imports, before it is ready
        assert pool.process.wait(timeout=60) == -signal.SIGTERM
    finally:
        pool.kill()


def test_a_pool_whose_gateway_is_gone_exits(tmp_path):
    """A gateway killed outright (SIGKILL: no cleanup of its own) leaves no warm pool running."""
    starter = (
        "import subprocess, sys\n"
        "pool = subprocess.Popen([sys.executable, '-m', 'mnist_mlops.serve.warm_pool', '--socket', sys.argv[1]],\n"
        "                        stdout=subprocess.PIPE, start_new_session=True)\n"
        "assert pool.stdout.readline().strip() == b'ready'\n"
        "print(pool.pid, flush=True)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", starter, str(tmp_path / "pool.sock")],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    pool = int(result.stdout.split()[0])
    deadline = time.monotonic() + 60
    while running(pool) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running(pool)


def test_a_gateway_killed_outright_leaves_no_pool_and_no_backend(store_uri):
    """SIGKILL (the OOM killer) runs none of the gateway's cleanup: the pool and the backend forked
    from it see their gateway gone and stop on their own."""
    # Short: the backend's Unix socket lives under it, and a socket path has at most 107 bytes.
    scratch = Path(tempfile.mkdtemp(prefix="gw-", dir="/tmp"))
    port = free_port()
    command = [sys.executable, "-m", "mnist_mlops.serve.gateway", "--no_auth", "--backend_mode", "warm"]
    command += ["--tracking_uri", store_uri, "--port", str(port), "--backend_user", "root"]
    # The suite's model is a small training: judged by the follow gate against 0.5, not the production 0.97.
    command += ["--follow_gate_min_accuracy", "0.5", "--follow_gate_samples", "500"]
    gateway = subprocess.Popen(
        command, env=subprocess_env(TMPDIR=str(scratch)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ready", gateway, timeout=240)
        started = _processes_naming(f"{scratch}/")  # a fork keeps the pool's command line
        assert len(started) == 2, started  # the pool and the champion's backend
    finally:
        gateway.kill()
        gateway.wait()
    deadline = time.monotonic() + 60
    while any(running(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    shutil.rmtree(scratch, ignore_errors=True)
    assert not any(running(pid) for pid in started)
