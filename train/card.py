"""The model card of a training run: the served model's figures on every evaluation set.

Each set (``mnist_mlops.registry.evalsets``: other writers, canvas drawings, faint ink, paper and
light, images with no digit) and the MNIST test set as PNG files are scored through the logged
pyfunc, as clients will be answered. The table is logged with the run (``model_card.md`` and
``.json``, shown in the MLflow UI's artifacts) and as metrics (``card_<set>_accuracy``,
``_refused``, ``_ece``), so a promotion can be judged on more than MNIST's test set.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mlflow

from mnist_mlops.registry.evalsets.scoring import SetScore, score_all, table
from mnist_mlops.registry.evalsets.sets import REPORT_SEED, Sources
from mnist_mlops.train.export import example_png

logger = logging.getLogger(__name__)


def model_card(model_uri: str, mnist_root: Path, samples: int) -> list[SetScore]:
    """The figures of the model at ``model_uri``: ``samples`` images per evaluation set (built from
    the report seed) and the whole MNIST test set as PNG files."""
    model = mlflow.pyfunc.load_model(model_uri)
    sources = Sources.load(mnist_root)
    mnist_png = [example_png(image) for image in sources.mnist_images]
    return score_all(model, sources, REPORT_SEED, samples, mnist_png)


def log_card(scores: list[SetScore], run_id: str) -> None:
    """Log the card to the active run: the table as artifacts, each figure as a metric."""
    text = table(scores, f"# Model card, run {run_id}") + (
        "\n\nAccuracy counts a refused image as wrong on the sets that hold a digit; on `nodigit` it is "
        "the share refused. ECE: the gap between confidence and accuracy over 15 confidence bins.\n"
    )
    mlflow.log_text(text, "model_card.md")
    mlflow.log_text(json.dumps([s.to_dict() for s in scores], indent=2), "model_card.json")
    metrics = {}
    for s in scores:
        key = s.name.replace("-", "_")
        metrics[f"card_{key}_accuracy"] = s.accuracy
        metrics[f"card_{key}_refused"] = s.refused
        if s.ece is not None:
            metrics[f"card_{key}_ece"] = s.ece
    mlflow.log_metrics(metrics)
    for s in scores:
        logger.info("model card: %s accuracy %.4f, refused %.3f", s.name, s.accuracy, s.refused)
