"""The served model behind the real ``mlflow models serve``: good requests in every form, and every
kind of bad request answered with a 4xx JSON error that names the problem, never a stack trace."""

from __future__ import annotations

import base64
import json

import httpx
import numpy as np
import pytest

from tests.helpers import PROJECT_ROOT, png_bytes
from tests.unit.test_decode import png_declaring

SHIPPED_PHOTO = PROJECT_ROOT / "examples" / "photo-of-a-3.jpg"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def invoke(url: str, body, content_type: str = "application/json") -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(f"{url}/invocations", content=content, headers={"Content-Type": content_type}, timeout=120)


@pytest.fixture(scope="module")
def digit(mnist_test):
    images, labels = mnist_test
    return images[0], int(labels[0])


def assert_prediction(response: httpx.Response, label: int) -> dict:
    assert response.status_code == 200, response.text[:500]
    (prediction,) = response.json()["predictions"]
    assert prediction["label"] == label
    assert len(prediction["probabilities"]) == 10
    assert abs(sum(prediction["probabilities"]) - 1) < 1e-9
    assert prediction["confidence"] == max(prediction["probabilities"])
    return prediction


def test_the_shipped_photo_of_a_3_is_read_as_3(model_server):
    body = {"dataframe_split": {"columns": ["image"], "data": [[b64(SHIPPED_PHOTO.read_bytes())]]}}
    prediction = assert_prediction(invoke(model_server, body), 3)
    assert prediction["confidence"] > 0.9


@pytest.mark.parametrize(
    "form",
    [
        "split-image",
        "split-image-wrapped-base64",
        "split-pixels",
        "records",
        "instances",
        "inputs",
        "csv-image",
        "csv-pixels-text",
    ],
)
def test_every_request_form_of_mlflows_protocol_is_answered(model_server, digit, form):
    image, label = digit
    png, pixels = b64(png_bytes(image)), image.ravel().tolist()
    bodies = {
        "split-image": {"dataframe_split": {"columns": ["image"], "data": [[png]]}},
        # MIME-style base64, in lines of 76 characters (GNU `base64` without -w0)
        "split-image-wrapped-base64": {
            "dataframe_split": {"columns": ["image"], "data": [[base64.encodebytes(png_bytes(image)).decode()]]}
        },
        "split-pixels": {"dataframe_split": {"columns": ["pixels"], "data": [[pixels]]}},
        "records": {"dataframe_records": [{"image": png}]},
        "instances": {"instances": [{"pixels": pixels}]},
        "inputs": {"inputs": {"image": [png]}},
        "csv-image": f"image\n{png}\n",
        "csv-pixels-text": 'pixels\n"' + " ".join(map(str, pixels)) + '"\n',
    }
    content_type = "text/csv" if form.startswith("csv") else "application/json"
    assert_prediction(invoke(model_server, bodies[form], content_type), label)


def test_image_and_pixel_rows_mix_in_one_request(model_server, mnist_test):
    images, labels = mnist_test
    body = {
        "dataframe_split": {
            "columns": ["image", "pixels"],
            "data": [[b64(png_bytes(images[0])), None], [None, images[1].ravel().tolist()]],
        }
    }
    response = invoke(model_server, body)
    assert response.status_code == 200
    assert [p["label"] for p in response.json()["predictions"]] == labels[:2].tolist()


def split(column: str, value) -> dict:
    return {"dataframe_split": {"columns": [column], "data": [[value]]}}


BAD_REQUESTS = {
    "undecodable bytes": (split("image", b64(b"\x00\x01 these bytes are no image")), "not a decodable image"),
    "empty string": (split("image", ""), "empty"),
    "non-base64 string": (split("image", "this is not base64!"), "not valid base64"),
    "image with no ink": (split("image", b64(png_bytes(np.full((64, 64), 200, np.uint8)))), "no digit found"),
    "wrong column name": (split("img", "abc"), "no 'image' or 'pixels' column"),
    "pixels of the wrong length": (split("pixels", [0] * 100), "got 100 values; expected 784"),
    "pixels with infinity": (
        '{"dataframe_split": {"columns": ["pixels"], "data": [[[Infinity' + ",0" * 783 + "]]]}}",
        "NaN or infinite",
    ),
    "pixels with NaN": (
        '{"dataframe_split": {"columns": ["pixels"], "data": [[[NaN' + ",0" * 783 + "]]]}}",
        "NaN or infinite",
    ),
    "row with neither column": (
        {"dataframe_split": {"columns": ["image", "pixels"], "data": [[None, None]]}},
        "neither 'image' nor 'pixels'",
    ),
    "decompression bomb": (split("image", b64(png_declaring(50_000, 50_000))), "at most 50,000,000 accepted"),
    "50 MB request": (split("image", "QUFB" * (50 * 1024 * 1024 // 4)), "at most 25 MB accepted"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_a_bad_request_gets_a_4xx_naming_the_problem_and_the_server_keeps_serving(model_server, digit, case):
    body, expected = BAD_REQUESTS[case]
    response = invoke(model_server, body)
    assert 400 <= response.status_code < 500, response.text[:300]
    error = response.json()
    assert expected in error["message"]
    if case not in ("wrong column name",):
        assert "row 0" in error["message"]
    assert "stack_trace" not in error and "Traceback" not in response.text
    image, label = digit
    assert_prediction(invoke(model_server, split("image", b64(png_bytes(image)))), label)


def test_a_body_that_is_not_json_gets_a_400(model_server):
    response = invoke(model_server, b"\x00\xff garbage")
    assert response.status_code == 400
    assert "stack_trace" not in response.json()


def test_per_row_errors_can_be_asked_for_with_params(model_server, digit):
    image, label = digit
    body = {
        "dataframe_split": {"columns": ["image"], "data": [[b64(png_bytes(image))], ["garbage!"]]},
        "params": {"on_error": "row"},
    }
    response = invoke(model_server, body)
    assert response.status_code == 200
    first, second = response.json()["predictions"]
    assert first["label"] == label and first["error"] is None
    assert second["label"] is None and "not valid base64" in second["error"]
