"""The Ray Serve peer: the model's pyfunc behind Ray Serve, set up as Ray's documentation
recommends for a model served alone: one deployment with ``@serve.batch`` (batches counted in
rows with ``batch_size_fn``, so a 64-image request is a batch of its own), ``max_ongoing_requests``
raised to the batch size (its default, 5, caps every batch at 5), and Ray's high-throughput mode
(``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` with its HAProxy ingress), which gave about five times the
default proxy's requests/s here. It speaks MLflow's scoring protocol (MLflow's own parser) and
answers as ``mlflow models serve`` does; nothing of this project is imported.

``python -m bench.peers.ray_serve_app --model DIR --port P``: a local Ray, the application on
127.0.0.1:P, until SIGTERM. Ray's HAProxy gets ports and files of its own (its defaults are fixed
ports on every interface and one folder in /tmp shared by every Ray on the machine) and is stopped
with the app: ``ray.shutdown`` leaves it running, re-parented to init, holding its ports.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import tempfile
import threading
from pathlib import Path

# Set before Ray is imported: Ray reads them then.
os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")  # SIGTERM stops, not aborts
os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
os.environ.setdefault("RAY_SERVE_ENABLE_HA_PROXY", "1")

import pandas as pd
import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

MAX_BATCH_ROWS = 64
BATCH_WAIT_S = 0.002  # beat 5 ms and 10 ms (Ray's default) at concurrency 1 and 32 here
TORCH_THREADS = 2


def _rows(frames: list[pd.DataFrame]) -> int:
    return sum(len(frame) for frame in frames)


@serve.deployment(max_ongoing_requests=MAX_BATCH_ROWS, ray_actor_options={"num_cpus": 1})
class Pyfunc:
    def __init__(self, model_path: str) -> None:
        import mlflow
        import torch

        torch.set_num_threads(TORCH_THREADS)
        self.model = mlflow.pyfunc.load_model(model_path)

    @serve.batch(max_batch_size=MAX_BATCH_ROWS, batch_wait_timeout_s=BATCH_WAIT_S, batch_size_fn=_rows)
    async def predict(self, frames: list[pd.DataFrame]) -> list[list[dict]]:
        answers = self.model.predict(pd.concat(frames, ignore_index=True))
        records = json.loads(answers.to_json(orient="records"))
        out, start = [], 0
        for frame in frames:
            out.append(records[start : start + len(frame)])
            start += len(frame)
        return out

    async def __call__(self, request: Request) -> Response:
        from mlflow.pyfunc.scoring_server import infer_and_parse_data

        try:
            frame = infer_and_parse_data(json.loads(await request.body()))
        except Exception as exc:  # a client's bad body, answered as MLflow does
            return JSONResponse({"error_code": "BAD_REQUEST", "message": str(exc)[:300]}, status_code=400)
        return JSONResponse({"predictions": await self.predict(frame)})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def private_haproxy() -> Path:
    """Ports and files of this app's own for Ray's HAProxy (read when Ray's actors import
    ``ray.serve``: the environment reaches them through the local Ray's workers)."""
    home = Path(tempfile.mkdtemp(prefix="rp-", dir="/tmp"))  # HAProxy takes socket paths of 97 bytes at most
    os.environ["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"] = str(home / "haproxy.cfg")
    os.environ["RAY_SERVE_HAPROXY_SOCKET_PATH"] = str(home / "admin.sock")
    os.environ["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"] = str(home)
    os.environ["RAY_SERVE_HAPROXY_SERVER_STATE_FILE"] = str(home / "server-state")
    os.environ["RAY_SERVE_HAPROXY_METRICS_PORT"] = str(_free_port())
    os.environ["RAY_SERVE_HAPROXY_STATS_PORT"] = str(_free_port())
    return home


def stop_haproxy(home: Path) -> None:
    """SIGTERM to every HAProxy whose command line names ``home``."""
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError):
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
            if entry.name.isdigit() and "haproxy" in command and str(home) in command:
                os.kill(int(entry.name), signal.SIGTERM)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a local folder holding the MLflow model")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    haproxy = private_haproxy()
    # "local": a Ray of its own, not the last cluster `ray start` left on this machine.
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING")
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(
        Pyfunc.bind(args.model),
        route_prefix="/",
        logging_config={"log_level": "WARNING", "enable_access_log": False},
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    stop_haproxy(haproxy)  # first: the harness stops the whole group if this takes over 30 s
    try:
        ray.shutdown()  # the whole local Ray, its Serve application with it
    finally:
        stop_haproxy(haproxy)  # one the manager may have started meanwhile


if __name__ == "__main__":
    main()
