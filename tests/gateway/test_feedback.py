"""Closing the A/B loop in-process: feedback joins a logged prediction once, bad feedback gets a
clear 4xx, and shadow traffic is logged beside the answer the client got."""

from __future__ import annotations

import sqlite3

import pytest

from tests.gateway.harness import champion_only, in_process, settings, until

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"request_id": "never-seen", "label": 3}, 404, "no logged prediction"),
        ({"request_id": "x", "label": 10}, 400, "from 0 to 9"),
        ({"request_id": "x", "label": "3"}, 400, "from 0 to 9"),
        ({"request_id": "x", "label": 3, "row": -1}, 400, "row must be"),
        ({"label": 3}, 400, "request_id"),
        ([1, 2], 400, "expected a JSON object"),
    ],
)
async def test_bad_feedback_gets_a_clear_4xx(backends, tmp_path, body, status, message):
    async with in_process(champion_only(backends, tmp_path), backends.keys) as gw:
        response = await gw.client.post("/feedback", json=body, headers=gw.headers())
    assert response.status_code == status and message in response.json()["message"]


async def test_feedback_joins_its_prediction_once(backends, tmp_path):
    async with in_process(champion_only(backends, tmp_path), backends.keys) as gw:
        answer = await gw.score()
        body = {"request_id": answer.headers["X-Request-ID"], "label": 1}
        first = await gw.client.post("/feedback", json=body, headers=gw.headers())
        again = await gw.client.post("/feedback", json=body, headers=gw.headers())
    assert first.status_code == 200 and first.json()["recorded"] is True
    assert again.status_code == 409 and "already recorded" in again.json()["message"]


async def test_shadow_mode_logs_both_answers_and_the_client_sees_only_the_champion(backends, tmp_path):
    shadowed = settings(
        backends.store_uri,
        tmp_path,
        backends.keys,
        split={"champion": 100.0},
        shadow="challenger",
        expose_variant=True,
        backend_urls=backends.urls,
    )
    async with in_process(shadowed, backends.keys) as gw:
        await until(lambda: gw.variants()["challenger"]["state"] == "ready", 60, "the shadow is up")
        responses = await gw.fire(100, concurrency=8)
        await until(lambda: not len(gw.gateway.data.tasks), 30, "the shadow copies are answered")
        batched = await gw.metric("gateway_batch_rows_sum", variant="challenger")
    assert {r.headers["X-Variant"] for r in responses} == {"champion"}
    assert all(r.status_code == 200 for r in responses)
    assert batched == 100  # the copies took the shadow's micro-batcher, as live requests to it would
    with sqlite3.connect(tmp_path / "inference.db") as db:
        roles = dict(db.execute("SELECT role, COUNT(*) FROM predictions GROUP BY role").fetchall())
    assert roles == {"serve": 100, "shadow": 100}
