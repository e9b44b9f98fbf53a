"""Backends set how long torch's idle OpenMP threads spin before torch loads, and a user's own
setting wins (``serve.backend.OPENMP_SPIN``)."""

from __future__ import annotations

import os
import subprocess
import sys

from mnist_mlops.serve.backend import OPENMP_SPIN, spin_briefly

NAME, VALUE = OPENMP_SPIN


def test_the_spin_is_set_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv(NAME, raising=False)
    spin_briefly()
    assert os.environ[NAME] == VALUE
    monkeypatch.setenv(NAME, "250")
    spin_briefly()
    assert os.environ[NAME] == "250"


def test_it_is_set_before_anything_loads_torch():
    """libgomp reads the variable once, as torch loads it: the modules that set it must not
    import torch themselves, or the setting comes too late to count."""
    code = (
        "import sys, mnist_mlops.serve.backend, mnist_mlops.serve.warm_pool; "
        "print(sorted(m for m in ('torch', 'mlflow', 'numpy') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout.strip() == "[]"
