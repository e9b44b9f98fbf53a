"""Variants: one per alias in the split, each with the backend that serves its current version.

Routing reads the pool; the follower (``serve.gateway.follower``) changes it. Everything runs on
the gateway's event loop, so swapping a variant's backend is a single assignment: a request
picks a backend once and keeps it, and the old backend is stopped only after its requests
in flight have finished.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field

import httpx

from serve.gateway.backends import Backend, Launcher
from serve.gateway.errors import Unavailable
from serve.gateway.metrics import GatewayMetrics
from serve.gateway.split import random_choice, sticky_choice, validate_split

logger = logging.getLogger(__name__)

CHAMPION = "champion"


@dataclass
class Variant:
    alias: str
    weight: float
    backend: Backend | None = None
    state: str = "starting"  # starting | ready | down | failed | absent
    pending_version: str | None = None  # a new version being started for this alias
    failed_version: str | None = None  # a version that would not start: not retried on every poll
    last_error: str | None = None
    external_url: str | None = None  # a backend that runs elsewhere (not started or stopped here)
    requests: int = 0
    errors: int = 0
    restarts: int = 0
    batcher: object | None = None  # serve.gateway.batching.Batcher, when micro-batching is on

    @property
    def version(self) -> str | None:
        return self.backend.version if self.backend else None

    @property
    def ready(self) -> bool:
        return self.backend is not None and self.state == "ready"

    def describe(self) -> dict:
        return {
            "alias": self.alias,
            "version": self.version,
            "weight": self.weight,
            "state": self.state,
            "backend": self.backend.url if self.backend else None,
            "pid": self.backend.pid if self.backend else None,
            "pending_version": self.pending_version,
            "failed_version": self.failed_version,
            "last_error": self.last_error,
            "requests": self.requests,
            "errors": self.errors,
            "in_flight": self.backend.in_flight if self.backend else 0,
            "restarts": self.restarts,
        }


@dataclass
class VariantPool:
    launcher: Launcher
    metrics: GatewayMetrics
    client: httpx.AsyncClient
    start_timeout: float = 180.0
    drain_timeout: float = 60.0
    variants: dict[str, Variant] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)
    _tasks: set[asyncio.Task] = field(default_factory=set)

    # --- routing -----------------------------------------------------------------------------
    def weights(self) -> dict[str, float]:
        return {alias: v.weight for alias, v in self.variants.items()}

    def route(self, user_key: str | None) -> Variant:
        """The variant for a request: sticky per ``user_key``, weighted random without one.

        The choice uses the configured weights whatever the backends' state, so stickiness does
        not depend on health; a variant that is not ready hands its request to the champion.
        """
        weights = self.weights()
        alias = sticky_choice(weights, user_key) if user_key else random_choice(weights, self.rng)
        chosen = self.variants[alias]
        if chosen.ready:
            return chosen
        fallback = self.variants.get(CHAMPION)
        if fallback is not None and fallback.ready:
            return fallback
        ready = [v for v in self.variants.values() if v.ready]
        if ready:
            return ready[0]
        raise Unavailable("no model backend is ready yet; retry shortly", headers={"Retry-After": "2"})

    def is_ready(self) -> bool:
        return all(v.ready for v in self.variants.values() if v.weight > 0)

    # --- changes -----------------------------------------------------------------------------
    def configure(self, weights: dict[str, float], external: dict[str, str] | None = None) -> None:
        """Set the split; new aliases get variants (their backends start on the next sync), and
        the backends started from now on the share of the cores of the new number of backends."""
        weights = validate_split(weights)
        for alias, weight in weights.items():
            variant = self.variants.get(alias)
            if variant is None:
                self.variants[alias] = Variant(alias, weight, external_url=(external or {}).get(alias))
            else:
                variant.weight = weight
        for alias in [a for a in self.variants if a not in weights]:
            variant = self.variants.pop(alias)
            if variant.backend is not None:
                self.spawn(self._retire(variant.backend))
        self.launcher.share_cores(self.backends_started_here())

    def backends_started_here(self) -> int:
        """Backends this gateway runs itself: one per alias not served from a URL. (A rollout's
        new backend overlaps the old one only while it starts.)"""
        return sum(1 for variant in self.variants.values() if not variant.external_url)

    async def sync(self, resolved: dict[str, str]) -> None:
        """Bring every variant in line with the registry (``alias -> version``), concurrently."""
        jobs = [self._sync_variant(variant, resolved.get(alias)) for alias, variant in list(self.variants.items())]
        await asyncio.gather(*jobs)

    async def _sync_variant(self, variant: Variant, version: str | None) -> None:
        if version is None:
            if variant.backend is None:
                variant.state, variant.last_error = (
                    "absent",
                    f"alias {variant.alias!r} is not set in the registry",
                )
            return
        if variant.backend is not None and not variant.backend.alive():
            await self._restart(variant)
            return
        wanted_new = version != variant.version
        if not wanted_new or version in (variant.pending_version, variant.failed_version):
            return
        await self._switch(variant, version)

    async def _start(self, variant: Variant, version: str) -> Backend:
        if variant.external_url:
            backend = Backend(version=version, url=variant.external_url)
        else:
            backend = await self.launcher.start(version)
        try:
            await backend.wait_healthy(self.client, self.start_timeout)
        except BaseException:
            await backend.stop()
            raise
        return backend

    async def _switch(self, variant: Variant, version: str) -> None:
        """Start ``version``, wait until it answers, move traffic to it, then retire the old one."""
        variant.pending_version = version
        if variant.backend is None:
            variant.state = "starting"
        try:
            backend = await self._start(variant, version)
        except Exception as exc:  # a version that will not start: traffic stays where it was
            variant.failed_version, variant.last_error = version, f"v{version} failed to start: {exc}"
            if variant.backend is None:
                variant.state = "failed"
            logger.error("alias %s: %s; traffic stays on v%s", variant.alias, variant.last_error, variant.version)
            return
        finally:
            variant.pending_version = None
        old, variant.backend = variant.backend, backend
        variant.state, variant.failed_version, variant.last_error = "ready", None, None
        self.metrics.alias_switches.labels(variant.alias).inc()
        logger.info("alias %s now served by v%s (%s)", variant.alias, version, backend.url)
        if old is not None:
            self.spawn(self._retire(old))

    async def _restart(self, variant: Variant) -> None:
        """A backend died: restart the same version; meanwhile its share goes to the champion."""
        dead = variant.backend
        variant.state = "down"
        variant.last_error = f"backend for v{dead.version} {dead.exit_status()}; restarting"
        variant.restarts += 1
        self.metrics.backend_restarts.labels(variant.alias).inc()
        logger.warning("alias %s: %s", variant.alias, variant.last_error)
        await dead.stop()  # whatever is left of its process group
        try:
            backend = await self._start(variant, dead.version)
        except Exception as exc:
            variant.last_error = f"restart of v{dead.version} failed: {exc}"
            return
        variant.backend, variant.state, variant.last_error = backend, "ready", None

    async def _retire(self, backend: Backend) -> None:
        await backend.drain(self.drain_timeout)
        await backend.stop()
        logger.info("stopped backend for v%s (%s)", backend.version, backend.url)

    def spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            await task
        await asyncio.gather(*(v.backend.stop() for v in self.variants.values() if v.backend))
        await self.launcher.close()
