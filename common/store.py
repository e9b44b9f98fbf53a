"""Where tracking and registry data live: ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``.

The URI is always resolved here and passed explicitly, never left to MLflow's own default.
Import-light (MLflow is imported by ``client``): command lines resolve the URI before they parse
their options, and ``--help`` should not wait a second for MLflow.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow import MlflowClient

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def tracking_uri(explicit: str | None = None) -> str:
    return explicit or os.environ.get(TRACKING_URI_ENV) or DEFAULT_TRACKING_URI


def client(uri: str | None = None) -> MlflowClient:
    from mlflow import MlflowClient

    uri = tracking_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def describe_store_failure(uri: str, exc: BaseException) -> str:
    """One line saying which store failed and how to fix it (the exception text trimmed); a
    tracking server that refused the caller names the user and what was refused."""
    text = str(exc)
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    endpoint = re.search(r"endpoint (\S+)", text)
    what = f" ({endpoint.group(1)})" if endpoint else ""
    if "error code 401" in text or "UNAUTHENTICATED" in text:
        who = f"user {user!r}" if user else "a request without credentials"
        return (
            f"the tracking server {uri} did not accept {who}{what}: set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD to a user of that server"
        )
    if "error code 403" in text or "PERMISSION_DENIED" in text:
        return (
            f"the tracking server {uri} refused user {user!r} permission for this{what}: "
            "ask its admin for the role that allows it (docs/deployment.md)"
        )
    reason = text.strip().splitlines()[0] if text.strip() else exc.__class__.__name__
    if len(reason) > 200:
        reason = reason[:200] + "..."
    return (
        f"cannot use the tracking store {uri} ({reason}); check that it is reachable and "
        f"writable, or set {TRACKING_URI_ENV}"
    )


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` URI (None for other stores)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def missing_store(uri: str) -> str | None:
    """Why the store at ``uri`` cannot hold a model yet, without creating it: a SQLite file that
    does not exist (opening it would create an empty one). None when it exists or is not SQLite."""
    path = sqlite_path(uri)
    if path is None or path.exists():
        return None
    return (
        f"no tracking store at {path} ({uri}): train a model first (make quickstart), or set "
        f"{TRACKING_URI_ENV} to the store that holds it"
    )
