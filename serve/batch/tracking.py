"""A batch job run as an MLflow run (``mlflow run . -e batch_score``) records what it did there.

``mlflow run`` creates the run, logs the entry point's parameters and hands the run to the job in
``MLFLOW_RUN_ID``. The job adds what only it knows: the version the alias resolved to (params
``model_version``, ``model_run_id``) and its summary (metrics ``scored``, ``failed``,
``images_per_second``, ``seconds``, ``startup_seconds``). Without ``MLFLOW_RUN_ID`` (a plain
``mnist-batch`` command) nothing is logged: an ad-hoc job does not create runs of its own.

The run's status is left to whoever owns it (``mlflow run`` ends it from the job's exit status).
The output is already published when this runs, so a store that refuses the summary costs a
warning, not the job.
"""

from __future__ import annotations

import logging
import os
import time

from mnist_mlops.serve.batch.scoring_model import ScoringModel
from mnist_mlops.serve.batch.summary import Summary

logger = logging.getLogger(__name__)

RUN_ID_ENV = "MLFLOW_RUN_ID"  # set by `mlflow run` for its entry point's process


def summary_metrics(summary: Summary) -> dict[str, float]:
    return {
        "scored": summary.scored,
        "failed": summary.failed,
        "images_per_second": round(summary.images_per_second, 1),
        "seconds": round(summary.seconds, 3),
        "startup_seconds": round(summary.startup_seconds, 3),
    }


def model_params(scoring: ScoringModel) -> dict[str, str]:
    """What the job scored with, beyond the ``model`` URI it was given (empty for a model that
    is not in the registry: its URI is all there is)."""
    return {"model_version": scoring.version, "model_run_id": scoring.run_id} if scoring.version else {}


def log_to_active_run(summary: Summary, scoring: ScoringModel, tracking_uri: str) -> str | None:
    """Log the job's model version and summary to the run in ``MLFLOW_RUN_ID``; the run id, or
    None when there is no such run or the store refused (a warning says why)."""
    run_id = os.environ.get(RUN_ID_ENV)
    if not run_id:
        return None
    from mlflow.entities import Metric, Param

    from mnist_mlops.common.store import client

    now = int(time.time() * 1000)
    try:
        client(tracking_uri).log_batch(
            run_id,
            metrics=[Metric(key, float(value), now, 0) for key, value in summary_metrics(summary).items()],
            params=[Param(key, value) for key, value in model_params(scoring).items()],
        )
    except Exception as exc:  # the output is published already: the job has done its work
        detail = " ".join(str(exc).split())[:200]
        logger.warning("could not log the job's summary to MLflow run %s: %s", run_id, detail)
        return None
    return run_id
