"""The error the model raises for a bad input row, in the form MLflow's scoring server reports cleanly.

MLflow's scoring server answers an ``MlflowException`` raised inside ``predict`` with its HTTP
status and a JSON body ``{"error_code": ..., "message": ...}``; any other exception becomes a 400
that carries the Python stack trace. So every input problem is raised as ``InvalidModelInput``.
"""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, REQUEST_LIMIT_EXCEEDED


class RowError(ValueError):
    """One input row cannot be scored; ``str()`` says why and what is accepted (no row number)."""

    def __init__(self, reason: str, code: str = "invalid_input") -> None:
        super().__init__(reason)
        self.code = code


class InvalidModelInput(MlflowException):
    """A client error in the model input: HTTP 400 with a message naming the row and the problem.

    The scoring server rewrites ``message`` to prefix it with the whole input DataFrame's repr
    (``Failed to predict data '<repr>'``). That echoes image bytes back to the client and buries the
    reason, so this class keeps the message it was raised with and ignores the rewrite.
    """

    error_code_name = INVALID_PARAMETER_VALUE

    def __init__(self, message: str) -> None:
        self._client_message = message
        super().__init__(message, error_code=self.error_code_name)

    @property
    def message(self) -> str:
        return self._client_message

    @message.setter
    def message(self, value: str) -> None:
        # Deliberately ignored: see the class docstring.
        pass


class RequestTooCostly(InvalidModelInput):
    """A request whose images would cost more to decode than one request may (pixels or seconds).

    MLflow's ``REQUEST_LIMIT_EXCEEDED``: the scoring server answers it with HTTP 429, and the
    gateway, which knows it is the request's size and not its rate, with 413.
    """

    error_code_name = REQUEST_LIMIT_EXCEEDED
