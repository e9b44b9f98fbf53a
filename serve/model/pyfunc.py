"""The MLflow pyfunc: ``predict`` runs decode -> preprocess -> CNN -> postprocess on a whole table.

One implementation for every way of scoring: ``mlflow models serve``, the A/B gateway, pandas batch
scoring and ``mlflow.pyfunc.spark_udf`` all call this ``predict``.

Params: ``uncertain_below`` (0.8) marks answers whose calibrated confidence is below it
``uncertain``; ``return_input`` (false) adds ``input``, the 28x28 image the network saw (784
numbers in [0, 1], row by row), so a person can see why it answered what it did.

Limits: decoding one call's images is bounded in pixels and seconds (``decode.DecodeBudget``);
past it the call fails with ``RequestTooCostly`` (MLflow's ``REQUEST_LIMIT_EXCEEDED``).

Errors: with the default ``params={"on_error": "raise"}`` a bad row fails the call with
``InvalidModelInput`` (HTTP 400 from the scoring server) naming the row, the problem and what is
accepted. With ``{"on_error": "row"}`` every row is answered: a bad row gets ``error`` set and null
figures, the others are scored (batch scoring uses this). An image with no visible digit is such
an error, with a message that starts ``no digit found``; the model never guesses a label for it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch

from . import DTYPE_ENV, THREADS_ENV, inputs
from .decode import DecodeBudget
from .errors import InvalidModelInput
from .network import build_network, fused_for_inference, inference_dtype
from .postprocess import answers, probabilities_from_logits
from .prepare import prepare_rows
from .schema import UNCERTAIN_BELOW
from .transforms import normalize

ON_ERROR_RAISE, ON_ERROR_ROW = "raise", "row"
# Rows per forward pass, per torch thread: each thread's share of the activations stays in its
# core's cache, and a huge request never holds one giant activation tensor. 64 is where the bare
# network peaks per thread (``make bench``, section network: images/s by batch size).
ROWS_PER_THREAD = 64
MAX_REPORTED_ERRORS = 5


@dataclass(frozen=True)
class Options:
    """What a request's ``params`` may set (MLflow checks their types against the signature)."""

    on_error: str = ON_ERROR_RAISE
    uncertain_below: float = UNCERTAIN_BELOW
    return_input: bool = False

    @classmethod
    def of(cls, params: dict | None) -> Options:
        params = params or {}
        options = cls(
            on_error=params.get("on_error", ON_ERROR_RAISE),
            uncertain_below=params.get("uncertain_below", UNCERTAIN_BELOW),
            return_input=params.get("return_input", False),
        )
        if options.on_error not in (ON_ERROR_RAISE, ON_ERROR_ROW):
            raise InvalidModelInput(f"params.on_error is {options.on_error!r}; expected 'raise' or 'row'")
        threshold = options.uncertain_below
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
            raise InvalidModelInput(f"params.uncertain_below is {threshold!r}; expected a number from 0 to 1")
        if not isinstance(options.return_input, bool):
            raise InvalidModelInput(f"params.return_input is {options.return_input!r}; expected true or false")
        return options


class DigitClassifier(mlflow.pyfunc.PythonModel):
    """A digit classifier over images of any size or over 28x28 pixel rows."""

    def load_context(self, context) -> None:
        threads = os.environ.get(THREADS_ENV)
        if threads:
            torch.set_num_threads(int(threads))
        with open(context.artifacts["architecture"]) as f:
            architecture = json.load(f)
        # Fitted on the validation split after training (models logged before it have none: 1).
        self.temperature = float(architecture.get("temperature", 1.0))
        network = build_network(architecture)
        state = torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True)
        network.load_state_dict(state)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.inference_batch = ROWS_PER_THREAD * torch.get_num_threads()
        # float32 unless the operator chose otherwise (DTYPE_ENV); inputs are cast to match.
        self.dtype = inference_dtype(os.environ.get(DTYPE_ENV), self.device)
        self.network = fused_for_inference(network).to(self.device, self.dtype)

    # pd.DataFrame is a hint MLflow derives no schema from: the logged signature stays the contract.
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        options = Options.of(params)
        frame = inputs.as_frame(model_input)
        images, errors = prepare_rows(frame, DecodeBudget.from_environment())
        if options.on_error == ON_ERROR_RAISE and any(errors):
            raise _summarise(errors)
        probabilities, chosen = self._classify(images)
        return answers(
            probabilities,
            errors if options.on_error == ON_ERROR_ROW else None,
            options.uncertain_below,
            [fields[i] for fields, i in zip(images, chosen, strict=True)] if options.return_input else None,
        )

    @torch.inference_mode()
    def _classify(self, readings: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(calibrated probabilities ``[rows, 10]``, the reading each row's answer comes from):
        every reading of every row through the network in one pass, and each row answered by its
        most confident reading. A reading spoiled by JPEG blocks or grain answers with less
        confidence than a clean one of the same digit; an average let two spoiled readings outvote
        the clean one (the faint set's tuning seed: 281 read right by the average, 286 so)."""
        if not readings:
            return np.zeros((0, 10)), np.zeros(0, dtype=np.int64)
        counts = np.array([len(fields) for fields in readings])
        batch = normalize(torch.from_numpy(np.concatenate(readings)).unsqueeze(1))
        logits = [
            self.network(batch[start : start + self.inference_batch].to(self.device, self.dtype)).float().cpu()
            for start in range(0, len(batch), self.inference_batch)
        ]
        probabilities = probabilities_from_logits(torch.cat(logits), self.temperature)
        chosen = np.zeros(len(counts), dtype=np.int64)
        if (counts == 1).all():
            return probabilities, chosen
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        confidence = probabilities.max(axis=1)
        for row in np.flatnonzero(counts > 1):
            chosen[row] = int(np.argmax(confidence[starts[row] : starts[row] + counts[row]]))
        return probabilities[starts + chosen], chosen


def _summarise(errors: list[str | None]) -> InvalidModelInput:
    failed = [(row, error) for row, error in enumerate(errors) if error]
    shown = "; ".join(f"row {row}: {error}" for row, error in failed[:MAX_REPORTED_ERRORS])
    more = len(failed) - MAX_REPORTED_ERRORS
    suffix = f" (and {more} more rows)" if more > 0 else ""
    return InvalidModelInput(f"{len(failed)} of {len(errors)} rows could not be scored: {shown}{suffix}")
