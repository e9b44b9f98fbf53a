"""The autoscaler with real processes: a gateway at ``--min_replicas 0 --max_replicas 3`` wakes on
the first request, adds replicas (forked from the warm pool) while concurrency stays above the
target, drains them when it falls, with no failed request on the way, holds its count on a steady
load, and is back at zero once idle; every decision is in ``/metrics`` and the log, and the
replica-seconds it held are metered."""

from __future__ import annotations

import asyncio
import time

import httpx
import psutil
import pytest

from tests.e2e.gateway_helpers import PIXELS, samples, start_gateway, two_version_store

# 48 images a request: a request spends its time in the gateway and its backends, not in this
# process's client, so the concurrency the gateway observes is the clients' even on a busy machine.
HEAVY = {"dataframe_split": {"columns": ["pixels"], "data": PIXELS["dataframe_split"]["data"] * 48}}

# Short windows so a test takes seconds: target 96 images per replica (two of these requests of
# 48: the scaler counts images, so a target of 2 would want a replica per request), 6 s stable,
# 2 s panic.
SCALING = [
    "--backend_mode",
    "warm",
    "--poll_interval",
    "1",
    "--min_replicas",
    "0",
    "--max_replicas",
    "3",
    "--target_concurrency",
    "96",
    "--stable_window",
    "6",
    "--panic_window",
    "2",
    "--scale_to_zero_after",
    "5",
]


def metric(gateway, name: str, **labels: str) -> float:
    text = httpx.get(f"{gateway.url}/metrics", headers=gateway.headers(), timeout=10).text
    return sum(sample.value for sample in samples(text, name, **labels))


async def load_while(
    gateway, concurrency: int, seconds: float, action=None, after: float = 0.0, every: float = 0.1
) -> tuple[list[int], list[tuple]]:
    """``concurrency`` clients asking one after another for ``seconds``, and ``action`` run in a
    thread ``after`` seconds in: their statuses, and the champion's (version, replicas, state)
    every ``every`` seconds meanwhile."""
    statuses, seen = [], []
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(timeout=120) as client:

        async def ask() -> None:
            while time.monotonic() < deadline:
                answer = await client.post(f"{gateway.url}/invocations", json=HEAVY, headers=gateway.headers())
                statuses.append(answer.status_code)

        async def watch() -> None:
            while time.monotonic() < deadline:
                answer = await client.get(f"{gateway.url}/variants", headers=gateway.headers(gateway.admin_key))
                champion = answer.json()["variants"][0]
                seen.append((champion["version"], champion["replicas"], champion["state"]))
                await asyncio.sleep(every)

        async def act() -> None:
            if action is not None:
                await asyncio.sleep(after)
                await asyncio.to_thread(action)

        await asyncio.gather(watch(), act(), *(ask() for _ in range(concurrency)))
    return statuses, seen


async def load(gateway, concurrency: int, seconds: float) -> tuple[list[int], list[int]]:
    """``load_while`` with no action: the statuses, and the champion's replicas every 0.25 s."""
    statuses, seen = await load_while(gateway, concurrency, seconds, every=0.25)
    return statuses, [replicas for _, replicas, _ in seen]


def replica_pids(gateway) -> set[int]:
    return {replica["pid"] for replica in gateway.variants()["champion"]["replica_backends"]}


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.fixture(scope="module")
def gateway(trained_store, tmp_path_factory):
    directory = tmp_path_factory.mktemp("autoscaling")
    running = start_gateway(two_version_store(trained_store, directory), directory, *SCALING)
    yield running
    running.stop()


def test_replicas_follow_the_load_up_and_drain_down_with_no_failed_request(gateway):
    wait_for(lambda: gateway.variants()["champion"]["state"] == "idle", 60, "the champion never went idle")
    statuses, rising = asyncio.run(load(gateway, 8, 12))
    assert statuses and set(statuses) == {200}, sorted(set(statuses))
    assert max(rising) == 3, rising  # 8 requests in flight at 2 a replica: as many as allowed
    busy = replica_pids(gateway)
    assert len(busy) == 3 and metric(gateway, "gateway_scale_events_total", variant="champion", direction="up") >= 1

    # One client now: the stable window brings the count down while requests keep coming.
    statuses, falling = asyncio.run(load(gateway, 1, 15))
    assert set(statuses) == {200}, sorted(set(statuses))
    assert falling[-1] == 1 and max(falling) == 3, falling
    assert metric(gateway, "gateway_scale_events_total", variant="champion", direction="down") >= 1
    drained = busy - replica_pids(gateway)
    assert len(drained) == 2
    wait_for(lambda: not any(psutil.pid_exists(pid) for pid in drained), 30, "a drained replica still runs")

    wait_for(lambda: gateway.variants()["champion"]["state"] == "idle", 30, "not back at zero once idle")
    assert gateway.variants()["champion"]["replicas"] == 0
    assert gateway.variants()["champion"]["active_rows"] == 0  # every image counted in is counted out
    assert metric(gateway, "gateway_images_in_flight", variant="champion") == 0
    assert metric(gateway, "gateway_replica_seconds_total", variant="champion") > 3
    log = gateway.log.read_text()
    assert "wants 3 replicas" in log and "draining" in log


def test_a_steady_load_holds_its_replica_count(gateway):
    images = []

    def sample() -> None:  # what the autoscaler samples, read from /metrics halfway through
        images.append(metric(gateway, "gateway_images_in_flight", variant="champion"))

    statuses, seen = asyncio.run(load_while(gateway, 3, 24, sample, after=12, every=0.25))
    counts = [replicas for _, replicas, _ in seen]
    assert set(statuses) == {200}
    assert images and images[0] in (48, 96, 144), images  # 48 images a request, counted as 48
    settled = counts[len(counts) // 2 :]  # after two stable windows
    assert len(set(settled)) == 1, counts  # 3 requests in flight at 2 a replica: 2, no flapping
    assert settled[0] == 2, counts


def test_a_replica_that_dies_under_load_is_replaced_while_the_others_serve(gateway):
    def kill_one() -> None:
        wait_for(lambda: len(replica_pids(gateway)) == 3, 30, "never at 3 replicas")
        victim = sorted(replica_pids(gateway))[0]
        psutil.Process(victim).kill()

    restarts = gateway.variants()["champion"]["restarts"]
    statuses, seen = asyncio.run(load_while(gateway, 8, 16, kill_one, after=4))
    assert set(statuses) == {200}, sorted(set(statuses))
    assert seen[-1][1] == 3 and gateway.variants()["champion"]["restarts"] == restarts + 1, seen[-20:]


def test_an_alias_moved_under_load_starts_the_new_version_at_the_current_demand(gateway):
    from mlflow import MlflowClient

    registry = MlflowClient(gateway.uri, gateway.uri)
    serving = gateway.variants()["champion"]["version"]
    other = "2" if serving == "1" else "1"

    def move() -> None:
        wait_for(lambda: gateway.variants()["champion"]["replicas"] == 3, 30, "never at 3 replicas")
        registry.set_registered_model_alias("mnist-cnn", "champion", other)

    statuses, seen = asyncio.run(load_while(gateway, 8, 25, move, after=4))
    assert set(statuses) == {200}, sorted(set(statuses))
    switched = [replicas for version, replicas, _ in seen if version == other]
    assert switched, f"v{other} never served: {seen[-5:]}"
    assert switched[0] == 3, seen  # not one replica to be scaled up again from scratch
