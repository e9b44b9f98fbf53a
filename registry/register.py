"""Register a trained model as a new version, tag it and point ``challenger`` at it.

The first version of a model becomes ``champion`` as well, if it passes the promotion gate's
minimum accuracy (what every later promotion must pass): a model that cannot read digits is
registered, but serves no traffic until someone promotes it on purpose. Registration is all or
nothing: if any step after the version's creation fails, the new version is deleted again, so a
failed or interrupted run leaves nothing half-registered.
"""

from __future__ import annotations

import logging
import time

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from mnist_mlops.registry import history
from mnist_mlops.registry.actor import current_actor
from mnist_mlops.registry.defaults import DEFAULT_MIN_ACCURACY
from mnist_mlops.registry.lock import registry_lock
from mnist_mlops.registry.versions import CHALLENGER, CHAMPION, aliases, mirror_stages

logger = logging.getLogger(__name__)

TAG_TEST_ACCURACY = "test_accuracy"
TAG_DATASET = "dataset_fingerprint"
TAG_RUN_ID = "run_id"
READY_TIMEOUT_SECONDS = 300


def ensure_registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.create_registered_model(name, description="MNIST digit classifier: image or 28x28 pixels in, digit out.")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def _wait_until_ready(client: MlflowClient, version: ModelVersion) -> ModelVersion:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while version.status == "PENDING_REGISTRATION" and time.monotonic() < deadline:
        time.sleep(0.5)
        version = client.get_model_version(version.name, version.version)
    if version.status != "READY":
        raise MlflowException(f"version {version.version} ended in status {version.status}")
    return version


def register_version(
    client: MlflowClient,
    name: str,
    model_uri: str,
    run_id: str,
    test_accuracy: float,
    dataset_fingerprint: str,
    model_id: str | None = None,
    min_accuracy: float = DEFAULT_MIN_ACCURACY,
) -> ModelVersion:
    """Create version N of ``name`` from ``model_uri``; set ``challenger``, and ``champion`` when
    there is none yet and ``test_accuracy`` reaches ``min_accuracy``."""
    ensure_registered_model(client, name)
    tags = {
        TAG_TEST_ACCURACY: f"{test_accuracy:.6f}",
        TAG_DATASET: dataset_fingerprint,
        TAG_RUN_ID: run_id,
    }
    version = client.create_model_version(name, source=model_uri, run_id=run_id, tags=tags, model_id=model_id)
    try:
        version = _wait_until_ready(client, version)
        _point_aliases(client, name, str(version.version), run_id, test_accuracy, min_accuracy)
    except BaseException:
        logger.error("registration of %s version %s failed; deleting it", name, version.version)
        try:
            client.delete_model_version(name, version.version)
        except MlflowException:
            logger.exception("could not delete the half-registered version %s", version.version)
        raise
    return client.get_model_version(name, version.version)


def first_champion_refusal(test_accuracy: float, min_accuracy: float) -> str | None:
    """Why a first version may not become champion (None: it may)."""
    if test_accuracy >= min_accuracy:
        return None
    return (
        f"test accuracy {test_accuracy:.4f} is below the promotion gate's minimum {min_accuracy:.4f}; "
        "promote it anyway with `mnist-registry promote challenger --force`"
    )


def _point_aliases(
    client: MlflowClient, name: str, number: str, run_id: str, test_accuracy: float, min_accuracy: float
) -> None:
    actor = current_actor()
    with registry_lock(client, name):
        history.reconcile(client, name)  # record earlier UI moves before adding ours
        holders = aliases(client, name)
        moves = [CHALLENGER]
        refusal = None
        if CHAMPION not in holders:
            refusal = first_champion_refusal(test_accuracy, min_accuracy)
            moves += [] if refusal else [CHAMPION]
        for alias in moves:
            client.set_registered_model_alias(name, alias, number)
            reason = f"registered by training run {run_id}"
            if alias == CHAMPION:
                reason += " (first version: no champion yet)"
            history.append(
                client,
                name,
                history.Event(history.now_iso(), actor, "register", alias, holders.get(alias), number, reason),
            )
        if refusal:
            reason = f"registered by training run {run_id}; not made champion: {refusal}"
            event = history.Event(history.now_iso(), actor, "gate-refused", CHAMPION, None, None, reason)
            history.append(client, name, event)
        mirror_stages(client, name)
