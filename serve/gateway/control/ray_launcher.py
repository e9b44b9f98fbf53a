"""Backends on Ray Serve (``--engine ray``): the gateway's variants are served by one Ray Serve
application (``mnist_mlops.serve.rayserve.deployment``) instead of processes started here.

A variant's backend is the application's HTTP address plus the version in Ray's multiplexing
header, so everything above the backends is unchanged: keys, the split and sticky users,
micro-batching (a backend call carries a batch), the gate on follow, shadow copies, feedback and
the inference log. Starting a backend only names a version; it takes traffic once it has answered
``/ping`` (the replica loaded the version). Ray Serve scales the application's replicas on
ongoing requests between ``min_replicas`` (0: scale to zero, the proxy holds requests meanwhile)
and ``max_replicas``. By default a local Ray is started for the gateway and stopped with it;
``address`` joins an existing cluster instead (``ray://`` or ``auto``), where the application is
left running when the gateway stops; ``serve_url`` routes to an application someone else
deployed (KubeRay's RayService, ``serve run``) without joining Ray at all.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from dataclasses import dataclass

from mnist_mlops.serve.gateway.state import Backend

logger = logging.getLogger(__name__)

APPLICATION = "mnist-gateway"
SHUTDOWN_TIMEOUT = 15.0  # seconds


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
            ray.init(address=self.address, include_dashboard=False, logging_level=logging.WARNING)
        serve.start(http_options={"host": "127.0.0.1", "port": self.http_port})
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
        url = f"http://127.0.0.1:{self.http_port}"
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
