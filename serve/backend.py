"""A scoring backend without the ``mlflow`` CLI in front: MLflow's scoring protocol, model preloaded.

    python -m mnist_mlops.serve.backend --model_uri models:/mnist-cnn/3 --port 5001
    python -m mnist_mlops.serve.backend --model_uri /path/to/model --uds /run/backend.sock

``mlflow models serve`` spends seconds importing the CLI and then starts a second interpreter
(``uvicorn mlflow.pyfunc.scoring_server.app:app``) that imports everything again. This serves
MLflow's scoring protocol (its ``invocations`` function: the same parsing, errors and answers)
from one process that loads the model once, through the bare app of ``serve.scoring_app``, so a
backend answers sooner and each request costs less. ``--workers`` above 1 falls back to MLflow's
own app under uvicorn's worker processes. ``serve.warm_pool`` runs ``run`` in a process forked
from an interpreter that has imported everything already.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys

from mnist_mlops.common.cli import OneLineArgumentParser, add_option, whole_number

# How long an idle OpenMP thread of torch's spins before it sleeps, in libgomp's iterations. Its
# default (300,000) keeps the second core busy between every two requests a backend scores on the
# event loop, taking it from the gateway and the clients beside it; 10,000 spins a few
# microseconds, enough to catch the next layer of the same forward pass.
OPENMP_SPIN = ("GOMP_SPINCOUNT", "10000")


def spin_briefly() -> None:
    """Set ``OPENMP_SPIN`` unless the user has: before torch is first imported in this process."""
    os.environ.setdefault(*OPENMP_SPIN)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="mnist_mlops.serve.backend", description=__doc__.splitlines()[0])
    add_option(parser, "model_uri", required=True, help="models:/NAME/VERSION, models:/NAME@ALIAS or a path")
    add_option(parser, "host", default="127.0.0.1")
    add_option(parser, "port", type=whole_number(1, 65535), default=None, help="TCP port (or --uds)")
    add_option(parser, "uds", default=None, help="listen on this Unix socket instead of a TCP port")
    add_option(parser, "workers", type=whole_number(1), default=1)
    return parser


def run(
    model_uri: str, host: str = "127.0.0.1", port: int | None = None, workers: int = 1, uds: str | None = None
) -> None:
    """Fetch the model (a local directory is used as it is), load it, serve MLflow's scoring
    protocol on ``host:port`` or the Unix socket ``uds`` until stopped (``serve.scoring_app``; with
    ``workers`` above 1, MLflow's app in uvicorn's worker processes)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow
    import uvicorn
    from mlflow.pyfunc import scoring_server

    from mnist_mlops.serve.loading import load_pyfunc
    from mnist_mlops.serve.scoring_app import scoring_app

    if os.path.isdir(model_uri):
        local_path = model_uri
    else:
        try:
            local_path = mlflow.artifacts.download_artifacts(model_uri)
        except Exception as exc:  # unknown model/alias, unreachable store
            sys.stderr.write(f"serve.backend: error: cannot fetch {model_uri}: {' '.join(str(exc).split())[:200]}\n")
            raise SystemExit(1) from None
    where = {"uds": uds} if uds else {"host": host, "port": port}
    if workers > 1:
        os.environ[scoring_server._SERVER_MODEL_PATH] = local_path
        uvicorn.run(
            "mlflow.pyfunc.scoring_server.app:app", workers=workers, access_log=False, log_level="warning", **where
        )
        return
    app = scoring_app(load_pyfunc(local_path))
    gc.freeze()  # the model and the libraries stay out of every later collection (as the gateway's)
    uvicorn.run(app, access_log=False, log_level="warning", **where)


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.port is None) == (args.uds is None):
        parser.error("give exactly one of --port and --uds")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    spin_briefly()
    run(args.model_uri, args.host, args.port, args.workers, args.uds)


if __name__ == "__main__":
    main()
