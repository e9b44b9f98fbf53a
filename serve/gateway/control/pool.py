"""The control plane's hold on the variants: the split, and the replicas of each variant in step
with the registry and with demand.

``VariantPool`` owns the ``state.Table`` the data plane routes by. ``configure`` sets the split;
``sync`` brings every variant in line with the versions its alias names in the registry: a new
version is started (as many replicas as serve the old one), gets traffic once it answers and
passes the gate on follow (``follow_gate``), and the old replicas are retired after their requests
in flight have finished. ``watch`` replaces a replica within a fraction of a second of its death
(or of the data plane failing to reach it), not at the next read of the registry. ``autoscale``
sizes each variant between its floor and ``max_replicas`` on observed concurrency
(``autoscaler``); ``scale_to_zero`` stops an idle variant's replicas and ``wake`` starts one again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import httpx

from mnist_mlops.registry.errors import RegistryError
from mnist_mlops.serve.gateway.control import launcher
from mnist_mlops.serve.gateway.control.autoscaler import Autoscaler
from mnist_mlops.serve.gateway.control.follow_gate import FollowGate, GateUnavailable
from mnist_mlops.serve.gateway.control.launcher import Launcher
from mnist_mlops.serve.gateway.metrics import GatewayMetrics
from mnist_mlops.serve.gateway.settings import ScalingPolicy
from mnist_mlops.serve.gateway.split import validate_split
from mnist_mlops.serve.gateway.state import Backend, Table, Variant
from mnist_mlops.serve.gateway.tasks import TaskSet

logger = logging.getLogger(__name__)

START_BACKOFF_LIMIT = 60.0  # seconds: the longest wait between two tries to start a replica that fails


def backoff(failures: int) -> float:
    """Seconds before the next try after ``failures`` failed starts in a row: 1, 2, 4 ... 60."""
    return min(START_BACKOFF_LIMIT, 2.0 ** (failures - 1))


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
    # The autoscaler: each variant between max(min_replicas, 1) and max_replicas while awake.
    max_replicas: int = 1
    scaling: ScalingPolicy = field(default_factory=ScalingPolicy)
    # Told every ``meter_every`` seconds of the replica-seconds held since (``InferenceLog.record_replica_time``).
    meter: Callable[[list[dict]], None] | None = None
    meter_every: float = 15.0
    moves: int = 0  # registry moves made here and finished (``local_move``); see ``sync``
    _moving: int = 0  # registry moves made here and under way
    _waking: dict[str, asyncio.Task] = field(default_factory=dict)
    _scalers: dict[str, Autoscaler] = field(default_factory=dict)
    _held: dict[tuple[str, str], float] = field(default_factory=dict)  # (alias, version) -> replica-seconds
    _metered_since: float = field(default_factory=time.time)
    _identity: str = field(default_factory=lambda: f"{socket.gethostname()[:40]}:{os.getpid()}:{int(time.time())}")

    @property
    def variants(self) -> dict[str, Variant]:
        return self.table.variants

    def weights(self) -> dict[str, float]:
        """The configured split (``PUT /admin/split``'s), whatever the registry holds now."""
        return {alias: variant.weight for alias, variant in self.variants.items()}

    @contextlib.contextmanager
    def local_move(self) -> Iterator[None]:
        """Around a registry move made by the gateway itself (an automatic rollback): a registry read
        that overlaps it, begun before or finished during it, is not applied (``sync``)."""
        self._moving += 1
        try:
            yield
        finally:
            self._moving -= 1
            self.moves += 1

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
            self._scalers.pop(alias, None)
            for backend in variant.replicas:
                self.spawn(self._retire(backend))
        self.launcher.share_cores(self.backends_started_here())

    def backends_started_here(self) -> int:
        """Backends this gateway may run at once: ``max_replicas`` per alias not served from a URL.
        (A rollout's new replicas overlap the old ones only while they start.)"""
        return self.max_replicas * sum(1 for variant in self.variants.values() if not variant.external_url)

    async def sync(self, resolved: dict[str, str], read_at_move: int | None = None) -> None:
        """Bring every variant in line with the registry (``alias -> version``), concurrently.

        ``read_at_move`` is ``moves`` when the registry read began: a read that overlaps a move made
        here (``local_move``) may predate it, and is dropped rather than undo it (the next read applies)."""
        if read_at_move is not None and (self._moving or read_at_move != self.moves):
            return
        jobs = [self._sync_variant(variant, resolved.get(alias)) for alias, variant in list(self.variants.items())]
        await asyncio.gather(*jobs)

    def no_model(self, reason: str) -> None:
        """The registry holds nothing to serve yet: say so on every variant that has no backend."""
        for variant in self.variants.values():
            if variant.backend is None:
                variant.state, variant.last_error = "absent", reason

    async def watch(self, interval: float = 0.2) -> None:
        """Restart, at once, each backend started here that died or that the data plane could not
        reach and that no longer answers ``/ping``; one that answers it takes traffic again (a
        backend that runs elsewhere too). (A restart that failed is tried again at the next read
        of the registry, ``_sync_variant``, not in a tight loop here.)"""
        while True:
            await asyncio.sleep(interval)
            unreached = []
            for variant in list(self.variants.values()):
                if variant.state != "ready":
                    continue
                for backend in variant.replicas:
                    if backend.handle is not None and not backend.alive():
                        self.spawn(self._restart(variant, backend))
                    elif backend.failed:
                        unreached.append((variant, backend))
            # Together: one that does not answer (up to its ping timeout, every round while it
            # runs elsewhere) holds up neither the others' checks nor the next round's deaths.
            await asyncio.gather(*(self._recheck(variant, backend) for variant, backend in unreached))

    async def _recheck(self, variant: Variant, backend: Backend) -> None:
        """A backend the data plane could not reach: back in rotation once it answers ``/ping``,
        else restarted (one started here)."""
        if await launcher.healthy(backend, self.client):
            backend.failed = False
        elif backend.handle is not None:
            self.spawn(self._restart(variant, backend))

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
        dead = next((backend for backend in variant.replicas if not backend.alive()), None)
        if dead is not None:
            if variant.state != "down":  # not already being restarted
                await self._restart(variant, dead)
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
        # The new version starts at the demand the old one serves, not at one replica.
        extra = await self._start_replicas(variant, version, len(variant.replicas) - 1)
        old, variant.replicas = variant.replicas, [backend, *extra]
        variant.state, variant.failed_version, variant.last_error = "ready", None, None
        self.metrics.alias_switches.labels(variant.alias).inc()
        logger.info(
            "alias %s now served by v%s (%s, %d replicas)", variant.alias, version, backend.url, len(variant.replicas)
        )
        for backend in old:
            self.spawn(self._retire(backend))

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

    async def _start_serving(self, variant: Variant, version: str) -> Backend:
        """A replica that has answered a real prediction: only such a one may take traffic."""
        backend = await self._start(variant, version)
        if not await launcher.answers_a_prediction(backend, self.client):
            await launcher.stop(backend)
            raise RuntimeError(f"v{version} started but did not answer a prediction")
        return backend

    async def _wake(self, variant: Variant) -> None:
        version, started = variant.idle_version, time.monotonic()
        variant.state, variant.last_error = "waking", None
        try:
            backend = await self._start_serving(variant, version)
        except Exception as exc:
            variant.wake_failures += 1
            wait = backoff(variant.wake_failures)
            variant.wake_retry_at = time.monotonic() + wait
            variant.state, variant.last_error = "idle", f"v{version} failed to wake: {exc}"
            self.metrics.wake_failures.labels(variant.alias).inc()
            logger.error("alias %s: %s; next try in %.0f s at the earliest", variant.alias, variant.last_error, wait)
            raise
        if variant.idle_version != version or variant.replicas:  # the split or registry moved on
            self.spawn(self._retire(backend))
            return
        variant.replicas, variant.idle_version, variant.state = [backend], None, "ready"
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
                replicas = variant.replicas
                if (
                    not replicas
                    or variant.external_url
                    or variant.state != "ready"
                    or variant.pending_version is not None
                    or variant.scaling
                    or variant.active > 0
                    or variant.in_flight > 0
                    or now - variant.last_request < self.idle_after
                ):
                    continue
                version = replicas[0].version
                variant.replicas, variant.idle_version, variant.state = [], version, "idle"
                self._scaler(variant).forget()
                self.metrics.sleeps.labels(variant.alias).inc()
                logger.info(
                    "alias %s: no request for %.0f s; v%s scaled to zero", variant.alias, self.idle_after, version
                )
                for backend in replicas:
                    self.spawn(self._retire(backend))

    async def autoscale(self, interval: float = 0.5) -> None:
        """Every ``interval``: sample each variant's concurrency, decide its replicas
        (``autoscaler``), start or drain the difference; and meter the replica-seconds held."""
        last = metered = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            elapsed, last = now - last, now
            for variant in list(self.variants.values()):
                self.scale_step(variant, now, elapsed)
            if now - metered >= self.meter_every:
                metered = now
                self.flush_meter()

    def flush_meter(self) -> None:
        """Hand the replica-seconds held since the last call to ``meter``, per variant and version."""
        start, end = self._metered_since, time.time()
        held, self._held, self._metered_since = self._held, {}, end
        if self.meter is None:
            return
        rows = [
            {"gateway": self._identity, "variant": alias, "model_version": version}
            | {"start": start, "time": end, "seconds": seconds}
            for (alias, version), seconds in held.items()
            if seconds > 0
        ]
        self.meter(rows)

    def scale_step(self, variant: Variant, now: float, elapsed: float) -> None:
        """One tick of ``autoscale`` for one variant."""
        alias, serving = variant.alias, len(variant.replicas)
        self.metrics.replicas.labels(alias).set(serving)
        if not variant.external_url and serving:
            self.metrics.replica_seconds.labels(alias).inc(serving * elapsed)
            held = (alias, str(variant.version))
            self._held[held] = self._held.get(held, 0.0) + serving * elapsed
        if variant.external_url or variant.state != "ready" or variant.pending_version is not None:
            return
        scaler = self._scaler(variant)
        scaler.observe(now, variant.active_rows)
        decision = scaler.decide(now, serving)
        self.metrics.desired_replicas.labels(alias).set(decision.desired)
        self.metrics.panic.labels(alias).set(1 if decision.panicking else 0)
        starting = variant.scaling
        if decision.desired > serving + starting and now >= variant.scale_retry_at:
            more = decision.desired - serving - starting
            self.metrics.scale_events.labels(alias, "up").inc()
            logger.info(
                "alias %s: concurrency %.1f over %.0f s (%.1f over %.0f s%s) wants %d replicas, %d serve: starting %d",
                alias,
                decision.stable,
                self.scaling.stable_window,
                decision.panic,
                self.scaling.panic_window,
                ", panic" if decision.panicking else "",
                decision.desired,
                serving,
                more,
            )
            self.spawn(self._scale_up(variant, more))
        elif decision.desired < serving and not starting:
            self.metrics.scale_events.labels(alias, "down").inc()
            logger.info(
                "alias %s: concurrency %.1f over %.0f s wants %d replicas, %d serve: draining %d",
                alias,
                decision.stable,
                self.scaling.stable_window,
                decision.desired,
                serving,
                serving - decision.desired,
            )
            self._scale_down(variant, serving - decision.desired)

    def _scaler(self, variant: Variant) -> Autoscaler:
        scaler = self._scalers.get(variant.alias)
        if scaler is None:
            floor = max(self.min_replicas, 1)
            scaler = self._scalers[variant.alias] = Autoscaler(self.scaling, floor, max(self.max_replicas, floor))
        return scaler

    async def _start_replicas(self, variant: Variant, version: str, count: int) -> list[Backend]:
        """``count`` more replicas of ``version`` started at once, each one having answered a
        prediction; those that fail are logged, counted and left out (retried after a backoff)."""
        if count <= 0:
            return []
        variant.scaling += count
        try:
            results = await asyncio.gather(
                *(self._start_serving(variant, version) for _ in range(count)), return_exceptions=True
            )
        finally:
            variant.scaling -= count
        started = [result for result in results if isinstance(result, Backend)]
        failures = [result for result in results if not isinstance(result, Backend)]
        if failures:
            variant.scale_failures += 1
            wait = backoff(variant.scale_failures)
            variant.scale_retry_at = time.monotonic() + wait
            variant.last_error = f"{len(failures)} replica(s) of v{version} failed to start: {failures[0]}"
            self.metrics.replica_start_failures.labels(variant.alias).inc(len(failures))
            logger.error("alias %s: %s; next try in %.0f s at the earliest", variant.alias, variant.last_error, wait)
        elif started:
            variant.scale_failures = 0
        return started

    async def _scale_up(self, variant: Variant, count: int) -> None:
        version = variant.version
        for backend in await self._start_replicas(variant, version, count):
            if variant.version == version and variant.ready:
                variant.replicas = [*variant.replicas, backend]
                logger.info("alias %s: replica %s of v%s takes traffic", variant.alias, backend.url, version)
            else:  # the alias moved or the variant slept meanwhile
                self.spawn(self._retire(backend))

    def _scale_down(self, variant: Variant, count: int) -> None:
        """Take the ``count`` least busy replicas out of the rotation (never the last one), then
        drain each: it stops only once its requests in flight are answered."""
        count = min(count, len(variant.replicas) - 1)
        if count <= 0:
            return
        leaving = sorted(variant.replicas, key=lambda backend: backend.in_flight)[:count]
        variant.replicas = [backend for backend in variant.replicas if backend not in leaving]
        for backend in leaving:
            self.spawn(self._retire(backend))

    async def _restart(self, variant: Variant, dead: Backend) -> None:
        """A replica died: start the same version in its place. The other replicas serve meanwhile;
        when it was the last one, the data plane's fallback rules hold until it is back."""
        if dead not in variant.replicas:
            return  # already replaced, or the alias moved on
        alone = len(variant.replicas) == 1
        if alone and variant.state == "down":
            return
        variant.restarts += 1
        self.metrics.backend_restarts.labels(variant.alias).inc()
        why = f"backend for v{dead.version} {dead.exit_status()}; restarting"
        if alone:
            variant.state, variant.last_error = "down", why
        else:
            variant.replicas = [backend for backend in variant.replicas if backend is not dead]
        logger.warning("alias %s: %s", variant.alias, why)
        await launcher.stop(dead)  # whatever is left of its process group
        try:
            backend = await self._start(variant, dead.version)
        except Exception as exc:
            logger.error("alias %s: restart of v%s failed: %s", variant.alias, dead.version, exc)
            if alone:
                variant.last_error = f"restart of v{dead.version} failed: {exc}"
                variant.state = "failed"  # the next read of the registry tries again
            return
        if alone and variant.replicas == [dead]:
            variant.replicas, variant.state, variant.last_error = [backend], "ready", None
        elif not alone and variant.ready and variant.version == dead.version:
            variant.replicas = [*variant.replicas, backend]
        else:  # the alias moved or the variant slept meanwhile
            self.spawn(self._retire(backend))
            return
        logger.info("alias %s: backend for v%s restarted", variant.alias, dead.version)

    async def _retire(self, backend: Backend) -> None:
        await launcher.drain(backend, self.drain_timeout)
        await launcher.stop(backend)
        logger.info("stopped backend for v%s (%s)", backend.version, backend.url)

    def spawn(self, coroutine) -> None:
        self.tasks.spawn(coroutine)

    async def close(self) -> None:
        self.flush_meter()  # before the inference log closes: what was held up to now is billed
        await self.tasks.wait()
        await asyncio.gather(*(launcher.stop(b) for v in self.variants.values() for b in v.replicas))
        await self.launcher.close()
