"""Gateways in the test's own process: the real app (``create_app``) driven through httpx's ASGI
transport, over real backend processes. No gateway process, port or log file: each test builds the
gateway it needs in a fraction of a second and reads its state directly."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from mnist_mlops.serve.gateway.app import Gateway, create_app
from mnist_mlops.serve.gateway.auth import new_key_entry
from mnist_mlops.serve.gateway.settings import GatewaySettings

PIXELS = {
    "dataframe_split": {
        "columns": ["pixels"],
        "data": [[" ".join(["0"] * 300 + ["255"] * 184 + ["0"] * 300)]],
    }
}


@dataclass(frozen=True)
class Keys:
    path: Path
    predict: str
    admin: str


def write_keys(directory: Path) -> Keys:
    predict, predict_entry = new_key_entry("svc-predict", "predict")
    admin, admin_entry = new_key_entry("ops-admin", "admin")
    path = directory / "keys.toml"
    path.write_text(predict_entry + admin_entry)
    return Keys(path, predict, admin)


@dataclass
class InProcess:
    """A running in-process gateway: its ``Gateway`` object and an HTTP client bound to it."""

    gateway: Gateway
    client: httpx.AsyncClient
    keys: Keys

    def headers(self, key: str | None = None, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.keys.predict}", **extra}

    async def score(self, body: dict = PIXELS, **headers: str) -> httpx.Response:
        return await self.client.post("/invocations", json=body, headers=self.headers(**headers))

    async def fire(
        self, count: int, concurrency: int = 16, user=lambda i: None, body=PIXELS, bodies: list[dict] | None = None
    ) -> list[httpx.Response]:
        """``count`` requests, ``concurrency`` at a time: ``body`` each, or ``bodies[i]``."""
        limit = asyncio.Semaphore(concurrency)

        async def one(i: int) -> httpx.Response:
            async with limit:
                sent = bodies[i] if bodies is not None else body
                return await self.score(sent, **({"X-User-ID": user(i)} if user(i) else {}))

        return await asyncio.gather(*(one(i) for i in range(count)))

    def variants(self) -> dict[str, dict]:
        return {v["alias"]: v for v in self.gateway.pool.table.describe()}

    async def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples called ``name`` whose labels include ``labels``."""
        text = (await self.client.get("/metrics", headers=self.headers())).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )


def settings(store_uri: str, directory: Path, keys: Keys, **overrides) -> GatewaySettings:
    """The gateway's settings for a test: a store, keys, an inference log in ``directory``."""
    values = {
        "tracking_uri": store_uri,
        "api_keys": keys.path,
        "inference_log": str(directory / "inference.db"),
        "poll_interval": 0.5,
        "backend_user": "root",  # this machine's interpreter is under /root (docs/security.md)
    } | overrides
    return GatewaySettings(**values)


def champion_only(backends, directory: Path, **overrides) -> GatewaySettings:
    """A gateway whose split is the champion alone, served by the module's champion backend."""
    urls = {"champion": backends.urls["champion"]}
    values = {"split": {"champion": 100.0}, "backend_urls": urls} | overrides
    return settings(backends.store_uri, directory, backends.keys, **values)


@contextlib.asynccontextmanager
async def in_process(
    gateway_settings: GatewaySettings, keys: Keys, ready_timeout: float | None = 120.0
) -> AsyncIterator[InProcess]:
    """Start the app's lifespan (both planes), wait until it is ready (unless ``ready_timeout`` is
    None), stop it afterwards."""
    app = create_app(gateway_settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=60) as client:
            running = InProcess(app.state.gateway, client, keys)
            if ready_timeout is not None:
                await until(lambda: running.gateway.pool.table.is_ready(), ready_timeout, "the gateway is ready")
            yield running


async def until(condition, timeout: float, what: str, step: float = 0.05) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"not true after {timeout:.0f} s: {what}"
        await asyncio.sleep(step)
