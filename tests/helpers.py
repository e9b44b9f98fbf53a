"""Shared test helpers: project paths, subprocess environments, free ports, waiting for servers."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def mnist_dir() -> Path:
    """The MNIST root the suite uses: $MNIST_DATA_DIR, else ../shared/data beside the checkout."""
    configured = os.environ.get("MNIST_DATA_DIR")
    root = Path(configured) if configured else PROJECT_ROOT.parent / "shared" / "data"
    return root.resolve()


def subprocess_env(tracking_uri: str | None = None, **extra: str) -> dict[str, str]:
    """The environment for a real CLI process: the venv's tools first on PATH, quiet progress bars."""
    env = dict(os.environ)
    # In-process MLflow calls in the test session (mlflow.set_experiment, start_run) export these;
    # a child process pointed at another store must not inherit them.
    for inherited in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
        env.pop(inherited, None)
    env.pop("MLFLOW_TRACKING_URI", None)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["MNIST_DATA_DIR"] = str(mnist_dir())
    env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    env["PYTHONUNBUFFERED"] = "1"
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen | None = None, timeout: float = 120.0) -> None:
    """Poll ``url`` until it answers 200; fail early if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s")


def start_process(args: list[str], env: dict[str, str], log_path: Path, cwd: Path | None = None) -> subprocess.Popen:
    """Start a server in its own process group, output to ``log_path``."""
    log = open(log_path, "wb")  # noqa: SIM115 - closed by stop_process
    process = subprocess.Popen(
        args, env=env, cwd=cwd or PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    process.log_file = log  # type: ignore[attr-defined]
    return process


def stop_process(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
    """Signal the whole process group and wait; SIGKILL if it does not stop in time."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout)
    log = getattr(process, "log_file", None)
    if log is not None:
        log.close()
    return process.returncode


def png_bytes(image: np.ndarray, mode: str = "L", fmt: str = "PNG", **save_args) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image, mode=mode).save(buffer, format=fmt, **save_args)
    return buffer.getvalue()


def write_idx_images(path: Path, images: np.ndarray) -> None:
    """MNIST's IDX3 format: magic 2051, count, rows, cols (big-endian), then uint8 pixels."""
    n, rows, cols = images.shape
    header = np.array([2051, n, rows, cols], dtype=">i4").tobytes()
    path.write_bytes(header + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    header = np.array([2049, len(labels)], dtype=">i4").tobytes()
    path.write_bytes(header + labels.astype(np.uint8).tobytes())


def running(pid: int) -> bool:
    """The process exists and is not a zombie (dead, not yet reaped by its parent)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def tree_pss_mib(pid: int) -> float:
    """Memory of a process and every process it started, in MiB: proportional set sizes, so the
    pages a forked backend shares with the warm pool are counted once, not once per process."""
    import psutil

    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_full_info().pss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20
