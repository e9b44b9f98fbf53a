"""A scoring backend without the ``mlflow`` CLI in front: MLflow's own scoring app, model preloaded.

    python -m mnist_mlops.serve.backend --model_uri models:/mnist-cnn/3 --port 5001

``mlflow models serve`` spends seconds importing the CLI and then starts a second interpreter
(``uvicorn mlflow.pyfunc.scoring_server.app:app``) that imports everything again. This runs
MLflow's scoring app (``mlflow.pyfunc.scoring_server.init``: the same routes, parsing, errors and
protocol) in one process that loads the model once, so a backend answers sooner. ``--workers``
above 1 falls back to uvicorn's worker processes over the same app. ``serve.warm_pool`` runs
``run`` in a process forked from an interpreter that has imported everything already.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from mnist_mlops.common.cli import OneLineArgumentParser, add_option, whole_number


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="mnist_mlops.serve.backend", description=__doc__.splitlines()[0])
    add_option(parser, "model_uri", required=True, help="models:/NAME/VERSION, models:/NAME@ALIAS or a path")
    add_option(parser, "host", default="127.0.0.1")
    add_option(parser, "port", type=whole_number(1, 65535), required=True)
    add_option(parser, "workers", type=whole_number(1), default=1)
    return parser


def run(model_uri: str, host: str, port: int, workers: int = 1) -> None:
    """Fetch the model, load it, serve MLflow's scoring protocol until stopped."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow
    import uvicorn
    from mlflow.pyfunc import scoring_server

    from mnist_mlops.serve.loading import load_pyfunc

    try:
        local_path = mlflow.artifacts.download_artifacts(model_uri)
    except Exception as exc:  # unknown model/alias, unreachable store
        sys.stderr.write(f"serve.backend: error: cannot fetch {model_uri}: {' '.join(str(exc).split())[:200]}\n")
        raise SystemExit(1) from None
    if workers > 1:
        os.environ[scoring_server._SERVER_MODEL_PATH] = local_path
        uvicorn.run(
            "mlflow.pyfunc.scoring_server.app:app",
            host=host,
            port=port,
            workers=workers,
            access_log=False,
            log_level="warning",
        )
        return
    app = scoring_server.init(load_pyfunc(local_path))
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    run(args.model_uri, args.host, args.port, args.workers)


if __name__ == "__main__":
    main()
