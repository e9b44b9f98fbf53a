"""Backend processes: one scoring server per model version, on a free loopback port.

Two ways to start one (``--backend_mode``), both serving MLflow's scoring protocol for a registry
model URI:

- ``mlflow``: ``mlflow models serve -m models:/NAME/VERSION --env-manager local``, the way a user
  starts it;
- ``warm``: forked from a warm pool that has imported everything already
  (``mnist_mlops.serve.warm_pool``), so a new version only loads its model; with several workers,
  MLflow's scoring app under uvicorn's workers (``python -m mnist_mlops.serve.backend``).

Backends given as URLs (``--backend alias=URL``) run elsewhere and are only health-checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass

import httpx

from mnist_mlops.common.cores import threads_each
from mnist_mlops.serve.gateway.state import Backend
from mnist_mlops.serve.model import THREADS_ENV

logger = logging.getLogger(__name__)

MODES = ("mlflow", "warm")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Spawned:
    """A backend process this gateway started itself (in its own session)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.pid = process.pid

    def alive(self) -> bool:
        return self.process.returncode is None

    def exit_status(self) -> str:
        return f"exited with {self.process.returncode}"

    async def wait(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
            return True
        except TimeoutError:
            return False


class Forked:
    """A backend forked by the warm pool (its child, reaped there; alive while its pid exists)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        try:  # a zombie not yet reaped by the pool is dead too
            with open(f"/proc/{self.pid}/stat") as stat:
                return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return True

    def exit_status(self) -> str:
        return "exited"

    async def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True


async def healthy(backend: Backend, client: httpx.AsyncClient) -> bool:
    if not backend.alive():
        return False
    try:
        return (await client.get(f"{backend.url}/ping", timeout=2.0)).status_code == 200
    except httpx.HTTPError:
        return False


async def wait_healthy(backend: Backend, client: httpx.AsyncClient, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not backend.alive():
            raise RuntimeError(f"backend for v{backend.version} {backend.exit_status()}")
        if await healthy(backend, client):
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"backend for v{backend.version} did not answer /ping within {timeout:.0f}s")


async def drain(backend: Backend, timeout: float) -> None:
    """Wait until the requests in flight on ``backend`` have finished (or ``timeout``)."""
    deadline = time.monotonic() + timeout
    while backend.in_flight > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def stop(backend: Backend, grace: float = 10.0) -> None:
    """Stop a backend's whole process group (``mlflow models serve`` runs uvicorn as a child, which
    outlives its parent when only the parent is killed); nothing for one that runs elsewhere."""
    handle = backend.handle
    if handle is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(handle.pid, signal.SIGTERM)
    if not await handle.wait(grace):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(handle.pid, signal.SIGKILL)
        await handle.wait(grace)


class WarmPool:
    """The gateway's handle on a ``serve.warm_pool`` process: started once, asked for backends."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.socket = os.path.join(tempfile.mkdtemp(prefix="mnist-pool-"), "pool.sock")
        self.process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    async def ensure_started(self) -> None:
        async with self._lock:
            if self.process is not None and self.process.returncode is None:
                return
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "mnist_mlops.serve.warm_pool",
                "--socket",
                self.socket,
                env=self.env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
            line = await asyncio.wait_for(self.process.stdout.readline(), 120)
            if line.strip() != b"ready":
                raise RuntimeError("the warm pool did not start")
            logger.info("warm pool ready (pid %d)", self.process.pid)

    async def fork(self, model_uri: str, port: int, log: str | None, env: dict[str, str] | None = None) -> Forked:
        """A backend forked from the pool, with ``env`` added to the pool's environment."""
        await self.ensure_started()
        reader, writer = await asyncio.open_unix_connection(self.socket)
        request = {"model_uri": model_uri, "host": "127.0.0.1", "port": port, "log": log, "env": env or {}}
        writer.write((json.dumps(request) + "\n").encode())
        await writer.drain()
        answer = json.loads(await asyncio.wait_for(reader.readline(), 30))
        writer.close()
        return Forked(int(answer["pid"]))

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.process.wait(), 10)


@dataclass
class Launcher:
    """How backends are started: the command, the environment, where their output goes."""

    model_name: str
    tracking_uri: str
    mode: str = "mlflow"
    workers: int = 1
    log_dir: str | None = None
    torch_threads: int | None = None
    """Torch threads in each backend process started from now on (``THREADS_ENV``), unless the
    caller's environment chooses; None: torch's default. Kept at the share of the cores by
    ``share_cores``."""
    pool: WarmPool | None = None

    def share_cores(self, backends: int) -> None:
        """Give the backends started from now on their share of the cores, for ``backends``
        backends started here (each with ``workers`` processes).

        Torch's default is a thread per core in every process, and the threads of several
        processes on the same cores spin against each other (``make bench``: the A/B split and
        two-worker gateways). A backend already running keeps its threads: torch fixes them at load.
        """
        self.torch_threads = threads_each(max(backends, 1) * self.workers)

    def thread_share(self) -> dict[str, str]:
        """``THREADS_ENV`` at the share of the cores, unless the caller chose: our variable or
        OpenMP's standard one, set in this process's environment."""
        if self.torch_threads and not (os.environ.get(THREADS_ENV) or os.environ.get("OMP_NUM_THREADS")):
            return {THREADS_ENV: str(self.torch_threads)}
        return {}

    def command(self, version: str, port: int) -> list[str]:
        uri = f"models:/{self.model_name}/{version}"
        # A warm pool forks one interpreter per backend; several workers need their own processes.
        if self.mode == "warm":
            return [
                sys.executable,
                "-m",
                "mnist_mlops.serve.backend",
                "--model_uri",
                uri,
                "--port",
                str(port),
                "--workers",
                str(self.workers),
            ]
        command = ["mlflow", "models", "serve", "-m", uri, "-p", str(port), "-h", "127.0.0.1", "--env-manager", "local"]
        return command + (["-w", str(self.workers)] if self.workers > 1 else [])

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        # The venv's tools first: `mlflow models serve` runs `uvicorn` from PATH.
        env["PATH"] = f"{os.path.dirname(sys.executable)}{os.pathsep}{env.get('PATH', '')}"
        env["MLFLOW_TRACKING_URI"] = self.tracking_uri
        env.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        env.update(self.thread_share())
        return env

    def _log_path(self, version: str, port: int) -> str | None:
        if not self.log_dir:
            return None
        os.makedirs(self.log_dir, exist_ok=True)
        return os.path.join(self.log_dir, f"backend-v{version}-{port}.log")

    async def start(self, version: str) -> Backend:
        port = free_port()
        log = self._log_path(version, port)
        if self.mode == "warm" and self.workers == 1:
            if self.pool is None:
                self.pool = WarmPool(self.environment())
            # The pool's environment is the one of its first backend: the share of now travels with the fork.
            handle = await self.pool.fork(f"models:/{self.model_name}/{version}", port, log, self.thread_share())
        else:
            output = open(log, "ab") if log else asyncio.subprocess.DEVNULL  # noqa: SIM115 - closed below
            process = await asyncio.create_subprocess_exec(
                *self.command(version, port),
                env=self.environment(),
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
            if log:
                output.close()
            handle = Spawned(process)
        logger.info(
            "started backend for %s v%s on port %d (pid %d, %s)", self.model_name, version, port, handle.pid, self.mode
        )
        return Backend(version=version, url=f"http://127.0.0.1:{port}", handle=handle)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.stop()
