"""The registry's Python API, under the CLI and for ``serve/`` (the gateway follows aliases with it).

    from mnist_mlops.registry import api
    api.resolve("mnist-cnn", "champion")              -> "3"
    api.aliases("mnist-cnn")                          -> {"champion": "3", "challenger": "4"}
    api.history("mnist-cnn")                          -> [Event, ...]
    api.promote("mnist-cnn", "challenger", reason=...) -> Move (gated; raises GateRefused)
    api.rollback("mnist-cnn", reason=...)             -> Move

Every function takes ``tracking_uri`` (default: ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow

from mnist_mlops.common.store import client as make_client
from mnist_mlops.common.store import tracking_uri as resolve_uri
from mnist_mlops.registry import abtest, versions
from mnist_mlops.registry import history as history_module
from mnist_mlops.registry import promote as promote_module
from mnist_mlops.registry.datasets import LabelledData, load
from mnist_mlops.registry.defaults import DEFAULT_MIN_ACCURACY
from mnist_mlops.registry.errors import RegistryError
from mnist_mlops.registry.evaluate import Comparison, evaluate_versions
from mnist_mlops.registry.register import register_version
from mnist_mlops.registry.versions import CHAMPION


def connect(tracking_uri: str | None = None):
    uri = resolve_uri(tracking_uri)
    # pyfunc.load_model("models:/...") reads the global registry URI: keep it in step.
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return make_client(uri)


def register(
    name: str,
    model_uri: str,
    run_id: str,
    test_accuracy: float,
    dataset_fingerprint: str,
    model_id: str | None = None,
    tracking_uri: str | None = None,
    min_accuracy: float = DEFAULT_MIN_ACCURACY,
):
    """Register a logged model as the next version of ``name`` and point the aliases at it
    (``registry.register``: a first version becomes champion at ``min_accuracy`` or above); the
    new ``ModelVersion``."""
    return register_version(
        connect(tracking_uri),
        name,
        model_uri,
        run_id,
        test_accuracy,
        dataset_fingerprint,
        model_id=model_id,
        min_accuracy=min_accuracy,
    )


def resolve(name: str, alias_or_version: str, tracking_uri: str | None = None) -> str:
    """The version number an alias (or a version number) designates now."""
    return str(versions.resolve(connect(tracking_uri), name, alias_or_version).version)


def aliases(name: str, tracking_uri: str | None = None) -> dict[str, str]:
    return versions.aliases(connect(tracking_uri), name)


def history(name: str, tracking_uri: str | None = None, record_outside_moves: bool = True) -> list:
    client = connect(tracking_uri)
    if record_outside_moves:
        return history_module.reconciled(client, name)
    return history_module.read(client, name)


def evaluate(
    name: str,
    candidate: str,
    baseline: str | None = CHAMPION,
    data: LabelledData | None = None,
    mnist_root: Path | None = None,
    tracking_uri: str | None = None,
    log: bool = True,
) -> Comparison:
    client = connect(tracking_uri)
    candidate_version = versions.resolve(client, name, candidate)
    baseline_version = versions.resolve(client, name, baseline) if baseline else None
    data = data or load(None, mnist_root or Path("data"))
    return evaluate_versions(candidate_version, baseline_version, data, log=log)


def evaluate_sets(
    name: str, candidates: list[str], mnist_root: Path, samples: int, tracking_uri: str | None = None
) -> dict[str, list]:
    """Each version's figures on the evaluation sets (``registry.evalsets``), scored through its own
    pyfunc: ``"v<number>" -> [SetScore, ...]``."""
    from mnist_mlops.registry.evalsets.scoring import score_all
    from mnist_mlops.registry.evalsets.sets import REPORT_SEED, Sources

    client = connect(tracking_uri)
    sources = Sources.load(mnist_root)
    scores = {}
    for candidate in candidates:
        version = versions.resolve(client, name, candidate)
        uri = f"models:/{name}/{version.version}"
        try:
            model = mlflow.pyfunc.load_model(uri)
        except Exception as exc:  # deleted artifacts, an incompatible model
            raise RegistryError(f"cannot load {uri}: {' '.join(str(exc).split())[:160]}") from None
        scores[f"v{version.version}"] = score_all(model, sources, REPORT_SEED, samples)
    return scores


def promote(
    name: str,
    candidate: str,
    to: str = CHAMPION,
    reason: str = "",
    force: bool = False,
    gate: promote_module.Gate | None = None,
    data: LabelledData | None = None,
    mnist_root: Path | None = None,
    tracking_uri: str | None = None,
    action: str = "promote",
    comparison: Comparison | None = None,
    extra_figures: dict | None = None,
) -> promote_module.Move:
    """Evaluate ``candidate`` against the current holder of ``to`` and move ``to`` if the gate allows.

    A ``comparison`` made elsewhere (for example by an A/B test on live traffic) may be given instead
    of an offline evaluation; it is recorded as the evidence.
    """
    client = connect(tracking_uri)
    version = versions.resolve(client, name, candidate)
    holder = promote_module.check_promotable(client, name, version, to)
    if comparison is None:
        baseline = versions.resolve(client, name, holder) if holder else None
        data = data or load(None, mnist_root or Path("data"))
        comparison = evaluate_versions(version, baseline, data)
    return promote_module.promote(
        client,
        name,
        version,
        to,
        comparison,
        holder,
        gate=gate,
        reason=reason,
        force=force,
        action=action,
        extra_figures=extra_figures,
    )


def rollback(
    name: str, reason: str, alias: str = CHAMPION, tracking_uri: str | None = None, action: str = "rollback"
) -> promote_module.Move:
    client = connect(tracking_uri)
    return promote_module.rollback(client, name, reason, alias, action=action, verify=_verify_loadable)


def _verify_loadable(version) -> None:
    """Refuse to roll back onto a version whose model artifacts are gone."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            mlflow.artifacts.download_artifacts(f"models:/{version.name}/{version.version}/MLmodel", dst_path=tmp)
    except Exception as exc:  # deleted run or artifacts: MLflow raises several types
        reason = " ".join(str(exc).split())[:160]
        raise RegistryError(f"cannot roll back to v{version.version}: its model cannot be read ({reason})") from None


def apply_ab_decision(
    name: str,
    report: abtest.Report,
    gate: promote_module.Gate | None = None,
    automatic: bool = False,
    tracking_uri: str | None = None,
) -> promote_module.Move | None:
    """Carry out an A/B decision through the registry (gated promotion, or removing the challenger).

    The move lands in the promotion history with the live figures. Nothing happens when the
    decision is to keep testing, or when the aliases moved since the analysis.
    """
    if report.decision == abtest.KEEP:
        return None
    client = connect(tracking_uri)
    current = versions.aliases(client, name)
    if current.get("challenger") != report.challenger.version or current.get("champion") != report.champion.version:
        raise RegistryError(
            f"the aliases moved since the analysis (now champion v{current.get('champion')}, challenger "
            f"v{current.get('challenger')}); analyse again"
        )
    prefix = "auto" if automatic else "abtest"
    figures = abtest.evidence(report)
    reason = "A/B test: " + "; ".join(report.reasons)
    if report.decision == abtest.PROMOTE:
        return promote(
            name,
            report.challenger.version,
            to=CHAMPION,
            reason=reason,
            gate=gate,
            tracking_uri=tracking_uri,
            action=f"{prefix}-promote",
            comparison=report.comparison(),
            extra_figures=figures,
        )
    return promote_module.remove_alias(client, name, "challenger", reason, action=f"{prefix}-rollback", figures=figures)
