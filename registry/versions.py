"""Versions and aliases: resolving a candidate, reading aliases, mirroring the legacy stages.

Aliases are authoritative. Stages are derived from them for users of MLflow's stage view:
``champion`` -> Production, ``challenger`` -> Staging, a version that held one of those stages
and no longer holds an alias -> Archived. MLflow 3 still supports stages but warns that they are
deprecated; the warning is silenced around our own calls only.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from mnist_mlops.registry.defaults import CHALLENGER, CHAMPION
from mnist_mlops.registry.errors import RegistryError

STAGE_FOR_ALIAS = {CHAMPION: "Production", CHALLENGER: "Staging"}
ARCHIVED, NO_STAGE = "Archived", "None"


@contextmanager
def stages_api() -> Iterator[None]:
    """Silence MLflow's stage deprecation warning, for our own calls only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*[Ss]tage.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*[Ss]tage.*")
        yield


def _is_not_found(exc: MlflowException) -> bool:
    return exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE")


def require_model(client: MlflowClient, name: str):
    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if _is_not_found(exc):
            raise RegistryError(f"no registered model named {name!r}; train one first (make quickstart)") from None
        raise


def aliases(client: MlflowClient, name: str) -> dict[str, str]:
    """alias -> version number (as a string) of a registered model."""
    return {alias: str(version) for alias, version in require_model(client, name).aliases.items()}


def resolve(client: MlflowClient, name: str, candidate: str) -> ModelVersion:
    """A version number (``3``, ``v3``) or an alias (``champion``) -> the model version."""
    candidate = str(candidate).strip()
    number = candidate[1:] if candidate[:1] in "vV" and candidate[1:].isdigit() else candidate
    require_model(client, name)
    try:
        if number.isdigit():
            return client.get_model_version(name, number)
        return client.get_model_version_by_alias(name, candidate)
    except MlflowException as exc:
        if not _is_not_found(exc):
            raise
    if number.isdigit():
        raise RegistryError(f"{name} has no version {number}; see `mnist-registry list`") from None
    known = ", ".join(sorted(aliases(client, name))) or "none yet"
    raise RegistryError(f"{name} has no alias {candidate!r} (aliases: {known})") from None


def all_versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    """Every version of ``name``, newest first."""
    versions = client.search_model_versions(f"name = '{name}'", max_results=10_000)
    return sorted(versions, key=lambda v: int(v.version), reverse=True)


def desired_stage(version: ModelVersion, holders: dict[str, str], retired: frozenset[str] = frozenset()) -> str:
    """Production/Staging for the alias holders; Archived for a version that lost its alias."""
    number = str(version.version)
    held = {alias for alias, holder in holders.items() if holder == number}
    for alias in (CHAMPION, CHALLENGER):
        if alias in held:
            return STAGE_FOR_ALIAS[alias]
    current = version.current_stage or NO_STAGE
    return ARCHIVED if current in STAGE_FOR_ALIAS.values() or number in retired else current


def mirror_stages(client: MlflowClient, name: str, retired: frozenset[str] = frozenset()) -> list[tuple[str, str, str]]:
    """Bring every version's stage in line with the aliases; returns (version, old, new) changes.

    ``retired`` are versions that just lost an alias in this move: they are archived even if
    their stage was never mirrored (an alias set by hand in the UI moves no stage).
    """
    holders = aliases(client, name)
    changes = []
    with stages_api():
        for version in all_versions(client, name):
            stage = desired_stage(version, holders, retired)
            if stage != (version.current_stage or NO_STAGE):
                client.transition_model_version_stage(name, version.version, stage)
                changes.append((str(version.version), version.current_stage, stage))
    return changes
