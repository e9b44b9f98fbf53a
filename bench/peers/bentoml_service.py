"""The BentoML peer: the model's pyfunc behind BentoML 1.4, set up as BentoML's documentation
recommends: one worker, an API with adaptive batching (``batchable=True``, ``max_batch_size``
64 rows, a ``max_latency_ms`` the c32 load stays well inside). BentoML cannot batch a
``pd.DataFrame`` parameter (its batcher counts the frame's tuple form and every request times
out), so the API takes MLflow's ``dataframe_split`` rows as a list of row objects, the form its
batcher concatenates; the images are the same. Nothing of this project is imported: this file
runs in a virtualenv of its own (``bench.peers.environments``).

``bentoml serve bench.peers.bentoml_service:MnistPyfunc --host 127.0.0.1 --port P`` with
``PEER_MODEL_PATH`` naming the local MLflow model folder.
"""

from __future__ import annotations

import json
import os

import bentoml

MAX_BATCH_ROWS = 64
TORCH_THREADS = 2


@bentoml.service(workers=1, traffic={"timeout": 60})
class MnistPyfunc:
    def __init__(self) -> None:
        import mlflow
        import torch

        torch.set_num_threads(TORCH_THREADS)
        self.model = mlflow.pyfunc.load_model(os.environ["PEER_MODEL_PATH"])

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH_ROWS, max_latency_ms=10_000)
    def invocations(self, rows: list[dict]) -> list[dict]:
        import pandas as pd

        answers = self.model.predict(pd.DataFrame.from_records(rows))
        return json.loads(answers.to_json(orient="records"))

    @bentoml.api(route="/ping")
    def ping(self) -> dict:
        return {"status": "ok"}
