"""``serve.batch.quick_exit`` makes batch scoring's forkserver leave at once when its job is done;
anywhere else, importing it must change nothing about how a process ends."""

from __future__ import annotations

import subprocess
import sys

from mnist_mlops.serve.batch import forkserver, quick_exit
from tests.helpers import PROJECT_ROOT, subprocess_env


def test_it_is_the_forkservers_last_preload():
    assert forkserver.PRELOAD[-1] == "mnist_mlops.serve.batch.quick_exit"


def test_outside_the_forkserver_a_process_ends_with_its_own_code_and_output():
    script = "import mnist_mlops.serve.batch.quick_exit as q, atexit; atexit.register(print, 'handler ran')\n"
    script += "print('in forkserver:', q.in_forkserver()); raise SystemExit(3)"
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, env=subprocess_env(), capture_output=True, text=True
    )
    assert result.returncode == 3
    assert result.stdout.splitlines() == ["in forkserver: False", "handler ran"]


def test_this_test_process_is_not_the_forkserver():
    assert not quick_exit.in_forkserver()
