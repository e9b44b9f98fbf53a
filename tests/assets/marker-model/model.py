"""A model version whose code does something when it is loaded, as anyone who can register a
version can make it do: it writes who it runs as and what it was given into the file named by
its ``marker`` model config, then answers in the digit model's shape. Logged from code (no
pickle), so it loads where pickles are refused; the attack tests read the marker."""

import json
import os

import mlflow
import pandas as pd


class WritesAMarker(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        seen = {"uid": os.getuid(), "environment": sorted(os.environ), "home": os.environ.get("HOME")}
        with open(context.model_config["marker"], "w") as marker:
            json.dump(seen, marker)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        n = len(model_input)
        return pd.DataFrame({"label": [7] * n, "confidence": [0.9] * n, "probabilities": [[0.01] * 10] * n})


mlflow.models.set_model(WritesAMarker())
