"""A warm pool for scoring backends: an interpreter that has imported everything a backend needs
and forks a copy of itself for each one.

    python -m mnist_mlops.serve.warm_pool --socket /tmp/mnist-pool.sock [--registry_uris]

Most of a backend's cold start is importing MLflow, torch, pandas, SciPy and uvicorn (seconds),
the same for every version. The pool pays it once; a new backend is then a ``fork`` that only
fetches and loads its model and starts serving (``mnist_mlops.serve.backend.run``), so a
promotion's new version answers in well under a second. Each model brings its own code under a
name of its own (``mnist_mlops.train.export``), so nothing imported here can shadow it.

Protocol: one JSON line per connection on a Unix socket, ``{"model_uri", "uds" (or "host" and
"port"), "env", "log"}``; the answer is ``{"pid": ...}``. The child has its own session (stop it with
``killpg``); the pool reaps its children. The pool exits, and its children stop, when the process
that started the pool (the gateway) is gone, even killed outright.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import socket
import sys
import threading
import time

from mnist_mlops.serve.backend import spin_briefly

PRELOAD = (
    "numpy",
    "pandas",
    "scipy.ndimage",
    "scipy.special",
    "PIL.Image",
    "torch",
    "torch.nn",
    "mlflow",
    "mlflow.pyfunc",
    "mlflow.pyfunc.scoring_server",
    "mlflow.artifacts",
    "mlflow.tracking",
    "uvicorn",
    "uvicorn.loops.uvloop",
    "uvicorn.protocols.http.httptools_impl",
    "fastapi",
)
# The SQL stores a registry model URI (``models:/``) is resolved through: most of a second, and
# memory no backend touches when it is given the model's files, as the gateway's are.
REGISTRY_PRELOAD = (
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
)


STARTER_CHECK = 1.0  # seconds between checks that the process that started the pool is still there


def preload(registry_uris: bool = False) -> None:
    """Import what every backend imports (and, for ``registry_uris``, what resolving a
    ``models:/`` URI imports), and fill MLflow's package map, in the pool, once.

    No torch operation runs here: its thread pool must start in the children, after the fork.
    """
    import importlib

    for name in PRELOAD + (REGISTRY_PRELOAD if registry_uris else ()):
        importlib.import_module(name)
    # load_model checks the model's requirements against the installed packages, which walks the
    # metadata of every distribution (about a second); the map it builds is cached module-wide.
    from mlflow.utils import requirements_utils

    requirements_utils._init_packages_to_modules_map()


def _reap(signum, frame) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _alive(pid: int) -> bool:
    """``pid`` runs: it exists and, where ``/proc`` tells, is not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        if os.path.isdir("/proc"):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user (a backend runs unprivileged)
        pass
    return True


def _stop_without(starter: int) -> None:
    """SIGTERM this backend (uvicorn's graceful stop) once ``starter``, its gateway, is gone: a
    gateway killed outright stops nothing itself. Not the pool: a backend outlives a pool that failed."""

    def watch() -> None:
        while _alive(starter):
            time.sleep(STARTER_CHECK)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="gateway-watch", daemon=True).start()


def _child(request: dict, session_made: int, starter: int) -> None:
    os.setsid()  # its own process group: the gateway stops it, and whatever it starts, with killpg
    os.close(session_made)  # the pool answers with our pid now: a killpg from here on reaches us
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    log = os.open(request.get("log") or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.environ.update(request.get("env") or {})
    _stop_without(starter)
    from mnist_mlops.serve.backend import run

    try:
        port = request.get("port")
        run(
            request["model_uri"],
            request.get("host", "127.0.0.1"),
            int(port) if port is not None else None,
            uds=request.get("uds"),
        )
    except SystemExit as exit_:
        os._exit(exit_.code if isinstance(exit_.code, int) else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
        os._exit(1)
    os._exit(0)


def serve_forever(path: str, registry_uris: bool = False) -> None:
    starter = os.getppid()
    spin_briefly()  # read by libgomp as torch loads it, below: the forks inherit it
    preload(registry_uris)
    gc.freeze()  # the preloaded modules: never scanned, so a fork's collections leave their pages shared
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    os.chmod(path, 0o600)
    server.listen(16)
    signal.signal(signal.SIGCHLD, _reap)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    server.settimeout(STARTER_CHECK)
    while True:
        try:
            connection, _ = server.accept()
        except TimeoutError:
            if os.getppid() != starter:  # the gateway is gone, even killed outright: nobody will ask again
                sys.exit(0)
            continue
        except InterruptedError:
            continue
        with connection:
            try:
                request = json.loads(connection.makefile("r").readline())
            except (ValueError, OSError):
                continue
            # Answered only once the child has its own session: a gateway that stops it at once
            # would otherwise signal a process group that does not exist yet, and wait in vain.
            waiting, session_made = os.pipe()
            pid = os.fork()
            if pid == 0:
                server.close()
                connection.close()
                os.close(waiting)
                _child(request, session_made, starter)
            os.close(session_made)
            os.read(waiting, 1)  # end of file: the child closed its end, or died
            os.close(waiting)
            connection.sendall((json.dumps({"pid": pid}) + "\n").encode())


def main(argv: list[str] | None = None) -> None:
    # The gateway holds its stop signals back while it starts us (``WarmPool.spawn``), and a
    # mask outlives exec: one that came meanwhile is delivered now, and stops us.
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    parser = argparse.ArgumentParser(prog="mnist_mlops.serve.warm_pool", description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, help="Unix socket to listen on")
    parser.add_argument(
        "--registry_uris",
        action="store_true",
        help="backends will be given models:/ URIs: import the registry's SQL stores here, once",
    )
    args = parser.parse_args(argv)
    serve_forever(args.socket, args.registry_uris)


if __name__ == "__main__":
    main()
