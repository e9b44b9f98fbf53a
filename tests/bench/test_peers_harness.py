"""The peers harness's pure parts: the same images in each peer's request form, answers read from
each peer's response form, and the ratios the targets are stated in (``bench.peers.harness``).
The peers themselves run in ``make bench ONLY=peers`` (their virtualenvs take minutes to create)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.core import Figure, answer_rows, request_body
from bench.peers import environments
from bench.peers.harness import (
    BENTOML,
    C1,
    C1_AFTER,
    C32,
    CPU,
    GATEWAY,
    IMAGES_64,
    LAUNCH,
    MEMORY,
    PSS,
    RAY,
    bentoml_body,
    peer_ratios,
)


def test_bentomls_request_carries_the_same_images_as_mlflows():
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    mlflow_body = json.loads(request_body(images))
    rows = json.loads(bentoml_body(json.dumps(mlflow_body).encode()))["rows"]
    assert [row["image"] for row in rows] == [row[0] for row in mlflow_body["dataframe_split"]["data"]]


@pytest.mark.parametrize("payload", [{"predictions": [{"label": 3}]}, [{"label": 3}]])
def test_answers_are_read_from_mlflows_and_bentomls_forms(payload):
    assert answer_rows(payload) == [{"label": 3}]


def _figures(system: str, rps: float, p99: float, images: float, mib: float) -> list[Figure]:
    names = {C1: rps / 10, C32: rps, C1_AFTER: rps / 10, IMAGES_64: images, LAUNCH: 5, MEMORY: mib, PSS: mib, CPU: 1}
    return [Figure("peers", f"{system}: {what}", value, "x", {"p99_ms": p99}) for what, value in names.items()]


def test_the_gateway_is_compared_with_the_fastest_and_the_leanest_peer_of_each_figure():
    figures = (
        _figures(GATEWAY, 2000, 20, 5000, 900)
        + _figures(RAY, 1000, 50, 4000, 2000)
        + _figures(BENTOML, 500, 200, 4500, 800)
    )
    ratios = {
        f.name: round(f.value, 3)
        for f in peer_ratios(figures, [GATEWAY], [RAY, BENTOML])
        if "best peer" in f.name or "leanest" in f.name
    }
    assert ratios[f"peers: {GATEWAY} / best peer, {C32}"] == 2.0  # Ray's 1000
    assert ratios[f"peers: {GATEWAY} / best peer, {C32} p99"] == 0.4  # against Ray's p99, the fastest's
    assert ratios[f"peers: {GATEWAY} / best peer, {IMAGES_64}"] == round(5000 / 4500, 3)  # BentoML's
    assert ratios[f"peers: {GATEWAY} / leanest peer, {MEMORY}"] == 1.125  # BentoML's 800 MiB


def test_a_peers_environment_installs_the_peer_and_the_models_own_pins(tmp_path):
    (tmp_path / "requirements.txt").write_text("mlflow==3.17.2\ntorch==2.14.1\n")
    assert environments.requirements(environments.BENTOML, tmp_path) == [
        environments.BENTOML,
        "mlflow==3.17.2",
        "torch==2.14.1",
    ]
