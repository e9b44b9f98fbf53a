"""The benchmark harness in its quick mode, as CI smoke: every section runs end to end against real
servers and writes its result files. Nothing here is about speed (no figure is compared with
anything); it keeps the harness from rotting between full runs."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

from tests.helpers import PROJECT_ROOT, subprocess_env

SECTIONS = {
    "training",
    "network",
    "network (reference)",
    "pyfunc",
    "precision",
    "online",
    "clients",
    "cold start",
    "batch",
    "memory",
    "quality",
    "inference log",
    "serverless",
    "ratios",
}


def test_the_quick_benchmark_runs_every_section_and_writes_its_results(tmp_path):
    assert shutil.which("wrk"), "wrk is missing: `make test` installs it (make system-deps)"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=PROJECT_ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "quick.json").read_text())
    assert result["mode"] == "quick"
    assert {"cpu", "cores", "versions", "git_commit"} <= set(result["machine"])
    assert {f["section"] for f in result["figures"]} == SECTIONS
    # Every rate and size is a real measurement (an added latency may be a hair below zero: noise).
    rates = [f for f in result["figures"] if f["unit"] in {"images/s", "requests/s", "rows/s", "MiB", "s"}]
    assert rates and all(f["value"] > 0 for f in rates), [f for f in rates if f["value"] <= 0]
    assert all(math.isfinite(f["value"]) for f in result["figures"])
    names = {r["name"] for r in result["ratios"]}
    assert any(name.endswith("/ stock mlflow models serve requests/s, 1 image, concurrency 32") for name in names)
    assert any(name.endswith("concurrency 1, paired requests") for name in names)
    assert any(name.startswith("batch pandas engine") and "around the job" in name for name in names)
    assert any(name.startswith("batch spark local[2] ceiling") and "around the job" in name for name in names)
    assert any(name.startswith("batch whole command: mnist-batch / plain script") for name in names)
    assert "inference log PostgreSQL / SQLite rows written/s, 2 writers" in names
    assert "serverless: request at zero replicas p99 / stock launch to first answer" in names
    assert "serverless: step load c32 requests/s, at zero when idle / fixed replicas" in names
    table = (tmp_path / "quick.md").read_text()
    assert "| online | mlflow models serve: 1 image/request, concurrency 32 |" in table
    assert done.stdout.count("\n") >= len(result["figures"])  # the printed table
