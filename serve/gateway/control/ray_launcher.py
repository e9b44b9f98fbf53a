"""Backends on Ray Serve (``--engine ray``): the gateway's variants are served by one Ray Serve
application (``mnist_mlops.serve.rayserve.deployment``) instead of processes started here.

A variant's backend is the application's HTTP address plus the version in Ray's multiplexing
header, so everything above the backends is unchanged: keys, the split and sticky users,
micro-batching (a backend call carries a batch), the gate on follow, shadow copies, feedback and
the inference log. Starting a backend only names a version; it takes traffic once it has answered
``/ping`` (the replica loaded the version). Ray Serve scales the application's replicas on
ongoing requests between ``min_replicas`` (0: scale to zero, the proxy holds requests meanwhile)
and ``max_replicas``. By default a local Ray is started for the gateway and stopped with it;
``address`` joins an existing cluster instead (``host:port``, ``ray://`` or ``auto``; ``join``,
at start-up, before the gateway listens), where the application is deleted when the gateway
stops; ``serve_url`` routes to an application someone else deployed (KubeRay's RayService,
``serve run``) without joining Ray at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import threading
from dataclasses import dataclass

from mnist_mlops.common.net import why_unreachable
from mnist_mlops.serve.gateway.state import Backend

logger = logging.getLogger(__name__)

APPLICATION = "mnist-gateway"
SHUTDOWN_TIMEOUT = 15.0  # seconds
REACH_TIMEOUT = 5.0  # seconds to open a TCP connection to a cluster's head
TOKEN_HINT = (
    "a cluster with token authentication needs RAY_AUTH_MODE=token and its token "
    "(RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) in this process's environment"
)


def head_of(address: str) -> tuple[str, int] | None:
    """The host and port of ``address`` (``host:port`` or ``ray://host:port``); None for ``auto``."""
    if address == "auto":
        return None
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--ray_address {address!r}: expected host:port, ray://host:port or auto")
    return host.strip("[]"), int(port)


def join(address: str) -> None:
    """Connect this process to the Ray cluster at ``address`` (``ray.init``), or raise ValueError
    with one line naming it and the cause. Before Ray is asked: Ray retries an unreachable head
    for minutes, and prints each retry and a refused token on the process's stderr (captured
    here: the cause joins the one line)."""
    head = head_of(address)
    if head is not None and (cause := why_unreachable(*head, REACH_TIMEOUT)):
        raise ValueError(f"cannot reach the Ray cluster at {address}: {cause}")
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")  # see RayLauncher._deploy
    import ray

    with tempfile.TemporaryFile() as said, _stderr_to(said):
        try:
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
            return
        except Exception as exc:  # ConnectionError, a version mismatch, a refused token ...
            cause = " ".join(str(exc).split())[:300]
            said.seek(0)
            refused = b"InvalidAuthToken" in said.read()
    hint = f"the cluster refused this process's token: {TOKEN_HINT}" if refused else cause
    raise ValueError(f"cannot join the Ray cluster at {address}: {hint}")


@contextlib.contextmanager
def _stderr_to(file):
    """File descriptor 2 (where Ray's C++ core logs) into ``file`` for the block."""
    saved = os.dup(2)
    try:
        os.dup2(file.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@dataclass
class RayLauncher:
    model_name: str
    tracking_uri: str
    address: str | None = None  # None: a local Ray, started now and stopped with the gateway
    serve_url: str | None = None  # an application deployed by someone else (a RayService): only routed to
    http_port: int = 8000
    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 32.0
    max_ongoing_requests: int = 128
    _url: str | None = None
    _lock: asyncio.Lock | None = None

    async def start(self, version: str) -> Backend:
        """The application's address for ``version``; the application is deployed on first use."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._url is None:
                self._url = self.serve_url.rstrip("/") if self.serve_url else await asyncio.to_thread(self._deploy)
        from mnist_mlops.serve.rayserve.deployment import MODEL_ID_HEADER

        return Backend(version=version, url=self._url, headers={MODEL_ID_HEADER: str(version)}, ping_timeout=120.0)

    def _deploy(self) -> str:
        # Ray's own handler for fatal signals would turn the gateway's graceful SIGTERM into an
        # abort; read when Ray is imported.
        os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
        import ray
        from ray import serve

        from mnist_mlops.serve.rayserve.deployment import RegistryModel

        if not ray.is_initialized():
            # "local": a Ray of the gateway's own. Without an address, ray.init joins the last
            # cluster `ray start` left on this machine, even one that has stopped since (it waits).
            address = self.address or "local"
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
        # On a cluster joined by address, the gateway reaches Serve's proxy on the head: it listens
        # on the head's every interface (which the cluster's network must keep to the gateway).
        head = head_of(self.address) if self.address else None
        serve.start(http_options={"host": "0.0.0.0" if head else "127.0.0.1", "port": self.http_port})
        model = RegistryModel.options(
            max_ongoing_requests=self.max_ongoing_requests,
            ray_actor_options={"num_cpus": 1},
            autoscaling_config={
                "min_replicas": self.min_replicas,
                "initial_replicas": max(self.min_replicas, 1),
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing_requests,
                "downscale_delay_s": 60.0,
            },
        )
        serve.run(
            model.bind(self.model_name, self.tracking_uri),
            name=APPLICATION,
            route_prefix="/",
            blocking=False,
            # The gateway logs every request already: Ray's replicas say only what goes wrong.
            logging_config={"log_level": "WARNING", "enable_access_log": False},
        )
        host = head[0] if head else "127.0.0.1"
        url = f"http://{f'[{host}]' if ':' in host else host}:{self.http_port}"  # an IPv6 head in brackets
        logger.info(
            "Ray Serve application %r deployed at %s (replicas %d..%d)",
            APPLICATION,
            url,
            self.min_replicas,
            self.max_replicas,
        )
        return url

    def share_cores(self, backends: int) -> None:
        """Ray places replicas on the cluster's CPUs itself."""

    async def close(self) -> None:
        """Stop the local Ray started here (its Serve application with it), or delete the
        application from a cluster joined by ``address``; bounded, since a Ctrl-C or a signal to
        the process group reaches Ray's own processes too and may leave them half stopped."""
        if self._url is None or self.serve_url:
            return

        def stop() -> None:
            import ray
            from ray import serve

            if self.address is None:
                ray.shutdown()  # the whole local Ray: its Serve actors go with it
            else:
                serve.delete(APPLICATION)

        worker = threading.Thread(target=stop, name="ray-shutdown", daemon=True)
        worker.start()
        await asyncio.to_thread(worker.join, SHUTDOWN_TIMEOUT)
        if worker.is_alive():
            logger.warning("Ray did not stop within %.0f s; its processes stop with this one", SHUTDOWN_TIMEOUT)
