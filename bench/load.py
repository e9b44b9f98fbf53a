"""Load generation with wrk (a C load generator, so the client does not steal the measurement),
bounded in time and aimed at 127.0.0.1 only."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.core import BenchError

SCRIPT = Path(__file__).with_name("wrk_post.lua")


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise BenchError("wrk is not installed: `make bench` installs it (Debian package wrk)")
    return path


def run_wrk(url: str, body: bytes, connections: int, seconds: float, key: str | None = None) -> LoadResult:
    if not url.startswith(("http://127.0.0.1", "https://127.0.0.1")):
        raise BenchError(f"load is only aimed at 127.0.0.1, not {url}")
    with tempfile.NamedTemporaryFile(suffix=".json") as body_file:
        body_file.write(body)
        body_file.flush()
        command = [
            require_wrk(),
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "30s",
            "-s",
            str(SCRIPT),
            f"{url}/invocations",
        ]
        env = {"WRK_BODY": body_file.name, "WRK_KEY": key or "", "PATH": "/usr/bin:/bin"}
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 120)
    line = next((x for x in result.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if result.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({result.returncode}): {result.stderr.strip() or result.stdout[-300:]}")
    data = json.loads(line.removeprefix("WRK_JSON "))
    errors = sum(data[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    return LoadResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        errors=errors,
    )


MAX_LOAD_SECONDS = 16.0


def run_wrk_answered(url: str, body: bytes, connections: int, seconds: float) -> LoadResult:
    """``run_wrk`` for a throughput figure. wrk counts only answered requests, so a load shorter
    than one answer (a slow server, 64 images a request, a quick run on a busy machine) measured
    nothing: it runs again at twice the length, up to ``MAX_LOAD_SECONDS``. A result with no
    request answered even then is the caller's error to report, never a rate of 0."""
    result = run_wrk(url, body, connections, seconds)
    while result.requests == 0 and seconds < MAX_LOAD_SECONDS:
        seconds *= 2
        result = run_wrk(url, body, connections, seconds)
    return result
