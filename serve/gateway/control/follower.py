"""Follow the registry live: read the aliases and keep every variant's backend in step.

A move made by ``mnist-registry promote``/``rollback`` or by hand in the MLflow UI is seen on the
next read; the pool starts the new version, switches traffic once it answers, and retires the old
one. The same loop restarts backends that died. While the registry has nothing to serve (no such
registered model yet, an alias not set) the gateway keeps following it, and every variant says why
it cannot answer (``/ready``, ``/variants``, the 503's message).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mnist_mlops.common.store import missing_store
from mnist_mlops.registry import api
from mnist_mlops.registry.errors import RegistryError
from mnist_mlops.serve.gateway.control.pool import VariantPool

logger = logging.getLogger(__name__)


async def resolve_aliases(model_name: str, tracking_uri: str) -> dict[str, str]:
    """alias -> version from the registry, off the event loop (the MLflow client blocks)."""
    return await asyncio.to_thread(api.aliases, model_name, tracking_uri)


async def sync_once(pool: VariantPool, model_name: str, tracking_uri: str) -> bool:
    """One read of the registry and the pool brought in step; False when the registry could not
    be read (the reason is on the variants without a backend, and in the log)."""
    if (missing := missing_store(tracking_uri)) is not None:  # reading it would create an empty one
        _unavailable(pool, missing)
        return False
    read_at_move = pool.moves
    try:
        resolved = await resolve_aliases(model_name, tracking_uri)
    except RegistryError as exc:  # no such registered model (yet): a user's to fix
        _unavailable(pool, str(exc))
        return False
    except Exception as exc:  # a registry that is briefly unreachable must not stop serving
        reason = f"cannot read the registry at {tracking_uri}: {' '.join(str(exc).split())[:200]}"
        logger.warning("%s; serving on as before", reason)
        pool.no_model(reason)
        return False
    await pool.sync(resolved, read_at_move)
    return True


def _unavailable(pool: VariantPool, reason: str) -> None:
    """Nothing to serve yet: said on the variants, and in the log once per change of reason."""
    if any(v.last_error != reason for v in pool.variants.values() if v.backend is None):
        logger.warning("%s; the gateway serves it as soon as it exists", reason)
    pool.no_model(reason)


async def follow(
    pool: VariantPool, model_name: str, tracking_uri: str, interval: float, wake: asyncio.Event | None = None
) -> None:
    """Run until cancelled: sync now, then every ``interval`` seconds, or at once when ``wake`` is
    set (a registry webhook: ``serve.gateway.webhooks``). One loop does every read, so an event
    and a poll never sync the pool at the same time."""
    announced = False
    wake = wake or asyncio.Event()
    while True:
        if await sync_once(pool, model_name, tracking_uri) and not announced:
            described = ", ".join(f"{v.alias}=v{v.version}({v.state})" for v in pool.variants.values())
            ready = "ready" if pool.table.is_ready() else "serving, not every variant is up"
            logger.info("gateway %s: %s", ready, described)
            announced = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), interval)
        wake.clear()
