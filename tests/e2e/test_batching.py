"""Adaptive micro-batching in a real gateway over a real backend: merged answers equal unmerged
ones row for row, a bad row fails alone, requests arriving during a batch form the next one, and
an idle gateway adds no wait (read off the batch histograms, not a clock)."""

from __future__ import annotations

import asyncio
import base64
import collections
import os
import signal
import time

import httpx
import numpy as np
import pytest

from tests.e2e.gateway_helpers import samples, start_gateway
from tests.helpers import png_bytes
from tests.synthetic import phone_photo


@pytest.fixture(scope="module")
def gateway(trained_store, tmp_path_factory):
    directory = tmp_path_factory.mktemp("batching")
    uri = trained_store.copy_to(directory)
    running = start_gateway(uri, directory, "--backend_mode", "warm", "--inference_log", str(directory / "log.db"))
    yield running
    assert running.stop() == 0


def image_body(image) -> dict:
    return {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(png_bytes(image)).decode()]]}}


def histogram(gateway, name: str) -> dict[str, float]:
    """The champion's histogram ``name``: count, sum and bucket@<le> (0 before any observation)."""
    text = httpx.get(f"{gateway.url}/metrics", headers=gateway.headers()).text
    values: dict[str, float] = collections.defaultdict(float)
    for kind in ("bucket", "count", "sum"):
        for sample in samples(text, f"{name}_{kind}", variant="champion"):
            values[f"bucket@{sample.labels['le']}" if kind == "bucket" else kind] = sample.value
    return values


async def concurrently(gateway, bodies: list[dict]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60) as client:
        return await asyncio.gather(
            *(client.post(f"{gateway.url}/invocations", json=body, headers=gateway.headers()) for body in bodies)
        )


def test_merged_answers_equal_unmerged_answers_row_for_row(gateway, mnist_test):
    images, _ = mnist_test
    bodies = [image_body(images[i]) for i in range(48)]
    before = histogram(gateway, "gateway_batch_rows")
    merged = asyncio.run(concurrently(gateway, bodies))
    after = histogram(gateway, "gateway_batch_rows")
    assert after["sum"] - before["sum"] == 48
    assert after["count"] - before["count"] < 48, "some requests were merged"
    backend = gateway.variants()["champion"]["backend"]
    for body, answer in zip(bodies, merged, strict=True):
        (alone,) = httpx.post(f"{backend}/invocations", json=body, timeout=30).json()["predictions"]
        assert answer.status_code == 200
        (together,) = answer.json()["predictions"]
        assert together["label"] == alone["label"]
        # float32 convolutions over a batch of 48 and a batch of 1 round differently, in the 8th digit
        np.testing.assert_allclose(together["probabilities"], alone["probabilities"], atol=1e-6)


def test_a_bad_row_among_good_ones_fails_alone(gateway, mnist_test):
    images, _ = mnist_test
    bodies = [image_body(images[i]) for i in range(24)]
    bad = {5, 11, 17}
    for i in bad:
        bodies[i] = {"dataframe_split": {"columns": ["image"], "data": [["this is not base64!"]]}}
    answers = asyncio.run(concurrently(gateway, bodies))
    for i, answer in enumerate(answers):
        if i in bad:
            assert answer.status_code == 400
            assert answer.json()["message"].startswith("1 of 1 rows could not be scored: row 0")
        else:
            assert answer.status_code == 200, answer.text
            assert len(answer.json()["predictions"]) == 1


def test_requests_arriving_during_a_batch_are_served_by_the_next_batch(trained_store, mnist_test, tmp_path):
    """Three requests that arrive while a 60-row batch is at the backend go out together next.

    A gateway of its own, whose queued requests may wait for the busy backend as long as the test
    runs (``--batch_max_delay_ms``), and a first batch that keeps the backend busy for most of a
    second (60 phone photos). With the default 10 ms and MNIST-sized rows, the followers had to
    reach the gateway within 10 ms of each other: on a loaded machine (one CI run, two test
    workers) they did not, and went out in two extra batches, as the max_delay rule says.
    """
    images, _ = mnist_test
    rng = np.random.default_rng(5)
    photos = [base64.b64encode(phone_photo(images[i], rng, size=(640, 480))).decode() for i in range(60)]
    slow = {"dataframe_split": {"columns": ["image"], "data": [[photo] for photo in photos]}}
    uri = trained_store.copy_to(tmp_path)
    gateway = start_gateway(uri, tmp_path, "--batch_max_delay_ms", "60000", "--inference_log", str(tmp_path / "log.db"))
    try:
        before = histogram(gateway, "gateway_batch_rows")

        async def scenario() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=60) as client:
                post = lambda body: client.post(f"{gateway.url}/invocations", json=body, headers=gateway.headers())  # noqa: E731
                first = asyncio.create_task(post(slow))
                while not first.done() and not await champion_busy(client, gateway):
                    await asyncio.sleep(0.002)
                followers = [asyncio.create_task(post(image_body(images[i]))) for i in range(3)]
                return await asyncio.gather(first, *followers)

        answers = asyncio.run(scenario())
        after = histogram(gateway, "gateway_batch_rows")
    finally:
        assert gateway.stop() == 0
    assert [a.status_code for a in answers] == [200] * 4
    assert after["count"] - before["count"] == 2, "the 60-row request, then the three followers together"
    assert after["sum"] - before["sum"] == 63
    assert after["bucket@4.0"] - before["bucket@4.0"] == 1 and after["bucket@2.0"] == before["bucket@2.0"]


async def champion_busy(client: httpx.AsyncClient, gateway) -> bool:
    """Whether the champion's backend is answering a request now (the gateway's in-flight gauge)."""
    text = (await client.get(f"{gateway.url}/metrics", headers=gateway.headers())).text
    return any(sample.value >= 1 for sample in samples(text, "gateway_in_flight", variant="champion"))


def test_an_idle_gateway_sends_each_request_at_once(gateway, mnist_test):
    images, _ = mnist_test
    rows, waits = histogram(gateway, "gateway_batch_rows"), histogram(gateway, "gateway_batch_wait_seconds")
    for i in range(20):  # one at a time: nothing to merge, nothing to wait for
        assert (
            httpx.post(f"{gateway.url}/invocations", json=image_body(images[i]), headers=gateway.headers()).status_code
            == 200
        )
    rows_after, waits_after = histogram(gateway, "gateway_batch_rows"), histogram(gateway, "gateway_batch_wait_seconds")
    assert rows_after["bucket@1.0"] - rows["bucket@1.0"] == 20
    assert waits_after["bucket@0.0005"] - waits["bucket@0.0005"] == 20, "no request waited half a millisecond"


def test_warm_pool_backends_follow_an_alias_move_and_restart(gateway, trained_store):
    """The warm mode forks backends from a preloaded pool; moves and restarts work as with processes."""
    from mlflow import MlflowClient

    from tests.e2e.gateway_helpers import model_location

    client = MlflowClient(gateway.uri, gateway.uri)
    v2 = str(client.create_model_version("mnist-cnn", model_location(client)).version)
    client.set_registered_model_alias("mnist-cnn", "champion", v2)
    deadline = time.monotonic() + 60
    while gateway.variants()["champion"]["version"] != v2 and time.monotonic() < deadline:
        time.sleep(0.2)
    champion = gateway.variants()["champion"]
    assert champion["version"] == v2 and champion["state"] == "ready"
    os.killpg(champion["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = gateway.variants()["champion"]
        if state["state"] == "ready" and state["pid"] != champion["pid"]:
            break
        time.sleep(0.2)
    assert state["restarts"] >= 1 and state["state"] == "ready"
