"""``mnist-train`` (and the MLproject's ``main`` entry point): train, track, register.

Import-light until the options are parsed: ``--help`` and a bad option answer at once, without
loading torch and MLflow (seconds). The session itself is ``train.session``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

from mnist_mlops.common.progress import interactive
from mnist_mlops.train import interrupt
from mnist_mlops.train.config import parse_config
from mnist_mlops.train.errors import TrainingError

PROG = "mnist-train"


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # MLflow's own INFO chatter (run links, registration notices) would drown the epoch lines.
    logging.getLogger("mlflow").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> None:
    config = parse_config(argv)
    # Before setup_logging: importing MLflow sets its own loggers' level, which ours overrides.
    import torch
    from mlflow.exceptions import MlflowException

    from mnist_mlops.common.store import describe_store_failure, tracking_uri
    from mnist_mlops.registry.errors import RegistryError
    from mnist_mlops.train.session import run

    setup_logging()
    if not interactive():
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    torch.set_float32_matmul_precision("high")
    try:
        with interrupt.stop_requests():
            run(config, Path(__file__).resolve().parent.parent)
    except (TrainingError, RegistryError) as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        raise SystemExit(1) from None
    except MlflowException as exc:
        sys.stderr.write(f"{PROG}: error: {describe_store_failure(tracking_uri(), exc)}\n")
        raise SystemExit(1) from None
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, interrupt.Stopped) else signal.SIGINT
        how = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
        sys.stderr.write(f"{PROG}: {how}; the run is marked failed and nothing was registered\n")
        raise SystemExit(128 + signum) from None


if __name__ == "__main__":
    main()
