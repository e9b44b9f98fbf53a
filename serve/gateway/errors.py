"""Errors the gateway answers itself, each with its HTTP status; one handler renders them all.

The body follows MLflow's scoring-server shape, ``{"error_code": ..., "message": ...}``, so MLflow
clients read gateway errors the same way as backend errors. Never a stack trace.
"""

from __future__ import annotations


class GatewayError(Exception):
    status = 500
    code = "INTERNAL_ERROR"

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error_code": self.code, "message": self.message}


class BadRequest(GatewayError):
    status, code = 400, "BAD_REQUEST"


class Unauthenticated(GatewayError):
    status, code = 401, "UNAUTHENTICATED"


class Forbidden(GatewayError):
    status, code = 403, "PERMISSION_DENIED"


class NotFound(GatewayError):
    status, code = 404, "RESOURCE_DOES_NOT_EXIST"


class MethodNotAllowed(GatewayError):
    status, code = 405, "METHOD_NOT_ALLOWED"


class Conflict(GatewayError):
    status, code = 409, "RESOURCE_CONFLICT"


class RequestTimeout(GatewayError):
    status, code = 408, "DEADLINE_EXCEEDED"


class PayloadTooLarge(GatewayError):
    status, code = 413, "REQUEST_LIMIT_EXCEEDED"


class TooManyRequests(GatewayError):
    status, code = 429, "REQUEST_LIMIT_EXCEEDED"


class BadGateway(GatewayError):
    status, code = 502, "BAD_GATEWAY"


class Unavailable(GatewayError):
    status, code = 503, "TEMPORARILY_UNAVAILABLE"


class GatewayTimeout(GatewayError):
    status, code = 504, "DEADLINE_EXCEEDED"


_CLIENT_ERROR_CODES = {
    error.status: error.code
    for error in (
        BadRequest,
        Unauthenticated,
        Forbidden,
        NotFound,
        MethodNotAllowed,
        RequestTimeout,
        PayloadTooLarge,
        TooManyRequests,
    )
}


def client_error_code(status: int) -> str:
    """The ``error_code`` for a 4xx ``status`` the gateway relays (``BAD_REQUEST`` when no code
    of ours is more precise, as for 415)."""
    return _CLIENT_ERROR_CODES.get(status, BadRequest.code)
