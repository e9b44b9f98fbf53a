"""Backend processes: one scoring server per model version, on a free loopback port.

A backend is started the way a user starts it (``mlflow models serve -m models:/NAME/VERSION
--env-manager local``) or, in ``fast`` mode, as MLflow's own scoring app under uvicorn without
the ``mlflow`` CLI in front (``serve.backend``: the same protocol and model, a shorter start).
Backends given as URLs (``--backend alias=URL``) run elsewhere and are only health-checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

import httpx

logger = logging.getLogger(__name__)

MODES = ("mlflow", "fast")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Backend:
    """A scoring server for one model version."""

    version: str
    url: str
    process: asyncio.subprocess.Process | None = None  # None for a backend that runs elsewhere
    started: float = field(default_factory=time.monotonic)
    in_flight: int = 0  # requests being answered by this backend right now

    @property
    def managed(self) -> bool:
        return self.process is not None

    def alive(self) -> bool:
        return self.process is None or self.process.returncode is None

    async def healthy(self, client: httpx.AsyncClient) -> bool:
        if not self.alive():
            return False
        try:
            return (await client.get(f"{self.url}/ping", timeout=2.0)).status_code == 200
        except httpx.HTTPError:
            return False

    async def wait_healthy(self, client: httpx.AsyncClient, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"backend for v{self.version} exited with {self.process.returncode}")
            if await self.healthy(client):
                return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"backend for v{self.version} did not answer /ping within {timeout:.0f}s")

    async def drain(self, timeout: float) -> None:
        """Wait until the requests in flight on this backend have finished (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        while self.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop the backend's whole process group (``mlflow models serve`` runs uvicorn as a child,
        which outlives its parent when only the parent is killed)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGTERM)
        if self.process.returncode is not None:
            return
        try:
            await asyncio.wait_for(self.process.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            await self.process.wait()


@dataclass(frozen=True)
class Launcher:
    """How backends are started: the command, the environment, where their output goes."""

    model_name: str
    tracking_uri: str
    mode: str = "mlflow"
    workers: int = 1
    log_dir: str | None = None

    def command(self, version: str, port: int) -> list[str]:
        uri = f"models:/{self.model_name}/{version}"
        if self.mode == "fast":
            return [
                sys.executable,
                "-m",
                "serve.backend",
                "--model_uri",
                uri,
                "--port",
                str(port),
                "--workers",
                str(self.workers),
            ]
        command = [
            "mlflow",
            "models",
            "serve",
            "-m",
            uri,
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
            "--env-manager",
            "local",
        ]
        return command + (["-w", str(self.workers)] if self.workers > 1 else [])

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        # The venv's tools first: `mlflow models serve` runs `uvicorn` from PATH.
        env["PATH"] = f"{os.path.dirname(sys.executable)}{os.pathsep}{env.get('PATH', '')}"
        env["MLFLOW_TRACKING_URI"] = self.tracking_uri
        env.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        return env

    async def start(self, version: str) -> Backend:
        port = free_port()
        output = asyncio.subprocess.DEVNULL
        if self.log_dir:
            os.makedirs(self.log_dir, exist_ok=True)
            output = open(os.path.join(self.log_dir, f"backend-v{version}-{port}.log"), "ab")  # noqa: SIM115
        process = await asyncio.create_subprocess_exec(
            *self.command(version, port),
            env=self.environment(),
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopping it stops its children too
        )
        if output is not asyncio.subprocess.DEVNULL:
            output.close()
        logger.info("started backend for %s v%s on port %d (pid %d)", self.model_name, version, port, process.pid)
        return Backend(version=version, url=f"http://127.0.0.1:{port}", process=process)
