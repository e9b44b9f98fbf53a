"""The gate on follow: a version an alias moved to takes traffic only if it passes the promotion
gate, whoever moved the alias.

MLflow's EDIT permission on a registered model allows new versions and alias moves alike, and the
MLflow UI's alias editor moves an alias with no gate at all. So before the gateway switches an
alias to a new version it scores labelled data (the MNIST test set, or ``--follow_gate_data``)
through the new version's own backend, already started and unprivileged, and through the backend
it is serving now, and switches only if the new one reaches ``min_accuracy`` and trails the old by
at most ``tolerance`` (``mnist-registry promote``'s thresholds). Otherwise traffic stays, the
refusal is shown in ``/variants`` and ``/metrics`` and recorded in the promotion history.

Scoring through the backends, not in this process: a model version is code (docs/security.md),
and the gateway does not run it with its own rights.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import httpx
import numpy as np

from mnist_mlops.serve.gateway.control.launcher import backend_httpx_client
from mnist_mlops.serve.gateway.state import Backend

ROWS_PER_CALL = 100


def _json_value(value):
    """A cell of the labelled data as the scoring protocol carries it."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    return value


class GateUnavailable(RuntimeError):
    """The gate could not be run (no data, a backend that does not answer); the message says why."""


@dataclass(frozen=True)
class FollowGate:
    bodies: list[bytes]  # the labelled data as scoring requests of ROWS_PER_CALL rows
    labels: np.ndarray
    min_accuracy: float
    tolerance: float

    @classmethod
    def from_data(cls, data_path: str | None, mnist_root, samples: int, min_accuracy: float, tolerance: float):
        """The gate over ``samples`` labelled images (``registry.datasets.load``'s sources)."""
        from mnist_mlops.registry.datasets import load

        data = load(data_path, mnist_root, samples)
        columns = list(data.inputs.columns)
        rows = [[_json_value(value) for value in row] for row in data.inputs.itertuples(index=False)]
        bodies = [
            json.dumps(
                {
                    "dataframe_split": {"columns": columns, "data": rows[i : i + ROWS_PER_CALL]},
                    "params": {"on_error": "row"},  # a row the model refuses is a wrong answer, not a failed gate
                }
            ).encode()
            for i in range(0, len(rows), ROWS_PER_CALL)
        ]
        return cls(bodies, data.labels, min_accuracy, tolerance)

    async def accuracy(self, backend: Backend, timeout: float = 120.0) -> float:
        """The share of the labels ``backend`` answers right (a refused row counts as wrong)."""
        predicted: list = []
        try:
            async with backend_httpx_client(backend.url, timeout, backend.headers) as client:
                for body in self.bodies:
                    answer = await client.post(
                        "/invocations", content=body, headers={"Content-Type": "application/json"}
                    )
                    if answer.status_code != 200:
                        raise GateUnavailable(f"v{backend.version} answered {answer.status_code} to the gate's data")
                    predicted += [row.get("label") for row in answer.json()["predictions"]]
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise GateUnavailable(f"v{backend.version} could not be scored: {exc}") from None
        return float(np.mean([p == int(y) for p, y in zip(predicted, self.labels, strict=True)]))

    async def refusal(self, candidate: Backend, current: Backend | None) -> tuple[str | None, dict]:
        """(why ``candidate`` may not take the traffic, or None; the figures it was judged on:
        both versions' accuracy on the same images)."""
        figures = {"candidate": candidate.version, "candidate_accuracy": await self.accuracy(candidate)}
        figures |= {"images": len(self.labels), "min_accuracy": self.min_accuracy, "tolerance": self.tolerance}
        if current is not None:
            figures |= {"current": current.version, "current_accuracy": await self.accuracy(current)}
        scored = (
            f"v{candidate.version} scored {figures['candidate_accuracy']:.4f} on {len(self.labels)} labelled images"
        )
        if figures["candidate_accuracy"] < self.min_accuracy:
            return f"{scored}, below the gate's {self.min_accuracy:.4f}", figures
        if current is not None and figures["candidate_accuracy"] < figures["current_accuracy"] - self.tolerance:
            return (
                f"{scored}, more than {self.tolerance} below v{current.version}'s {figures['current_accuracy']:.4f}",
                figures,
            )
        return None, figures
