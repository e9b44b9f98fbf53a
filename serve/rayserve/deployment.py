"""A Ray Serve deployment that serves any version of one registered model.

Each replica loads a version the first time a request names it (Ray Serve's model multiplexing:
the version travels in the ``serve_multiplexed_model_id`` header, and Ray routes requests for a
version to the replicas that hold it) and answers with MLflow's own scoring app for it
(``mlflow.pyfunc.scoring_server.init``: the same routes, parsing, errors and answers as ``mlflow
models serve``). A replica keeps the few versions it served last; Ray Serve's autoscaler adds
and removes replicas on ongoing requests, down to zero if allowed.

Small requests for one version are batched (``@serve.batch``; Ray splits a batch by multiplexed
version): the calls a replica holds at once, from one gateway's micro-batches or from several
gateways, become one call to the model, by the gateway's own rules (``gateway.protocol``: a plain
``dataframe_split`` of the same columns, no ``params``, a small body). A batch the model refuses is
halved until each refused request is answered alone, so one client's bad row never costs another
its answer.

Imported in Ray's worker processes: only what a replica needs is imported at module level.
"""

from __future__ import annotations

import asyncio
import json
import os

import httpx
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from mnist_mlops.serve.gateway.errors import BadRequest
from mnist_mlops.serve.gateway.protocol import (
    JSON,
    ScoringRequest,
    merged_body,
    parse,
    predictions_body,
    predictions_of,
)

MODEL_ID_HEADER = "serve_multiplexed_model_id"
BATCH_ROWS_HEADER = "X-Serve-Batch-Rows"  # rows of the model call that answered: what batching did
VERSIONS_PER_REPLICA = 3  # an A/B split and a shadow: the versions one replica may hold at once
MAX_BATCH_ROWS = 64  # the gateway's default micro-batch: a full one is a batch of its own
BATCH_WAIT_S = 0.002  # beat 5 ms and Ray's default 10 ms in the Ray Serve peer's tuning (bench/peers)


def _error(status: int, message: str, code: str) -> Response:
    body = json.dumps({"error_code": code, "message": message})
    return Response(body, status_code=status, media_type="application/json")


def _rows(requests: list[ScoringRequest]) -> int:
    return sum(len(request.rows) for request in requests)


async def answer_together(app: httpx.AsyncClient, requests: list[ScoringRequest]) -> list[tuple[bytes | None, int]]:
    """Each request's 200 body from one call to the scoring ``app`` for all of them (they share
    their columns), with the rows of that call; None for a request the model refused: halving
    finds the refused ones, and the caller sends each of those alone, so its client gets MLflow's
    own error for its own rows."""
    if len(requests) == 1:
        return [(None, 1)]  # alone: the client's bytes, untouched, by the caller
    rows = _rows(requests)
    body = merged_body(requests[0].columns, [row for request in requests for row in request.rows])
    answer = await app.post("/invocations", content=body, headers={"content-type": JSON})
    if answer.status_code == 200:
        try:
            predictions = predictions_of(answer.content)
        except ValueError:
            predictions = []
        if len(predictions) == rows:
            bodies, start = [], 0
            for request in requests:
                bodies.append((predictions_body(predictions[start : start + len(request.rows)]), rows))
                start += len(request.rows)
            return bodies
    middle = len(requests) // 2
    first, second = await asyncio.gather(
        answer_together(app, requests[:middle]), answer_together(app, requests[middle:])
    )
    return first + second


@serve.deployment
class RegistryModel:
    """``models:/<model_name>/<version>`` for whichever version a request names."""

    def __init__(self, model_name: str, tracking_uri: str, torch_threads: int = 1) -> None:
        from mnist_mlops.serve.model import THREADS_ENV

        os.environ.setdefault(THREADS_ENV, str(torch_threads))  # one replica per core: Ray adds replicas
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self.model_name, self.tracking_uri = model_name, tracking_uri

    @serve.multiplexed(max_num_models_per_replica=VERSIONS_PER_REPLICA)
    async def scoring_app(self, version: str) -> httpx.AsyncClient:
        """MLflow's scoring app for ``version``, reached in process (no socket)."""

        def load():
            import mlflow
            from mlflow.pyfunc import scoring_server

            from mnist_mlops.serve.loading import load_pyfunc

            mlflow.set_tracking_uri(self.tracking_uri)
            mlflow.set_registry_uri(self.tracking_uri)
            path = mlflow.artifacts.download_artifacts(f"models:/{self.model_name}/{version}")
            return scoring_server.init(load_pyfunc(path))

        app = await asyncio.to_thread(load)
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://model", timeout=None)

    @serve.batch(max_batch_size=MAX_BATCH_ROWS, batch_wait_timeout_s=BATCH_WAIT_S, batch_size_fn=_rows)
    async def batched(self, requests: list[ScoringRequest]) -> list[tuple[bytes | None, int]]:
        """The requests Ray gathered for one version, answered together: each one's body (None:
        to be sent alone) and the rows of the call."""
        by_columns: dict[tuple, list[int]] = {}
        for index, request in enumerate(requests):
            by_columns.setdefault(request.columns, []).append(index)
        app = await self.scoring_app(serve.get_multiplexed_model_id())
        answers: list[tuple[bytes | None, int]] = [(None, 1)] * len(requests)
        for indices in by_columns.values():
            together = await answer_together(app, [requests[i] for i in indices])
            for index, answer in zip(indices, together, strict=True):
                answers[index] = answer
        return answers

    async def __call__(self, request: Request) -> Response:
        version = serve.get_multiplexed_model_id()
        if not version.isdigit():
            return _error(
                400, f"name a model version (digits) in the {MODEL_ID_HEADER} header", "INVALID_PARAMETER_VALUE"
            )
        try:
            app = await self.scoring_app(version)
        except Exception as exc:  # an unknown version, an unreachable store
            message = f"cannot load {self.model_name} v{version}: {' '.join(str(exc).split())[:300]}"
            return _error(404, message, "RESOURCE_DOES_NOT_EXIST")
        path = request.url.path.removeprefix(request.scope.get("root_path", "")) or "/"
        body, content_type = await request.body(), request.headers.get("content-type", JSON)
        if request.method == "POST" and path == "/invocations":
            try:
                scoring = parse(body, content_type)
            except BadRequest as refused:  # not JSON, or nested past what a parser should recurse into
                return _error(400, refused.message, "BAD_REQUEST")
            if scoring.mergeable and len(scoring.rows) < MAX_BATCH_ROWS:
                answer, rows = await self.batched(scoring)
                if answer is not None:
                    return Response(answer, media_type=JSON, headers={BATCH_ROWS_HEADER: str(rows)})
        answer = await app.request(request.method, path, content=body, headers={"content-type": content_type})
        return Response(answer.content, status_code=answer.status_code, media_type=answer.headers.get("content-type"))


def app(args: dict[str, str]):
    """The application for ``serve run`` and KubeRay's RayService (``import_path:
    mnist_mlops.serve.rayserve.deployment:app``), with ``args`` ``model_name`` (default
    ``mnist-cnn``) and ``tracking_uri`` (default ``$MLFLOW_TRACKING_URI``). Replicas and
    autoscaling come from the Serve config that deploys it."""
    model_name = args.get("model_name", "mnist-cnn")
    tracking_uri = args.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        raise ValueError("set the application's tracking_uri argument or MLFLOW_TRACKING_URI")
    return RegistryModel.bind(model_name, tracking_uri)
