"""The backends' bare scoring app (``serve.scoring_app``) speaks MLflow's scoring protocol as
MLflow's own app does: the same status and body for every request, good or hostile; and a real
backend process survives clients that break off or send garbage."""

from __future__ import annotations

import base64
import json
import socket
import sys

import httpx
import pytest
from mlflow.pyfunc import scoring_server

from mnist_mlops.serve.scoring_app import scoring_app
from tests.helpers import free_port, png_bytes, start_process, stop_process, subprocess_env, wait_for_http

JSON = "application/json"


def _rows(images) -> list[str]:
    return [base64.b64encode(png_bytes(image)).decode() for image in images]


def protocol_requests(images) -> list[tuple[str, str, dict[str, str], bytes]]:
    """(method, path, headers, body): what clients send a scoring server, right and wrong."""
    rows = _rows(images[:3])
    split = {"dataframe_split": {"columns": ["image"], "data": [[row] for row in rows]}}
    records = {"dataframe_records": [{"image": row} for row in rows]}
    with_params = split | {"params": {"uncertain_below": 0.9999, "return_input": True}}
    bad_param = split | {"params": {"uncertain_below": 7}}
    not_an_image = {"dataframe_split": {"columns": ["image"], "data": [["bm90IGFuIGltYWdl"]]}}
    wrong_column = {"dataframe_split": {"columns": ["photo"], "data": [[rows[0]]]}}
    post = lambda body, ctype=JSON: ("POST", "/invocations", {"content-type": ctype}, body)  # noqa: E731
    return [
        post(json.dumps(split).encode()),
        post(json.dumps(records).encode()),
        post(json.dumps(with_params).encode()),
        post(json.dumps(bad_param).encode()),
        post(json.dumps(not_an_image).encode()),
        post(json.dumps(wrong_column).encode()),
        post(b"{not json"),
        post(b"\xff\xfe\x00garbage"),
        post(json.dumps({"unknown_key": []}).encode()),
        post(json.dumps([1, 2, 3]).encode()),
        post(b"image\n" + rows[0].encode() + b"\n", "text/csv"),
        post(b"image\n\x00\x01\n", "text/csv"),
        post(json.dumps(split).encode(), "text/plain"),
        post(json.dumps(split).encode(), "application/json; charset=latin-1"),
        post(json.dumps(split).encode(), "application/json; boundary=x"),
        ("GET", "/invocations", {}, b""),
        ("GET", "/ping", {}, b""),
        ("HEAD", "/ping", {}, b""),
        ("GET", "/health", {}, b""),
        ("GET", "/version", {}, b""),
        ("POST", "/ping", {}, b""),
        ("GET", "/../../etc/passwd", {}, b""),
        ("DELETE", "/models", {}, b""),
    ]


async def _answers(app, requests) -> list[tuple[int, bytes]]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://backend") as client:
        out = []
        for method, path, headers, body in requests:
            answer = await client.request(method, path, headers=headers, content=body)
            out.append((answer.status_code, answer.content))
        return out


@pytest.mark.anyio
async def test_every_request_gets_mlflows_own_status_and_body(full_model, mnist_test):
    requests = protocol_requests(mnist_test[0])
    ours = await _answers(scoring_app(full_model), requests)
    mlflows = await _answers(scoring_server.init(full_model), requests)
    for request, mine, theirs in zip(requests, ours, mlflows, strict=True):
        assert mine == theirs, f"{request[0]} {request[1]} {request[2]} {request[3][:60]!r}"
    statuses = [status for status, _ in ours]
    assert statuses.count(200) >= 7 and {400, 404, 405, 415} <= set(statuses)  # the cases did differ
    first = json.loads(ours[0][1])["predictions"]
    assert [row["label"] for row in first] == [int(label) for label in mnist_test[1][:3]]


@pytest.mark.anyio
async def test_a_request_without_a_content_type_is_told_what_is_accepted(full_model, mnist_test):
    """MLflow's app answers a bare 500 "Internal Server Error" here; ours names the types."""
    body = json.dumps({"dataframe_split": {"columns": ["image"], "data": [_rows(mnist_test[0][:1])]}}).encode()
    ((status, content),) = await _answers(scoring_app(full_model), [("POST", "/invocations", {}, body)])
    assert status == 415 and b"application/json" in content and b"Traceback" not in content


def test_a_backend_process_outlives_clients_that_break_off_or_send_garbage(full_model_path, mnist_test, tmp_path):
    """Started as a user starts it; between the hostile clients a good request is still answered."""
    port = free_port()
    command = [sys.executable, "-m", "mnist_mlops.serve.backend", "--model_uri", str(full_model_path)]
    process = start_process([*command, "--port", str(port)], subprocess_env(), tmp_path / "backend.log")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/ping", process)
        good = json.dumps({"dataframe_split": {"columns": ["image"], "data": [_rows(mnist_test[0][:1])]}})

        def answered() -> int:
            reply = httpx.post(f"{url}/invocations", content=good, headers={"content-type": JSON}, timeout=30)
            assert reply.status_code == 200
            return reply.json()["predictions"][0]["label"]

        hostile = [
            # a body promised longer than sent, then the connection closed
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100000\r\n\r\n{"dataframe_split": ',
            b"GARBAGE / HTTP/9.9\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),  # a TLS hello
        ]
        for raw in hostile:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(raw)
            assert answered() == int(mnist_test[1][0])
        assert process.poll() is None
    finally:
        stop_process(process)
    assert "Traceback" not in (tmp_path / "backend.log").read_text()
