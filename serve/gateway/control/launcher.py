"""Backend processes: one scoring server per model version, reachable only by this gateway.

Two ways to start one (``--backend_mode``), both serving MLflow's scoring protocol:

- ``mlflow``: ``mlflow models serve -m <the version's files> --env-manager local``, the way a
  user starts it;
- ``warm``: forked from a warm pool that has imported everything already
  (``mnist_mlops.serve.warm_pool``), so a new version only loads its model, and serves MLflow's
  ``invocations`` through a bare ASGI app (``mnist_mlops.serve.scoring_app``); with several
  workers, MLflow's scoring app under uvicorn's workers (``python -m mnist_mlops.serve.backend``).

What a backend is given, and what it is not (``docs/security.md``):

- the model's files, fetched by the gateway into a private directory (mode 0700) of its own,
  never the registry's address or credentials: a model's code cannot reach the registry;
- a Unix socket in that directory to listen on (``unix:`` backend URLs), so only the gateway
  can call it: nothing listens on a TCP port;
- ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``: a version saved as a pickle is refused;
- when the gateway runs as root, an unprivileged user (``control.privilege``).

Backends given as URLs (``--backend alias=URL``) run elsewhere and are only health-checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from mnist_mlops.common.cores import threads_each
from mnist_mlops.common.store import client as registry_client
from mnist_mlops.serve.gateway.backend_http import unix_socket_path
from mnist_mlops.serve.gateway.control.privilege import RunAs
from mnist_mlops.serve.gateway.settings import GatewaySettings
from mnist_mlops.serve.gateway.state import Backend
from mnist_mlops.serve.model import THREADS_ENV

logger = logging.getLogger(__name__)

MODES = ("mlflow", "warm")
# What a backend's environment never carries: the registry's address and credentials, cloud keys.
WITHHELD_PREFIXES = ("MLFLOW_TRACKING_", "MLFLOW_REGISTRY_", "AWS_", "AZURE_", "GOOGLE_", "DATABRICKS_")
SOCKET_NAME = "backend.sock"
# Cores kept for the gateway's own process when its backends' torch threads are counted: under
# load its event loop keeps a good part of one busy.
GATEWAY_CORES = 1
READY_TIMEOUT = 120.0  # seconds for a warm pool to import everything and say "ready"
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}  # what ends the gateway's command (its handlers raise)


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


def backend_httpx_client(url: str, timeout: float, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    """An httpx client whose relative URLs go to the backend at ``url`` (``unix:/path`` or HTTP),
    for the control plane's few calls (health checks, the gate on follow), not the data path."""
    path = unix_socket_path(url)
    if path is None:
        return httpx.AsyncClient(base_url=url, timeout=timeout, headers=headers)
    transport = httpx.AsyncHTTPTransport(uds=path)
    return httpx.AsyncClient(transport=transport, base_url="http://backend", timeout=timeout, headers=headers)


async def healthy(backend: Backend, client: httpx.AsyncClient) -> bool:
    if not backend.alive():
        return False
    try:
        if unix_socket_path(backend.url) is None:  # the control plane's shared keep-alive client
            answer = await client.get(f"{backend.url}/ping", timeout=backend.ping_timeout, headers=backend.headers)
            return answer.status_code == 200
        async with backend_httpx_client(backend.url, backend.ping_timeout) as local:
            return (await local.get("/ping")).status_code == 200
    except httpx.HTTPError:
        return False


# One 28x28 row (a vertical stroke): what a woken backend must answer before it takes traffic.
PROBE = (
    b'{"dataframe_split": {"columns": ["pixels"], "data": [["'
    + b" ".join([b"0"] * 300 + [b"255"] * 184 + [b"0"] * 300)
    + b'"]]}}'
)


async def answers_a_prediction(backend: Backend, client: httpx.AsyncClient, timeout: float = 60.0) -> bool:
    """Whether ``backend`` answers a real prediction (its model loaded, its first call's warm-up
    paid), not only ``/ping``: a client is never the first to find out."""
    headers = {"Content-Type": "application/json"} | backend.headers
    try:
        if unix_socket_path(backend.url) is None:
            answer = await client.post(f"{backend.url}/invocations", content=PROBE, headers=headers, timeout=timeout)
        else:
            async with backend_httpx_client(backend.url, timeout) as local:
                answer = await local.post("/invocations", content=PROBE, headers=headers)
    except httpx.HTTPError:
        return False
    return answer.status_code == 200


ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b.*")


def last_error_line(log: str | None, tail_bytes: int = 65_536) -> str | None:
    """The last exception line (``SomeError: why``) a backend wrote to ``log`` before it died,
    shortened: what an operator needs in ``/variants`` without opening the file."""
    if not log:
        return None
    try:
        with open(log, "rb") as file:
            file.seek(max(0, os.path.getsize(log) - tail_bytes))
            lines = file.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    found = next((line.strip() for line in reversed(lines) if ERROR_LINE.match(line.strip())), None)
    return found[:400] if found else None


async def wait_healthy(backend: Backend, client: httpx.AsyncClient, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not backend.alive():
            cause = last_error_line(backend.log)
            raise RuntimeError(
                f"backend for v{backend.version} {backend.exit_status()}" + (f": {cause}" if cause else "")
            )
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
    if backend.workdir:
        shutil.rmtree(backend.workdir, ignore_errors=True)


class WarmPool:
    """The gateway's handle on a ``serve.warm_pool`` process: started once, asked for backends.

    ``spawn`` starts the process without waiting (milliseconds, no event loop needed: the command
    line calls it before its own imports); ``ensure_started`` waits until it says ``ready``.
    """

    def __init__(self, env: dict[str, str], directory: Path, run_as: RunAs | None = None) -> None:
        self.env, self.run_as = env, run_as
        self.socket = str(directory / "pool.sock")
        self.process: subprocess.Popen | None = None
        self._ready = False
        self._lock = asyncio.Lock()

    def spawn(self) -> None:
        """Start the pool's process, unless one is running or starting."""
        if self.process is not None and self.process.poll() is None:
            return
        self.kill()  # one that died: its pipe closed, forgotten
        # A stop signal whose handler raised inside Popen, after the fork, would leave a pool that
        # nobody holds to kill: it waits until the pool is ours. The pool unblocks them at its start.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mnist_mlops.serve.warm_pool", "--socket", self.socket],
                env=self.env,
                cwd=os.path.dirname(self.socket),
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                **(self.run_as.popen_arguments() if self.run_as else {}),
            )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)

    async def ensure_started(self) -> None:
        async with self._lock:
            if self._ready and self.process is not None and self.process.poll() is None:
                return
            self.spawn()
            process = self.process
            try:
                line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), READY_TIMEOUT)
                if line.strip() != b"ready" or self.process is not process:  # (not stopped meanwhile)
                    raise RuntimeError("the warm pool did not start")
            except BaseException:  # the next call starts a pool afresh, not this one half-started
                if self.process is process:
                    self.kill()
                raise
            self._ready = True
            logger.info("warm pool ready (pid %d)", process.pid)

    async def fork(self, model_path: str, uds: str, log: str | None, env: dict[str, str] | None = None) -> Forked:
        """A backend forked from the pool, serving ``model_path`` on the Unix socket ``uds``,
        with ``env`` added to the pool's environment."""
        await self.ensure_started()
        reader, writer = await asyncio.open_unix_connection(self.socket)
        request = {"model_uri": model_path, "uds": uds, "log": log, "env": env or {}}
        writer.write((json.dumps(request) + "\n").encode())
        await writer.drain()
        answer = json.loads(await asyncio.wait_for(reader.readline(), 30))
        writer.close()
        return Forked(int(answer["pid"]))

    async def stop(self) -> None:
        """Ask the pool to exit (its backends are stopped one by one, not here); killed after 10 s."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self.process.wait, 10)
        self.kill()

    def kill(self) -> None:
        """Kill the pool's process (and anything still in its session) now, and forget it."""
        process, self.process, self._ready = self.process, None, False
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        process.stdout.close()


@dataclass
class Launcher:
    """How backends are started: the command, the environment, the user, where output goes."""

    model_name: str
    tracking_uri: str
    mode: str = "mlflow"
    workers: int = 1
    log_dir: str | None = None
    torch_threads: int | None = None
    """Torch threads in each backend process started from now on (``THREADS_ENV``), unless the
    caller's environment chooses; None: torch's default. Kept at the share of the cores by
    ``share_cores``."""
    run_as: RunAs | None = None
    """The unprivileged user backends run as (``control.privilege``); None: the gateway's own."""
    pool: WarmPool | None = None
    directory: Path | None = None  # the private directory of this gateway's backends, made on first use

    @classmethod
    def for_gateway(cls, settings: GatewaySettings, run_as: RunAs | None) -> Launcher:
        """The launcher of a gateway started with ``settings`` (``--engine local``)."""
        log_dir = str(settings.log_dir) if settings.log_dir else None
        return cls(
            settings.model_name,
            settings.tracking_uri,
            settings.backend_mode,
            settings.backend_workers,
            log_dir,
            run_as=run_as,
        )

    def share_cores(self, backends: int) -> None:
        """Give the backends started from now on their share of the cores, for ``backends``
        backends started here (each with ``workers`` processes).

        Torch's default is a thread per core in every process, and the threads of several
        processes on the same cores spin against each other (``make bench``: the A/B split and
        two-worker gateways). The gateway's own core is left out: under load its event loop is
        busy too, and a torch thread it preempts stalls the other threads of a forward pass at
        their barrier. A backend already running keeps its threads: torch fixes them at load.
        """
        self.torch_threads = threads_each(max(backends, 1) * self.workers, reserved=GATEWAY_CORES)

    def thread_share(self) -> dict[str, str]:
        """``THREADS_ENV`` at the share of the cores, unless the caller chose: our variable or
        OpenMP's standard one, set in this process's environment."""
        if self.torch_threads and not (os.environ.get(THREADS_ENV) or os.environ.get("OMP_NUM_THREADS")):
            return {THREADS_ENV: str(self.torch_threads)}
        return {}

    def command(self, model_path: str) -> list[str]:
        # A warm pool forks one interpreter per backend; several workers need their own processes.
        if self.mode == "warm":
            return [
                sys.executable,
                "-m",
                "mnist_mlops.serve.backend",
                "--model_uri",
                model_path,
                "--uds",
                str(Path(model_path).parent / SOCKET_NAME),
                "--workers",
                str(self.workers),
            ]
        # `mlflow models serve` runs uvicorn's command line, which reads UVICORN_UDS (environment()).
        command = ["mlflow", "models", "serve", "-m", model_path, "-h", "127.0.0.1", "--env-manager", "local"]
        return command + (["-w", str(self.workers)] if self.workers > 1 else [])

    def environment(self, workdir: Path | None = None) -> dict[str, str]:
        """A backend's environment: the gateway's, without the registry's address or any
        credentials, with pickled models refused."""
        env = {key: value for key, value in os.environ.items() if not key.startswith(WITHHELD_PREFIXES)}
        # The venv's tools first: `mlflow models serve` runs `uvicorn` from PATH.
        env["PATH"] = f"{os.path.dirname(sys.executable)}{os.pathsep}{env.get('PATH', '')}"
        env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
        env.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        if workdir is not None:
            env["HOME"] = str(workdir)  # an unprivileged user may have none; caches land here
            env["UVICORN_UDS"] = str(workdir / SOCKET_NAME)
            # The gateway logs every request; the backend's own access lines would only fill its log.
            env["UVICORN_ACCESS_LOG"] = "false"
        env.update(self.thread_share())
        return env

    def private_directory(self) -> Path:
        """This gateway's backends' directory: mode 0700, owned by the backends' user."""
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="mnist-backends-"))
            self._give(self.directory)
        return self.directory

    def _give(self, path: Path) -> None:
        """Hand ``path`` (and what is under it) to the backends' user."""
        if self.run_as is None:
            return
        for root, directories, files in os.walk(path):
            os.chown(root, self.run_as.uid, self.run_as.gid)
            for name in directories + files:
                os.chown(os.path.join(root, name), self.run_as.uid, self.run_as.gid, follow_symlinks=False)

    async def fetch(self, version: str) -> Path:
        """The version's model files, in a new directory of the private directory (its workdir)."""
        workdir = Path(tempfile.mkdtemp(prefix=f"v{version}-", dir=self.private_directory()))
        try:
            local = await asyncio.to_thread(self._download, version, str(workdir / "model-files"))
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        (workdir / "model").symlink_to(local)
        self._give(workdir)
        return workdir

    def _download(self, version: str, destination: str) -> str:
        """The version's files from this gateway's store (blocking). Not through a
        ``models:/name/version`` URI: MLflow resolves one in its global registry
        (``$MLFLOW_TRACKING_URI``'s store), whatever registry it is given, so a gateway started with
        ``--tracking_uri`` would read another store's version of that number, or none."""
        from mlflow.artifacts import download_artifacts

        source = registry_client(self.tracking_uri).get_model_version_download_uri(self.model_name, version)
        return download_artifacts(artifact_uri=source, dst_path=destination, tracking_uri=self.tracking_uri)

    def _log_path(self, version: str, workdir: Path) -> str:
        """Where the backend's output goes: a file in ``--log_dir`` that outlives it, else one in
        its private directory (gone with it), read for the cause when it dies at start."""
        if not self.log_dir:
            path = str(workdir / "backend.log")
        else:
            os.makedirs(self.log_dir, exist_ok=True)
            path = os.path.join(self.log_dir, f"backend-v{version}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log")
        with open(path, "ab"):
            pass
        if self.run_as is not None:  # the warm pool's child opens it as the backends' user
            os.chown(path, self.run_as.uid, self.run_as.gid)
        return path

    @property
    def forks(self) -> bool:
        """Backends are forked from a warm pool (one worker each; several need processes of their own)."""
        return self.mode == "warm" and self.workers == 1

    def warm_pool(self) -> WarmPool:
        if self.pool is None:
            self.pool = WarmPool(self.environment(), self.private_directory(), self.run_as)
        return self.pool

    def start_pool_ahead(self) -> None:
        """Start the warm pool's process now, without waiting for it (``prepare`` waits), where
        backends are forked. ``mnist-gateway`` calls this before importing its app (MLflow,
        FastAPI: about a second), so that the pool's imports overlap the gateway's own as well.
        A pool that cannot start is not reported here: the gateway's check of the backends' user,
        or its first fork, which tries again, says why."""
        if self.forks:
            with contextlib.suppress(OSError):
                self.warm_pool().spawn()

    async def prepare(self) -> None:
        """Start the warm pool now, before the first backend is asked for, so that its imports
        (torch, MLflow's pyfunc: seconds) overlap the gateway's registry read and the model's
        download instead of following them. Nothing to do where backends are not forked. A pool
        that fails here is started again by the first fork, which reports the failure."""
        if not self.forks:
            return
        try:
            await self.warm_pool().ensure_started()
        except (OSError, RuntimeError, TimeoutError) as exc:
            logger.warning("the warm pool did not start ahead of the first backend: %s", exc)

    async def start(self, version: str) -> Backend:
        workdir = await self.fetch(version)
        model_path = str(workdir / "model")
        log = self._log_path(version, workdir)
        try:
            if self.forks:
                # The pool's environment is the one of its first backend: the share of now travels with the fork.
                env = self.thread_share() | {"HOME": str(workdir)}
                handle = await self.warm_pool().fork(model_path, str(workdir / SOCKET_NAME), log, env)
            else:
                output = open(log, "ab")  # noqa: SIM115 - closed below
                process = await asyncio.create_subprocess_exec(
                    *self.command(model_path),
                    env=self.environment(workdir),
                    cwd=workdir,
                    stdout=output,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                    **(self.run_as.popen_arguments() if self.run_as else {}),
                )
                output.close()
                handle = Spawned(process)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        user = self.run_as.name if self.run_as else "the gateway's user"
        logger.info(
            "started backend for %s v%s (pid %d, %s, as %s)", self.model_name, version, handle.pid, self.mode, user
        )
        return Backend(
            version=version, url=f"unix:{workdir / SOCKET_NAME}", handle=handle, workdir=str(workdir), log=log
        )

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.stop()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def close_now(self) -> None:
        """What ``close`` does, at once and without waiting: for a command that exits before or
        after its event loop ran. Nothing left to do after ``close``."""
        if self.pool is not None:
            self.pool.kill()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
