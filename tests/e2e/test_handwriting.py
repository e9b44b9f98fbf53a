"""Real handwriting through the real ``mlflow models serve``: the evaluation sets the pipeline was
not tuned on (built from the report seed), each scored through the REST endpoint, beside the same
network behind a plain textbook preprocessing written here as the baseline.

The full model's weights (``tests/assets/full-model``) serve; the figures are printed as a table
and asserted against the targets (issue 25). MNIST's own test set as PNG files is read through the
same pyfunc in ``tests/model/test_quality.py``.
"""

from __future__ import annotations

import base64
import json

import httpx
import numpy as np
import pytest
import torch

from mnist_mlops.registry.evalsets.sets import HANDWRITING_SETS, NO_DIGIT, REPORT_SEED, SETS, Sources, build
from mnist_mlops.serve.model.transforms import normalize
from tests.fullmodel import full_network
from tests.textbook import textbook

CHUNK = 64


@pytest.fixture(scope="module")
def sources(mnist_root) -> Sources:
    return Sources.load(mnist_root)


def served(url: str, images: list[bytes]) -> list[dict]:
    """The endpoint's answer per image (``on_error: row``: a refused image has ``error`` set)."""
    answers = []
    with httpx.Client(timeout=120) as client:
        for start in range(0, len(images), CHUNK):
            rows = [[base64.b64encode(data).decode()] for data in images[start : start + CHUNK]]
            body = {"dataframe_split": {"columns": ["image"], "data": rows}, "params": {"on_error": "row"}}
            response = client.post(f"{url}/invocations", json=body)
            assert response.status_code == 200, response.text[:500]
            answers += response.json()["predictions"]
    return answers


def baseline_labels(images: list[bytes]) -> np.ndarray:
    network = full_network()
    fields = torch.from_numpy(np.stack([textbook(data) for data in images])).unsqueeze(1)
    with torch.inference_mode():
        return network(normalize(fields)).argmax(1).numpy()


@pytest.fixture(scope="module")
def figures(model_server, sources) -> dict[str, dict]:
    """Per set: the served pipeline's accuracy and refusals, and the baseline's accuracy."""
    sets = {}
    for name in SETS:
        samples = build(name, sources, REPORT_SEED)
        sets[name] = ([s.data for s in samples], np.array([s.label for s in samples]))
    results = {}
    for name, (images, labels) in sets.items():
        answers = served(model_server, images)
        refused = np.array([a.get("error") is not None for a in answers])
        predicted = np.array([NO_DIGIT if r else a["label"] for a, r in zip(answers, refused, strict=True)])
        results[name] = {
            "images": len(labels),
            "accuracy": float((predicted == labels).mean()),
            "refused": float(refused.mean()),
            "baseline": float((baseline_labels(images) == labels).mean()) if name != "nodigit" else None,
        }
    print("\n" + json.dumps(results, indent=1))
    return results


@pytest.mark.parametrize("name", HANDWRITING_SETS)
def test_the_served_pipeline_reads_each_handwriting_set_at_least_as_well_as_the_textbook_baseline(figures, name):
    assert figures[name]["accuracy"] >= figures[name]["baseline"], figures[name]


@pytest.mark.parametrize("name", HANDWRITING_SETS)
def test_a_digit_is_refused_at_most_once_in_200(figures, name):
    assert figures[name]["refused"] <= 0.005, figures[name]


def test_images_without_a_digit_are_refused_at_least_99_times_in_100(figures):
    assert figures["nodigit"]["refused"] >= 0.99, figures["nodigit"]
