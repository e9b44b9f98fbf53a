"""Servers for the benchmarks: started like a user starts them, on free loopback ports; their
memory is read from /proc (peak resident set of a process and all its descendants)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from bench.core import BenchError


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment(tracking_uri: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_EXPERIMENT") and k != "MLFLOW_RUN_ID"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    env.update(extra)
    return env


def tree_pids(root: int) -> list[int]:
    """``root`` and every process descended from it. Not its process group: a gateway starts its
    backends in sessions of their own, so that it can stop each one with its children."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                parent = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo += children.get(pid, [])
    return pids


def peak_rss_mib(root: int) -> float:
    """Sum over ``root`` and its descendants of each process's peak resident set (VmHWM), in MiB."""
    total = 0
    for pid in tree_pids(root):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
    return total / 1024


def tree_cpu_seconds(root: int) -> float:
    """CPU time (user and system) used so far by ``root`` and its live descendants, and by the
    children they have reaped."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in tree_pids(root):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return total / ticks


class Server:
    def __init__(self, name: str, command: list[str], env: dict[str, str], url: str, log: Path) -> None:
        self.name, self.command, self.env, self.url, self.log = name, command, env, url, log
        self.process: subprocess.Popen | None = None

    def start(self) -> float:
        """Launch; return seconds until ``ready_path`` answers 200."""
        started = time.perf_counter()
        with open(self.log, "wb") as out:
            # In its log's folder: a relative default (the gateway's inference log) lands there,
            # not in the folder `make bench` runs from.
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                cwd=self.log.parent,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return started

    def wait(self, path: str, timeout: float = 300.0, started: float | None = None) -> float:
        started = started or time.perf_counter()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.process.returncode}: {self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}{path}", timeout=2).status_code == 200:
                    return time.perf_counter() - started
            time.sleep(0.05)
        raise BenchError(f"{self.name} did not answer {path} within {timeout:.0f}s: {self.tail()}")

    def tail(self) -> str:
        return " | ".join(self.log.read_text(errors="replace").splitlines()[-5:])

    def peak_rss_mib(self) -> float:
        return peak_rss_mib(self.process.pid)

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@contextlib.contextmanager
def running(server: Server, ready_path: str, timeout: float = 300.0) -> Iterator[Server]:
    try:
        server.wait(ready_path, timeout, server.start())
        yield server
    finally:
        server.stop()


def mlflow_serve(model_uri: str, tracking_uri: str, workdir: Path, workers: int = 1) -> Server:
    port = free_port()
    command = [
        "mlflow",
        "models",
        "serve",
        "-m",
        model_uri,
        "-p",
        str(port),
        "-h",
        "127.0.0.1",
        "--env-manager",
        "local",
    ]
    if workers > 1:
        command += ["-w", str(workers)]
    return Server(
        f"mlflow models serve (-w {workers})",
        command,
        environment(tracking_uri),
        f"http://127.0.0.1:{port}",
        workdir / f"mlflow-serve-{port}.log",
    )


def fast_backend(model_uri: str, tracking_uri: str, workdir: Path, workers: int = 1) -> Server:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "mnist_mlops.serve.backend",
        "--model_uri",
        model_uri,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    return Server(
        f"mnist_mlops.serve.backend (-w {workers})",
        command,
        environment(tracking_uri),
        f"http://127.0.0.1:{port}",
        workdir / f"fast-backend-{port}.log",
    )


def gateway(tracking_uri: str, workdir: Path, *extra: str, env: dict[str, str] | None = None) -> Server:
    """``mnist-gateway`` with the benchmark's fixed options, then ``extra``; ``env`` is added to
    its environment (its backends inherit it)."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "mnist_mlops.serve.gateway",
        "--no_auth",
        "--port",
        str(port),
        "--split",
        "champion=100",
        "--poll_interval",
        "30",
        "--log_dir",
        str(workdir / "backends"),
        # Speed, not containment, is measured here; this machine's interpreter is out of reach of
        # an unprivileged user (docs/security.md).
        "--backend_user",
        "root",
        *extra,
    ]
    return Server(
        "mnist-gateway " + " ".join(extra),
        command,
        environment(tracking_uri, **(env or {})),
        f"http://127.0.0.1:{port}",
        workdir / f"gateway-{port}.log",
    )


def mlflow_server(tracking_uri: str, workdir: Path, **extra_env: str) -> Server:
    """``mlflow server`` on the benchmark's store, one worker, on a free loopback port."""
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    return Server(
        "mlflow server",
        command,
        environment(tracking_uri, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", **extra_env),
        f"http://127.0.0.1:{port}",
        workdir / f"mlflow-server-{port}.log",
    )
