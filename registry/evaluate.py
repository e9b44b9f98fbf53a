"""Score registered versions on labelled data and compare them, with MLflow's evaluation API.

Predictions come from the version's own pyfunc (the same ``predict`` that serves traffic), once per
version; ``mlflow.models.evaluate`` then computes and logs the standard classifier metrics and
plots for each, linked to the version's logged model, in one evaluation run. The comparison adds
what a promotion decision needs: accuracy with a 95% Wilson interval, per-class recall, the paired
difference with its interval, and where the two disagree (with McNemar's exact test).
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion

from mnist_mlops.common.dataset_link import link_dataset
from mnist_mlops.registry.datasets import LabelledData
from mnist_mlops.registry.errors import RegistryError

logger = logging.getLogger(__name__)

EVALUATION_EXPERIMENT = "mnist-cnn-evaluations"
CHUNK_ROWS = 1024
Z95 = 1.959963984540054


def wilson_interval(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of ``correct / total`` (SciPy's); (0, 1) when nothing was counted."""
    if total == 0:
        return (0.0, 1.0)
    # Imported here: scipy.stats costs every mnist-registry command most of a second to import.
    from scipy.stats import binomtest

    interval = binomtest(correct, total).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(interval.low), float(interval.high))


@dataclass(frozen=True)
class VersionScore:
    version: str
    accuracy: float
    interval: tuple[float, float]
    recall: list[float]  # per digit 0..9
    failed_rows: int  # rows the model answered with an error (counted as wrong)

    def summary(self) -> dict:
        return {
            "version": self.version,
            "accuracy": round(self.accuracy, 6),
            "ci95": [round(v, 6) for v in self.interval],
            "failed_rows": self.failed_rows,
        }


@dataclass(frozen=True)
class Comparison:
    data: str
    count: int
    candidate: VersionScore
    baseline: VersionScore | None
    candidate_only_right: int = 0
    baseline_only_right: int = 0
    disagreements: int = 0
    difference: float = 0.0
    difference_interval: tuple[float, float] = (0.0, 0.0)
    mcnemar_p: float = 1.0
    evaluation_run_id: str | None = None

    def figures(self) -> dict:
        """The compact record kept with a promotion in the history."""
        figures = {"data": self.data, "count": self.count, "candidate": self.candidate.summary()}
        if self.baseline is not None:
            figures |= {
                "baseline": self.baseline.summary(),
                "difference": round(self.difference, 6),
                "difference_ci95": [round(v, 6) for v in self.difference_interval],
                "mcnemar_p": round(self.mcnemar_p, 6),
                "disagreements": self.disagreements,
            }
        if self.evaluation_run_id:
            figures["evaluation_run_id"] = self.evaluation_run_id
        return figures

    def to_dict(self) -> dict:
        return asdict(self)


def predict_labels(version: ModelVersion, data: LabelledData) -> np.ndarray:
    """Labels from the version's pyfunc; -1 where it answered a row with an error."""
    uri = f"models:/{version.name}/{version.version}"
    try:
        model = mlflow.pyfunc.load_model(uri)
    except Exception as exc:  # missing artifacts, deleted run, incompatible model
        reason = " ".join(str(exc).split())[:160]
        raise RegistryError(f"cannot load {uri} (its run or artifacts may be deleted): {reason}") from None
    labels = []
    for start in range(0, len(data.inputs), CHUNK_ROWS):
        chunk = data.inputs.iloc[start : start + CHUNK_ROWS].reset_index(drop=True)
        answer = model.predict(chunk, params={"on_error": "row"})
        labels.extend(-1 if label is None or pd.isna(label) else int(label) for label in answer["label"])
    return np.asarray(labels, dtype=np.int64)


def score(version: str, predicted: np.ndarray, labels: np.ndarray) -> VersionScore:
    correct = predicted == labels
    recall = [float(correct[labels == d].mean()) if (labels == d).any() else float("nan") for d in range(10)]
    return VersionScore(
        version=version,
        accuracy=float(correct.mean()),
        interval=wilson_interval(int(correct.sum()), len(labels)),
        recall=recall,
        failed_rows=int((predicted < 0).sum()),
    )


def compare(
    data: LabelledData, candidate: tuple[str, np.ndarray], baseline: tuple[str, np.ndarray] | None
) -> Comparison:
    labels = data.labels
    candidate_score = score(candidate[0], candidate[1], labels)
    if baseline is None:
        return Comparison(data.name, len(labels), candidate_score, None)
    right_c, right_b = candidate[1] == labels, baseline[1] == labels
    only_c, only_b = int((right_c & ~right_b).sum()), int((right_b & ~right_c).sum())
    n = len(labels)
    difference = (only_c - only_b) / n
    variance = max((only_c + only_b) - (only_c - only_b) ** 2 / n, 0.0) / (n * n)
    half = Z95 * math.sqrt(variance)
    # Imported here: scipy.stats costs every mnist-registry command most of a second to import.
    from scipy.stats import binomtest

    p = binomtest(only_c, only_c + only_b, 0.5).pvalue if only_c + only_b else 1.0
    return Comparison(
        data=data.name,
        count=n,
        candidate=candidate_score,
        baseline=score(baseline[0], baseline[1], labels),
        candidate_only_right=only_c,
        baseline_only_right=only_b,
        disagreements=int((candidate[1] != baseline[1]).sum()),
        difference=difference,
        difference_interval=(difference - half, difference + half),
        mcnemar_p=float(p),
    )


def _log_with_mlflow_evaluate(version: ModelVersion, predicted: np.ndarray, data: LabelledData, prefix: str) -> None:
    frame = pd.DataFrame({"prediction": predicted, "label": data.labels})
    with warnings.catch_warnings():
        # Schema-inference hints about integer columns, and sklearn's notes on classes a weak model
        # never predicts, are noise here: the figures themselves carry that information.
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(frame, name=data.name, targets="label", predictions="prediction")
        # The context is the one evaluate tags its input with (the metric prefix).
        link_dataset(dataset, context=prefix)
        mlflow.models.evaluate(
            data=dataset,
            model_type="classifier",
            evaluator_config={"log_model_explainability": False, "metric_prefix": prefix},
            model_id=getattr(version, "model_id", None),
        )


def evaluate_versions(
    candidate: ModelVersion, baseline: ModelVersion | None, data: LabelledData, log: bool = True
) -> Comparison:
    """Score both versions on ``data``; log the evaluation to MLflow (one run) unless ``log`` is off."""
    predicted_c = predict_labels(candidate, data)
    predicted_b = predict_labels(baseline, data) if baseline is not None else None
    comparison = compare(
        data,
        (str(candidate.version), predicted_c),
        (str(baseline.version), predicted_b) if baseline is not None else None,
    )
    if not log:
        return comparison
    title = f"v{candidate.version}" + (f" vs v{baseline.version}" if baseline is not None else "")
    mlflow.set_experiment(EVALUATION_EXPERIMENT)
    with mlflow.start_run(run_name=f"evaluate {candidate.name} {title}") as run:
        mlflow.set_tags({"model_name": candidate.name, "candidate_version": str(candidate.version)})
        _log_with_mlflow_evaluate(candidate, predicted_c, data, "candidate_")
        if baseline is not None:
            mlflow.set_tag("baseline_version", str(baseline.version))
            _log_with_mlflow_evaluate(baseline, predicted_b, data, "baseline_")
            mlflow.log_metrics(
                {
                    "accuracy_difference": comparison.difference,
                    "mcnemar_p": comparison.mcnemar_p,
                    "disagreements": comparison.disagreements,
                }
            )
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "comparison.json"
            path.write_text(json.dumps(comparison.to_dict(), indent=2))
            mlflow.log_artifact(str(path))
    return Comparison(**{**comparison.__dict__, "evaluation_run_id": run.info.run_id})
