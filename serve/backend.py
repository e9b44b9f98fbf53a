"""A scoring backend without the ``mlflow`` CLI in front: MLflow's own scoring app, model preloaded.

    python -m serve.backend --model_uri models:/mnist-cnn/3 --port 5001

``mlflow models serve`` spends seconds importing the CLI and then starts a second interpreter
(``uvicorn mlflow.pyfunc.scoring_server.app:app``) that imports everything again. This runs
MLflow's scoring app (``mlflow.pyfunc.scoring_server.init``: the same routes, parsing, errors and
protocol) in one process that loads the model once, so a backend answers sooner. ``--workers``
above 1 falls back to uvicorn's worker processes over the same app.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from registry.cliargs import OneLineArgumentParser, add_option, whole_number


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="serve.backend", description=__doc__.splitlines()[0])
    add_option(parser, "model_uri", required=True, help="models:/NAME/VERSION, models:/NAME@ALIAS or a path")
    add_option(parser, "host", default="127.0.0.1")
    add_option(parser, "port", type=whole_number(1, 65535), required=True)
    add_option(parser, "workers", type=whole_number(1), default=1)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow
    import uvicorn
    from mlflow.pyfunc import scoring_server

    try:
        local_path = mlflow.artifacts.download_artifacts(args.model_uri)
    except Exception as exc:  # unknown model/alias, unreachable store
        sys.stderr.write(f"serve.backend: error: cannot fetch {args.model_uri}: {' '.join(str(exc).split())[:200]}\n")
        raise SystemExit(1) from None
    if args.workers > 1:
        os.environ[scoring_server._SERVER_MODEL_PATH] = local_path
        uvicorn.run(
            "mlflow.pyfunc.scoring_server.app:app",
            host=args.host,
            port=args.port,
            workers=args.workers,
            access_log=False,
            log_level="warning",
        )
        return
    app = scoring_server.init(mlflow.pyfunc.load_model(local_path))
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
