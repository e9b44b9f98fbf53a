"""``make ui``: the MLflow UI over this project's tracking store, its address the last line it prints.

    python -m mnist_mlops.registry.ui --port 5000

``mlflow ui`` starts several workers, each of which prints the same deprecation notices after the
server's address, so the one line a person needs scrolls away. This runs it with one worker,
Python's warnings and MLflow's background jobs off, waits until it answers, and then prints where
to open it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

from mnist_mlops.common.cli import OneLineArgumentParser, add_option, whole_number
from mnist_mlops.common.store import tracking_uri

PROG = "make ui"


def main(argv: list[str] | None = None) -> None:
    parser = OneLineArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    add_option(parser, "port", type=whole_number(1, 65535), default=5000)
    add_option(parser, "host", default="127.0.0.1")
    args = parser.parse_args(argv)
    uri, address = tracking_uri(), f"http://{args.host}:{args.port}"
    mlflow = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
    command = [mlflow, "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port)]
    command += ["--workers", "1"]
    # MLflow's background jobs (online scoring of GenAI traces, trace archival) log after start-up
    # and serve nothing this project uses.
    env = dict(os.environ, PYTHONWARNINGS="ignore", MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    server = subprocess.Popen(command, env=env)
    try:
        while server.poll() is None and not _answers(f"{address}/health"):
            time.sleep(0.2)
        if server.poll() is not None:
            raise SystemExit(server.returncode or 1)
        print(f"MLflow UI for {uri}: open {address}  (Ctrl-C stops it)", flush=True)
        server.wait()
    except KeyboardInterrupt:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


if __name__ == "__main__":
    main()
