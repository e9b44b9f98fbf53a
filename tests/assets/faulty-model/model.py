"""A deliberately faulty model for the automatic-rollback test: it answers in the digit model's
shape, but fails one request in three with an internal error (HTTP 500 behind MLflow's server),
the way a broken deployment would. Logged from code, like the real model."""

import random

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR


class FailsOneInThree(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        if random.random() < 1 / 3:
            raise MlflowException("injected failure", error_code=INTERNAL_ERROR)
        n = len(model_input)
        return pd.DataFrame({"label": [0] * n, "confidence": [0.1] * n, "probabilities": [[0.1] * 10] * n})


mlflow.models.set_model(FailsOneInThree())
