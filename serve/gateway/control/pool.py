"""The control plane's hold on the variants: the split, and a backend per variant in step with the
registry.

``VariantPool`` owns the ``state.Table`` the data plane routes by. ``configure`` sets the split;
``sync`` brings every variant in line with the versions its alias names in the registry: a new
version is started, gets traffic once it answers and passes the gate on follow
(``follow_gate``), and the old backend is retired after its requests in flight have finished.
``watch`` restarts a backend within a fraction of a second of its death (or of the data plane
failing to reach it), not at the next read of the registry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from mnist_mlops.registry.errors import RegistryError
from mnist_mlops.serve.gateway.control import launcher
from mnist_mlops.serve.gateway.control.follow_gate import FollowGate, GateUnavailable
from mnist_mlops.serve.gateway.control.launcher import Launcher
from mnist_mlops.serve.gateway.metrics import GatewayMetrics
from mnist_mlops.serve.gateway.split import validate_split
from mnist_mlops.serve.gateway.state import Backend, Table, Variant
from mnist_mlops.serve.gateway.tasks import TaskSet

logger = logging.getLogger(__name__)

WAKE_BACKOFF_LIMIT = 60.0  # seconds: the longest wait between two tries to wake a variant that fails


@dataclass
class VariantPool:
    launcher: Launcher
    metrics: GatewayMetrics
    client: httpx.AsyncClient
    start_timeout: float = 180.0
    drain_timeout: float = 60.0
    # The gate on follow (``follow_gate``), built on first use; None: the alias alone decides.
    gate: Callable[[], Awaitable[FollowGate]] | None = None
    # Told of each refusal (alias, serving version, refused version, reason, figures): the history.
    on_refusal: Callable[..., Awaitable[None]] | None = None
    table: Table = field(default_factory=Table)
    tasks: TaskSet = field(default_factory=TaskSet)
    # Scale to zero: with min_replicas 0, a variant's backend stops after idle_after seconds
    # without a request and starts again on the next one (``wake``); 1 keeps every backend up.
    min_replicas: int = 1
    idle_after: float = 60.0
    _waking: dict[str, asyncio.Task] = field(default_factory=dict)

    @property
    def variants(self) -> dict[str, Variant]:
        return self.table.variants

    def weights(self) -> dict[str, float]:
        """The configured split (``PUT /admin/split``'s), whatever the registry holds now."""
        return {alias: variant.weight for alias, variant in self.variants.items()}

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

    def no_model(self, reason: str) -> None:
        """The registry holds nothing to serve yet: say so on every variant that has no backend."""
        for variant in self.variants.values():
            if variant.backend is None:
                variant.state, variant.last_error = "absent", reason

    async def watch(self, interval: float = 0.2) -> None:
        """Restart, at once, each backend started here that died or that the data plane could not
        reach and that no longer answers ``/ping``. (A restart that failed is tried again at the
        next read of the registry, ``_sync_variant``, not in a tight loop here.)"""
        while True:
            await asyncio.sleep(interval)
            for variant in list(self.variants.values()):
                backend = variant.backend
                if backend is None or backend.handle is None or variant.state != "ready":
                    continue
                if not backend.alive():
                    self.spawn(self._restart(variant))
                elif backend.failed:
                    backend.failed = False
                    if not await launcher.healthy(backend, self.client):
                        self.spawn(self._restart(variant))

    async def _sync_variant(self, variant: Variant, version: str | None) -> None:
        if self.min_replicas == 0 and version is not None and not variant.external_url:
            if variant.backend is None and variant.idle_version is None and variant.state in ("starting", "absent"):
                variant.in_registry, variant.idle_version = True, version
                variant.state, variant.last_error = "idle", None
                logger.info("alias %s: v%s at zero replicas until a request comes", variant.alias, version)
                return
            if variant.asleep and version != variant.idle_version and time.monotonic() >= variant.wake_retry_at:
                try:  # awake, the gate on follow compares the new version with the old one
                    await self.wake(variant)
                except Exception:  # logged by _wake; the next read of the registry tries again
                    return
        variant.in_registry = version is not None
        if version is None:
            variant.last_error = f"alias {variant.alias!r} is not set in the registry"
            if variant.backend is None:
                variant.state = "absent"
            return
        if variant.backend is not None and not variant.backend.alive():
            if variant.state != "down":  # not already being restarted
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
            await launcher.wait_healthy(backend, self.client, self.start_timeout)
        except BaseException:
            await launcher.stop(backend)
            raise
        return backend

    async def _switch(self, variant: Variant, version: str) -> None:
        """Start ``version``, wait until it answers, move traffic to it, then retire the old one."""
        variant.pending_version = version
        if variant.backend is None:
            variant.state, variant.last_error = "starting", None
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
        if variant.backend is not None and not await self._passes_gate(variant, backend):
            return
        old, variant.backend = variant.backend, backend
        variant.state, variant.failed_version, variant.last_error = "ready", None, None
        self.metrics.alias_switches.labels(variant.alias).inc()
        logger.info("alias %s now served by v%s (%s)", variant.alias, version, backend.url)
        if old is not None:
            self.spawn(self._retire(old))

    async def _passes_gate(self, variant: Variant, candidate: Backend) -> bool:
        """Whether ``candidate`` (started, not yet serving) may replace the variant's backend; a
        refused version is stopped, not tried again, and shown, counted and recorded."""
        if self.gate is None:
            return True
        try:
            reason, figures = await (await self.gate()).refusal(candidate, variant.backend)
        except (GateUnavailable, RegistryError) as exc:
            reason, figures = f"the gate could not run ({exc}); --no_follow_gate lets the alias alone decide", {}
        if reason is None:
            logger.info("alias %s: v%s passed the gate on follow %s", variant.alias, candidate.version, figures)
            return True
        await launcher.stop(candidate)
        variant.failed_version = candidate.version
        variant.last_error = f"v{candidate.version} refused by the gate: {reason}"
        self.metrics.follow_gate_refusals.labels(variant.alias).inc()
        logger.error("alias %s: %s; traffic stays on v%s", variant.alias, variant.last_error, variant.version)
        if self.on_refusal is not None:
            self.spawn(self.on_refusal(variant.alias, variant.version, candidate.version, reason, figures))
        return False

    def wake(self, variant: Variant) -> asyncio.Task:
        """Start the backend of a variant scaled to zero; every request that finds it asleep waits
        on the same task. It takes traffic only once it has answered a real prediction."""
        task = self._waking.get(variant.alias)
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._wake(variant))
            # A failure is logged by _wake and raised to each waiter; with none left, not again.
            task.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._waking[variant.alias] = task
        return task

    async def _wake(self, variant: Variant) -> None:
        version, started = variant.idle_version, time.monotonic()
        variant.state, variant.last_error = "waking", None
        try:
            backend = await self._start(variant, version)
            if not await launcher.answers_a_prediction(backend, self.client):
                await launcher.stop(backend)
                raise RuntimeError(f"v{version} started but did not answer a prediction")
        except Exception as exc:
            variant.wake_failures += 1
            backoff = min(WAKE_BACKOFF_LIMIT, 2.0 ** (variant.wake_failures - 1))
            variant.wake_retry_at = time.monotonic() + backoff
            variant.state, variant.last_error = "idle", f"v{version} failed to wake: {exc}"
            self.metrics.wake_failures.labels(variant.alias).inc()
            logger.error("alias %s: %s; next try in %.0f s at the earliest", variant.alias, variant.last_error, backoff)
            raise
        if variant.idle_version != version or variant.backend is not None:  # the split or registry moved on
            self.spawn(self._retire(backend))
            return
        variant.backend, variant.idle_version, variant.state = backend, None, "ready"
        variant.wake_failures, variant.last_request = 0, time.monotonic()
        elapsed = variant.last_request - started
        self.metrics.wakes.labels(variant.alias).inc()
        self.metrics.wake_seconds.observe(elapsed)
        logger.info("alias %s: v%s woken in %.2f s", variant.alias, version, elapsed)

    async def scale_to_zero(self, interval: float = 0.5) -> None:
        """With ``min_replicas`` 0: stop each backend started here that has had no request for
        ``idle_after`` seconds and has none in flight; its variant sleeps until the next request."""
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for variant in list(self.variants.values()):
                backend = variant.backend
                if (
                    backend is None
                    or backend.handle is None
                    or variant.state != "ready"
                    or variant.pending_version is not None
                    or backend.in_flight > 0
                    or now - variant.last_request < self.idle_after
                ):
                    continue
                variant.backend, variant.idle_version, variant.state = None, backend.version, "idle"
                self.metrics.sleeps.labels(variant.alias).inc()
                logger.info(
                    "alias %s: no request for %.0f s; v%s scaled to zero",
                    variant.alias,
                    self.idle_after,
                    backend.version,
                )
                self.spawn(self._retire(backend))

    async def _restart(self, variant: Variant) -> None:
        """A backend died: restart the same version (meanwhile the data plane's fallback rules hold)."""
        dead = variant.backend
        if dead is None or variant.state == "down":
            return
        variant.state = "down"
        variant.last_error = f"backend for v{dead.version} {dead.exit_status()}; restarting"
        variant.restarts += 1
        self.metrics.backend_restarts.labels(variant.alias).inc()
        logger.warning("alias %s: %s", variant.alias, variant.last_error)
        await launcher.stop(dead)  # whatever is left of its process group
        try:
            backend = await self._start(variant, dead.version)
        except Exception as exc:
            variant.last_error = f"restart of v{dead.version} failed: {exc}"
            variant.state = "failed"  # the next read of the registry tries again
            return
        if variant.backend is not dead:  # the alias moved meanwhile: the new version's backend serves
            self.spawn(self._retire(backend))
            return
        variant.backend, variant.state, variant.last_error = backend, "ready", None
        logger.info("alias %s: backend for v%s restarted", variant.alias, dead.version)

    async def _retire(self, backend: Backend) -> None:
        await launcher.drain(backend, self.drain_timeout)
        await launcher.stop(backend)
        logger.info("stopped backend for v%s (%s)", backend.version, backend.url)

    def spawn(self, coroutine) -> None:
        self.tasks.spawn(coroutine)

    async def close(self) -> None:
        await self.tasks.wait()
        await asyncio.gather(*(launcher.stop(v.backend) for v in self.variants.values() if v.backend))
        await self.launcher.close()
