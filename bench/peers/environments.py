"""Virtualenvs of their own for peers whose dependencies conflict with ours (BentoML 1.4.40 pins
OpenTelemetry packages below MLflow's), created from the registries by the harness and reused
while their requirements are unchanged. Each holds the peer, and the model's own pinned
requirements (its ``requirements.txt``), so it loads the very same pyfunc."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

from bench.core import BenchError

BENTOML = "bentoml==1.4.40"


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/mnist-mlops/bench-peers`` (``~/.cache`` by default): outside the clone."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mnist-mlops" / "bench-peers"


def requirements(peer: str, model_dir: Path) -> list[str]:
    """What the peer's environment installs: the peer, then the model's pinned requirements."""
    model_requirements = (model_dir / "requirements.txt").read_text().split()
    return [peer, *(line for line in model_requirements if line and not line.startswith("#"))]


def ensure(name: str, wanted: list[str]) -> Path:
    """The python of a virtualenv ``name`` holding ``wanted``: created (about a minute with pip's
    cache warm) unless one with exactly these requirements exists."""
    digest = hashlib.sha256("\n".join(sorted(wanted)).encode()).hexdigest()[:12]
    home = cache_root() / f"{name}-{digest}"
    python = home / "bin" / "python"
    stamp = home / "requirements.done"
    if stamp.exists() and python.exists():
        return python
    print(f"bench: creating the {name} environment in {home} ...", file=sys.stderr, flush=True)
    venv.create(home, with_pip=True, clear=True)
    command = [str(python), "-m", "pip", "install", "--disable-pip-version-check", *wanted]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:]
        raise BenchError(f"could not install {name}'s environment ({' '.join(wanted)}): {' | '.join(tail)}")
    stamp.write_text("\n".join(wanted) + "\n")
    return python
