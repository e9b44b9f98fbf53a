"""A Ray Serve deployment that serves any version of one registered model.

Each replica loads a version the first time a request names it (Ray Serve's model multiplexing:
the version travels in the ``serve_multiplexed_model_id`` header, and Ray routes requests for a
version to the replicas that hold it) and answers with MLflow's own scoring app for it
(``mlflow.pyfunc.scoring_server.init``: the same routes, parsing, errors and answers as ``mlflow
models serve``). A replica keeps the few versions it served last; Ray Serve's autoscaler adds
and removes replicas on ongoing requests, down to zero if allowed.

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

MODEL_ID_HEADER = "serve_multiplexed_model_id"
VERSIONS_PER_REPLICA = 3  # an A/B split and a shadow: the versions one replica may hold at once


def _error(status: int, message: str, code: str) -> Response:
    body = json.dumps({"error_code": code, "message": message})
    return Response(body, status_code=status, media_type="application/json")


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
        answer = await app.request(
            request.method,
            path,
            content=await request.body(),
            headers={"content-type": request.headers.get("content-type", "application/json")},
        )
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
