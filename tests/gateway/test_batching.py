"""Adaptive micro-batching in an in-process gateway over a real backend: merged answers equal
unmerged ones row for row, a bad row fails alone, requests arriving during a batch form the next
one (sent to the busy backend once there are enough rows to be worth a call), an idle gateway adds
no wait (read off the batch histograms, not a clock), and a replica that cannot be reached is
passed over while another serves."""

from __future__ import annotations

import asyncio
import base64
import contextlib

import httpx
import numpy as np
import pytest

from mnist_mlops.serve.gateway.state import Backend
from tests.gateway.harness import champion_only, in_process
from tests.helpers import free_port, png_bytes
from tests.synthetic import phone_photo

pytestmark = pytest.mark.anyio


def image_body(*images) -> dict:
    """A ``dataframe_split`` body with one row per image, each a PNG in base64."""
    rows = [[base64.b64encode(png_bytes(image)).decode()] for image in images]
    return {"dataframe_split": {"columns": ["image"], "data": rows}}


def sixty_photos(images) -> dict:
    """A body of 60 phone photos (640x480): too large to merge, it keeps a backend busy for most of
    a second whatever the machine's speed."""
    rng = np.random.default_rng(5)
    photos = [base64.b64encode(phone_photo(images[i], rng, size=(640, 480))).decode() for i in range(60)]
    return {"dataframe_split": {"columns": ["image"], "data": [[photo] for photo in photos]}}


@contextlib.asynccontextmanager
async def busy_champion(backends, tmp_path, images, **settings):
    """An in-process gateway (``settings`` for ``champion_only``) whose champion's backend is busy
    with ``sixty_photos``: yields the gateway, the champion and that request's task."""
    async with in_process(champion_only(backends, tmp_path, **settings), backends.keys) as gw:
        champion = gw.gateway.pool.variants["champion"]
        first = asyncio.create_task(gw.score(sixty_photos(images)))
        while not first.done() and champion.backend.in_flight == 0:
            await asyncio.sleep(0.002)
        yield gw, champion, first


async def histogram(gw, name: str) -> dict[str, float]:
    """The champion's histogram ``name``: count, sum and the cumulative buckets used here."""
    values = {kind: await gw.metric(f"{name}_{kind}", variant="champion") for kind in ("count", "sum")}
    for le in ("0.0005", "1.0", "2.0", "4.0"):
        values[f"bucket@{le}"] = await gw.metric(f"{name}_bucket", variant="champion", le=le)
    return values


async def test_merged_answers_equal_unmerged_answers_row_for_row(backends, tmp_path, mnist_test):
    images, _ = mnist_test
    bodies = [image_body(images[i]) for i in range(48)]
    async with in_process(champion_only(backends, tmp_path), backends.keys) as gw:
        before = await histogram(gw, "gateway_batch_rows")
        merged = await asyncio.gather(*(gw.score(body) for body in bodies))
        after = await histogram(gw, "gateway_batch_rows")
    assert after["sum"] - before["sum"] == 48
    assert after["count"] - before["count"] < 48, "some requests were merged"
    async with httpx.AsyncClient(base_url=backends.urls["champion"], timeout=30) as backend:
        alone = await asyncio.gather(*(backend.post("/invocations", json=body) for body in bodies))
    for single, answer in zip(alone, merged, strict=True):
        assert answer.status_code == 200
        ((together,), (unmerged,)) = answer.json()["predictions"], single.json()["predictions"]
        assert together["label"] == unmerged["label"]
        # float32 convolutions over a batch of 48 and a batch of 1 round differently, in the 8th digit
        np.testing.assert_allclose(together["probabilities"], unmerged["probabilities"], atol=1e-6)


async def test_a_bad_row_among_good_ones_fails_alone(backends, tmp_path, mnist_test):
    images, _ = mnist_test
    bodies = [image_body(images[i]) for i in range(24)]
    bad = {5, 11, 17}
    for i in bad:
        bodies[i] = {"dataframe_split": {"columns": ["image"], "data": [["this is not base64!"]]}}
    async with in_process(champion_only(backends, tmp_path), backends.keys) as gw:
        answers = await asyncio.gather(*(gw.score(body) for body in bodies))
    for i, answer in enumerate(answers):
        if i in bad:
            assert answer.status_code == 400
            assert answer.json()["message"].startswith("1 of 1 rows could not be scored: row 0")
        else:
            assert answer.status_code == 200, answer.text
            assert len(answer.json()["predictions"]) == 1


async def test_requests_arriving_during_a_batch_are_served_by_the_next_batch(backends, tmp_path, mnist_test):
    """Three requests that arrive while a 60-row request is at the backend go out together next.

    The 60 photos are too large a body to merge (``protocol.MERGE_MAX_BYTES``): that request goes
    to the backend alone, outside the batcher, and still holds the backend's slot.

    Queued requests may wait for the busy backend as long as the test runs (``batch_max_delay``),
    and the first batch keeps the backend busy for most of a second (60 phone photos), so the
    followers form one batch whatever the machine's speed.
    """
    images, _ = mnist_test
    async with busy_champion(backends, tmp_path, images, batch_max_delay=60.0) as (gw, _, first):
        before = await histogram(gw, "gateway_batch_rows")  # the 60 photos go alone, unbatched
        followers = [asyncio.create_task(gw.score(image_body(images[i]))) for i in range(3)]
        answers = await asyncio.gather(first, *followers)
        after = await histogram(gw, "gateway_batch_rows")
    assert [a.status_code for a in answers] == [200] * 4
    assert after["count"] - before["count"] == 1, "the three followers together, after the 60-row request"
    assert after["sum"] - before["sum"] == 3
    assert after["bucket@4.0"] - before["bucket@4.0"] == 1 and after["bucket@2.0"] == before["bucket@2.0"]


async def test_a_request_that_fills_a_batch_goes_to_a_busy_backend_at_once(backends, tmp_path, mnist_test):
    """While a 60-photo request keeps the backend busy (most of a second), a request of
    ``batch_max_size`` rows is sent at once as a second batch, queued at the backend, where a
    smaller request waits for the slot (here as long as the test runs: ``batch_max_delay``)."""
    images, _ = mnist_test
    full = image_body(*images[:4])
    settings = {"batch_max_size": 4, "batch_max_delay": 60.0}
    async with busy_champion(backends, tmp_path, images, **settings) as (gw, champion, first):

        async def waited_under(seconds: str) -> float:
            return await gw.metric("gateway_batch_wait_seconds_bucket", variant="champion", le=seconds)

        count = await gw.metric("gateway_batch_wait_seconds_count", variant="champion")
        quick = await waited_under("0.05")
        filled = asyncio.create_task(gw.score(full))
        while not filled.done() and champion.backend.in_flight < 2:
            await asyncio.sleep(0.002)
        assert not first.done(), "the 60 photos were still being scored when the full request went out"
        small = asyncio.create_task(gw.score(image_body(images[9])))
        answers = await asyncio.gather(first, filled, small)
        assert [a.status_code for a in answers] == [200] * 3
        assert len(answers[1].json()["predictions"]) == 4
        assert await gw.metric("gateway_batch_wait_seconds_count", variant="champion") - count == 2
        assert await waited_under("0.05") - quick == 1, "the full request went at once, the small one waited"


async def test_eight_queued_rows_go_to_a_busy_backend_at_once(backends, tmp_path, mnist_test):
    """While a 60-photo request keeps the backend busy (most of a second), seven queued requests
    wait for its slot (here as long as the test runs: ``batch_max_delay``); the eighth makes them a
    batch worth a call (``pipeline_rows``), sent at once and queued at the backend."""
    images, _ = mnist_test
    async with busy_champion(backends, tmp_path, images, batch_max_delay=60.0) as (gw, champion, first):
        before = await histogram(gw, "gateway_batch_rows")
        queued = [asyncio.create_task(gw.score(image_body(images[i]))) for i in range(7)]
        while not first.done() and (champion.batcher is None or champion.batcher.queued_rows < 7):
            await asyncio.sleep(0.002)
        assert champion.backend.in_flight == 1, "seven rows waited for the busy backend's slot"
        queued.append(asyncio.create_task(gw.score(image_body(images[7]))))
        while not first.done() and champion.backend.in_flight < 2:
            await asyncio.sleep(0.002)
        assert not first.done(), "the 60 photos were still being scored when the eight rows went out"
        answers = await asyncio.gather(first, *queued)
        after = await histogram(gw, "gateway_batch_rows")
    assert [a.status_code for a in answers] == [200] * 9
    assert after["count"] - before["count"] == 1 and after["sum"] - before["sum"] == 8, "one batch of eight"


async def test_an_idle_gateway_sends_each_request_at_once(backends, tmp_path, mnist_test):
    images, _ = mnist_test
    async with in_process(champion_only(backends, tmp_path), backends.keys) as gw:
        rows, waits = await histogram(gw, "gateway_batch_rows"), await histogram(gw, "gateway_batch_wait_seconds")
        for i in range(20):  # one at a time: nothing to merge, nothing to wait for
            assert (await gw.score(image_body(images[i]))).status_code == 200
        rows_after = await histogram(gw, "gateway_batch_rows")
        waits_after = await histogram(gw, "gateway_batch_wait_seconds")
    assert rows_after["bucket@1.0"] - rows["bucket@1.0"] == 20
    assert waits_after["bucket@0.0005"] - waits["bucket@0.0005"] == 20, "no request waited half a millisecond"


async def test_a_replica_that_cannot_be_reached_is_passed_over_while_another_serves(backends, tmp_path, mnist_test):
    """A batch picks its replica when it is sent, not when its requests arrived: the replica that
    failed is the one marked, no request is sent to it again while the other serves, and no client
    sees the failure (a replica killed under load once answered 503 this way)."""
    images, _ = mnist_test
    async with in_process(champion_only(backends, tmp_path), backends.keys) as gw:
        champion = gw.gateway.pool.table.variants["champion"]
        gone = Backend(version=champion.version, url=f"http://127.0.0.1:{free_port()}")  # nothing listens
        champion.replicas = [*champion.replicas, gone]
        responses = await gw.fire(96, concurrency=16, bodies=[image_body(images[i]) for i in range(96)])
        statuses = [response.status_code for response in responses]
        assert statuses == [200] * 96, sorted(set(statuses))
        assert all(response.json()["predictions"][0]["label"] in range(10) for response in responses)
        assert gone.failed and gone in champion.replicas  # tried once, then passed over (never restarted here)
