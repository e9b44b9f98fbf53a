"""Follow the registry live: poll the aliases and keep every variant's backend in step.

A move made by ``mnist-registry promote``/``rollback`` or by hand in the MLflow UI is seen on the
next poll; the pool starts the new version, switches traffic once it answers, and retires the
old one. The same loop restarts backends that died.
"""

from __future__ import annotations

import asyncio
import logging

from registry import api
from serve.gateway.variants import VariantPool

logger = logging.getLogger(__name__)


async def resolve_aliases(model_name: str, tracking_uri: str) -> dict[str, str]:
    """alias -> version from the registry, off the event loop (the MLflow client blocks)."""
    return await asyncio.to_thread(api.aliases, model_name, tracking_uri)


async def follow(pool: VariantPool, model_name: str, tracking_uri: str, interval: float) -> None:
    """Run until cancelled: every ``interval`` seconds, resolve the aliases and sync the pool."""
    while True:
        await asyncio.sleep(interval)
        try:
            await pool.sync(await resolve_aliases(model_name, tracking_uri))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a registry that is briefly unreachable must not stop serving
            logger.warning("could not read the registry (%s); serving on as before", " ".join(str(exc).split())[:200])
