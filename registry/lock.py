"""A mutex in the registry itself, so two promotions (two terminals, two machines) never interleave.

MLflow offers no transactions, but creating a registered model whose name already exists fails
atomically in every store (a unique key in SQL, the same through ``mlflow server``). The lock is
the registered model ``<name>.promotion-lock``, held for the few seconds of a move; its
description records the holder and a lease expiry, so a lock left behind by a killed process is
broken once the lease has run out.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mnist_mlops.registry.actor import current_actor
from mnist_mlops.registry.errors import RegistryError

logger = logging.getLogger(__name__)

LOCK_SUFFIX = ".promotion-lock"
LEASE_SECONDS = 60.0
WAIT_SECONDS = 30.0


def lock_name(name: str) -> str:
    return f"{name}{LOCK_SUFFIX}"


def _holder(client: MlflowClient, name: str) -> dict | None:
    try:
        description = client.get_registered_model(lock_name(name)).description or "{}"
    except MlflowException:
        return None
    try:
        return json.loads(description)
    except ValueError:
        return {}


def _try_acquire(client: MlflowClient, name: str, token: str, lease: float) -> bool:
    record = {"holder": current_actor(), "token": token, "expires": time.time() + lease}
    try:
        client.create_registered_model(
            lock_name(name),
            description=json.dumps(record),
            tags={"mnist.lock": "true"},
        )
        return True
    except MlflowException as exc:
        # "Does not exist" is a lost race too: the SQL store, its insert refused, reads the holder's
        # model to word its error, and the holder can release it in between.
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
            raise
    return False


def _break_if_expired(client: MlflowClient, name: str) -> None:
    holder = _holder(client, name)
    if holder is not None and holder.get("expires", 0) < time.time():
        logger.warning("breaking an expired promotion lock left by %s", holder.get("holder"))
        with contextlib.suppress(MlflowException):  # someone else broke it first
            client.delete_registered_model(lock_name(name))


@contextmanager
def registry_lock(
    client: MlflowClient, name: str, wait: float = WAIT_SECONDS, lease: float = LEASE_SECONDS
) -> Iterator[str]:
    """Hold the promotion lock of ``name`` for the duration of the block (yields the token)."""
    token = uuid.uuid4().hex
    deadline = time.monotonic() + wait
    delay = 0.05
    while not _try_acquire(client, name, token, lease):
        _break_if_expired(client, name)
        if time.monotonic() > deadline:
            holder = _holder(client, name) or {}
            raise RegistryError(
                f"another promotion of {name} is in progress (lock held by "
                f"{holder.get('holder', 'unknown')}); try again in a moment"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
    try:
        yield token
    finally:
        holder = _holder(client, name)
        if holder is not None and holder.get("token") == token:
            try:
                client.delete_registered_model(lock_name(name))
            except MlflowException:
                logger.warning("could not release the promotion lock of %s", name)


def still_held(client: MlflowClient, name: str, token: str) -> bool:
    """Whether ``token`` still holds the lock (it is lost only if its lease ran out and was broken)."""
    holder = _holder(client, name)
    return holder is not None and holder.get("token") == token
