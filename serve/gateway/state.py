"""What the two planes of the gateway share: the variants of the split and the backends serving them.

The control plane (``mnist_mlops.serve.gateway.control``) writes these objects: it starts and stops
backends, follows the registry and changes the split. The data plane only reads them, on the same
event loop, so a variant's backend changes in a single assignment: a request picks a backend once
and keeps it, and an old backend is stopped only after its requests in flight have finished.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from mnist_mlops.common.names import CHAMPION


class ProcessHandle(Protocol):
    """A backend process the control plane started (``control.launcher``)."""

    pid: int

    def alive(self) -> bool: ...

    def exit_status(self) -> str: ...


@dataclass
class Backend:
    """A scoring server for one model version, reached at ``url``."""

    version: str
    url: str
    handle: ProcessHandle | None = None  # None: a backend that runs elsewhere (not started here)
    started: float = field(default_factory=time.monotonic)
    in_flight: int = 0  # requests being answered by this backend right now
    workdir: str | None = None  # its private directory (model files, socket), removed when it stops
    # The data plane could not reach it: passed over while another replica is there, until the
    # control plane's health check clears it (or restarts it).
    failed: bool = False
    log: str | None = None  # the file its output goes to (``--log_dir``), read for why it died
    # Sent with every call to it: Ray Serve's multiplexing header names the version (``--engine ray``).
    headers: dict[str, str] = field(default_factory=dict)
    ping_timeout: float = 2.0  # seconds a health check may take (a Ray replica loads the version on it)

    @property
    def pid(self) -> int | None:
        return self.handle.pid if self.handle else None

    def alive(self) -> bool:
        return self.handle is None or self.handle.alive()

    def exit_status(self) -> str:
        return self.handle.exit_status() if self.handle else "unreachable"


@dataclass
class Variant:
    """One alias of the split and the replicas serving its current version.

    ``replicas`` are the backends that take traffic, all of one version; the control plane adds
    one only after it has answered, and removes one before draining it. ``backend`` is the one a
    request goes to: the replica with the fewest requests in flight, passing over one the data plane
    could not reach (``Backend.failed``) while another is there.
    """

    alias: str
    weight: float
    replicas: list[Backend] = field(default_factory=list)
    state: str = "starting"  # starting | ready | down | failed | absent | idle | waking
    pending_version: str | None = None  # a new version being started for this alias
    failed_version: str | None = None  # a version that would not start: not retried on every poll
    last_error: str | None = None
    in_registry: bool = True  # False once the alias is gone from the registry: no traffic then
    external_url: str | None = None  # a backend that runs elsewhere (not started or stopped here)
    requests: int = 0
    errors: int = 0
    active: int = 0  # client requests routed here and not yet answered
    active_rows: int = 0  # the images (rows) of those requests: the autoscaler's input
    scaling: int = 0  # replicas being started for it right now
    restarts: int = 0
    batcher: object | None = None  # the data plane's micro-batcher for this variant, made on first use
    # Scale to zero (``--min_replicas 0``): the version an idle variant serves once woken, and when
    # the data plane last routed a request to it (``time.monotonic``).
    idle_version: str | None = None
    last_request: float = field(default_factory=time.monotonic)
    wake_failures: int = 0  # failed wakes in a row; each doubles the wait before the next (1 s to 60 s)
    wake_retry_at: float = 0.0  # ``time.monotonic`` before which no new wake is tried
    scale_failures: int = 0  # failed replica starts in a row (same backoff as waking)
    scale_retry_at: float = 0.0  # ``time.monotonic`` before which the autoscaler starts no replica

    @property
    def backend(self) -> Backend | None:
        replicas = self.replicas
        if len(replicas) == 1:
            return replicas[0]
        return min(replicas, key=_load) if replicas else None

    @backend.setter
    def backend(self, backend: Backend | None) -> None:
        """One replica (or none) from now on; the caller retires the ones it replaces."""
        self.replicas = [backend] if backend is not None else []

    @property
    def in_flight(self) -> int:
        """Backend calls in flight over its replicas (a micro-batch counts once)."""
        return sum(replica.in_flight for replica in self.replicas)

    @property
    def version(self) -> str | None:
        return self.backend.version if self.backend else self.idle_version

    @property
    def asleep(self) -> bool:
        """Scaled to zero (or waking up): a request wakes it and waits for it, not a stand-in."""
        return self.backend is None and self.state in ("idle", "waking") and self.idle_version is not None

    @property
    def ready(self) -> bool:
        return self.backend is not None and self.state == "ready"

    def count_in(self, rows: int) -> None:
        """A request of ``rows`` images routed here; ``count_out`` once it is answered or given up."""
        self.active += 1
        self.active_rows += rows

    def count_out(self, rows: int) -> None:
        self.active -= 1
        self.active_rows -= rows

    def describe(self, detailed: bool = True) -> dict:
        """What ``/variants`` shows; the backend's address, process and errors only ``detailed``
        (to admin keys)."""
        shown = {
            "alias": self.alias,
            "version": self.version,
            "weight": self.weight,
            "in_registry": self.in_registry,
            "state": self.state,
            "replicas": len(self.replicas),
            "requests": self.requests,
            "errors": self.errors,
        }
        if detailed:
            shown |= {
                "backend": self.backend.url if self.backend else None,
                "pid": self.backend.pid if self.backend else None,
                "pending_version": self.pending_version,
                "failed_version": self.failed_version,
                "last_error": self.last_error,
                "in_flight": self.in_flight,
                "active": self.active,
                "active_rows": self.active_rows,
                "restarts": self.restarts,
                "replica_backends": [{"url": r.url, "pid": r.pid, "in_flight": r.in_flight} for r in self.replicas],
            }
        return shown


def _load(backend: Backend) -> tuple[bool, int]:
    return backend.failed, backend.in_flight


@dataclass
class Table:
    """The split as the data plane routes it: alias -> variant."""

    variants: dict[str, Variant] = field(default_factory=dict)

    def weights(self) -> dict[str, float]:
        """The weights traffic is split by: an alias gone from the registry (a rolled-back
        challenger) gets none, whatever its configured weight."""
        return {alias: variant.weight if variant.in_registry else 0.0 for alias, variant in self.variants.items()}

    def get(self, alias: str | None) -> Variant | None:
        return self.variants.get(alias) if alias else None

    def is_ready(self) -> bool:
        """Every variant that takes live traffic (weight above 0) has a ready backend (or is scaled
        to zero, and wakes on a request), or, for
        another alias than the champion, has failed to start: its share goes to the champion
        (``routing``) until a new version of it is registered, so the gateway answers everything."""
        return all(
            v.ready or v.asleep or (v.alias != CHAMPION and v.state == "failed")
            for v in self.variants.values()
            if v.weight > 0 and v.in_registry
        )

    def describe(self, detailed: bool = True) -> list[dict]:
        return [variant.describe(detailed) for variant in self.variants.values()]
