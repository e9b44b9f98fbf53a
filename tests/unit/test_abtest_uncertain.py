"""The A/B analysis's share of answers a person should check, per variant, from a real SQLite
inference log written by the gateway's own writer."""

from __future__ import annotations

import json
import time

from mnist_mlops.registry.abtest import analyse
from mnist_mlops.registry.defaults import AB_UNCERTAIN_BELOW
from mnist_mlops.registry.inference_log.writer import Answer, InferenceLog
from mnist_mlops.registry.render import ab_report
from mnist_mlops.serve.model.schema import UNCERTAIN_BELOW


def body(*confidences: float) -> bytes:
    rows = [{"label": 3, "confidence": c, "probabilities": []} for c in confidences]
    return json.dumps({"predictions": rows}).encode()


def test_each_variants_uncertain_share_counts_its_answered_images_below_the_models_default(tmp_path):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    now = time.time()
    log = InferenceLog(url)
    for item in [
        Answer("c1", "serve", now - 5, "champion", "1", None, 3.0, 200, body(0.99, 0.79)),  # two images
        Answer("c2", "serve", now - 4, "champion", "1", None, 3.0, 200, body(0.8)),  # at the bar: sure
        Answer("c3", "serve", now - 3, "champion", "1", None, 3.0, 503, b""),  # failed: no image answered
        Answer("c4", "serve", now - 2, "challenger", "2", None, 3.0, 200, body(0.31)),
        Answer("c5", "serve", now - 1, "challenger", "2", None, 3.0, 200, body(0.95)),
    ]:
        log.record(item)
    log.flush().result(10)
    log.close()

    report = analyse(url, "1", "2", shadow=False)

    assert report.champion.uncertain == 1 / 3
    assert report.challenger.uncertain == 1 / 2
    assert report.challenger.to_dict()["uncertain"] == 1 / 2  # in the JSON the gateway's /abtest serves
    table = ab_report(report)
    assert "uncertain" in table.splitlines()[0]
    assert "33.3%" in table and "50.0%" in table


def test_the_analysis_counts_as_uncertain_what_the_served_model_marks_by_default():
    assert AB_UNCERTAIN_BELOW == UNCERTAIN_BELOW
