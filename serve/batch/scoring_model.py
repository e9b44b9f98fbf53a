"""The model a batch job scores with: an alias resolved once, then pinned to its version."""

from __future__ import annotations

import re
from dataclasses import dataclass

import mlflow
from mlflow.exceptions import MlflowException

from mnist_mlops.serve.batch.errors import BatchError
from mnist_mlops.serve.loading import load_pyfunc

_REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))$")


@dataclass(frozen=True)
class ScoringModel:
    uri: str  # pinned: models:/<name>/<version>, or the path/URI given when it is not a registry URI
    name: str
    version: str
    run_id: str


def resolve(model_uri: str) -> ScoringModel:
    """Resolve ``models:/name@alias`` (or ``/version``) once; other URIs are used as given."""
    match = _REGISTRY_URI.match(model_uri)
    if not match:
        return ScoringModel(uri=model_uri, name=model_uri, version="", run_id="")
    client = mlflow.MlflowClient()
    name = match["name"]
    try:
        if match["alias"]:
            version = client.get_model_version_by_alias(name, match["alias"])
        else:
            version = client.get_model_version(name, match["version"])
    except MlflowException as exc:
        detail = " ".join(str(exc).split())[:160]
        raise BatchError(f"cannot resolve {model_uri}: {detail}") from None
    return ScoringModel(
        uri=f"models:/{name}/{version.version}",
        name=name,
        version=str(version.version),
        run_id=version.run_id or "",
    )


def load(model: ScoringModel, local_copy: str | None = None, check_environment: bool = True):
    """The pyfunc of ``model`` (from ``local_copy`` when given); a failure names ``model.uri``.
    ``check_environment``: as ``serve.model_loading.load_pyfunc``."""
    try:
        return load_pyfunc(local_copy or model.uri, check_environment)
    except Exception as exc:  # missing artifacts, bad URI, incompatible model: all fatal for the job
        raise cannot_load(model.uri, exc) from None


def cannot_load(model_uri: str, exc: BaseException) -> BatchError:
    """The job's one line for a model that cannot be fetched or loaded, ``exc`` on one line."""
    detail = " ".join(str(exc).split())[:200]
    return BatchError(f"cannot load the model {model_uri}: {detail}")
