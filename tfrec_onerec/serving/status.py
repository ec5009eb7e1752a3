"""Errors with TF Serving's status codes, shared by the gRPC and REST front ends.

A :class:`ServingError` carries a canonical status code by name (``"NOT_FOUND"``,
``"INVALID_ARGUMENT"``, ...), so this module needs neither grpc nor TensorFlow: the gRPC
layer turns the name into a ``grpc.StatusCode`` and the REST layer into an HTTP status,
with the table TF Serving's HTTP server uses.
"""
from __future__ import annotations

import logging
import re
import uuid

# The canonical codes in numeric order; TensorFlow's OpError.error_code uses the same numbers.
CODES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
         "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
         "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")

# TF Serving's ToHTTPStatusCode (model_servers/http_server.cc).
HTTP_STATUS = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501, "INTERNAL": 500,
    "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401,
}


class ServingError(Exception):
    """A request failed with a canonical status code.

    Args:
        code: the status code's name, one of :data:`CODES` (not ``"OK"``).
        message: what went wrong, naming the offending input where there is one.
    """

    def __init__(self, code: str, message: str):
        if code not in CODES or code == "OK":
            raise ValueError(f"ServingError: unknown status code {code!r}; expected one of {CODES[1:]}.")
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def __repr__(self):
        return f"ServingError({self.code}, {self.message!r})"


def invalid_argument(message: str) -> ServingError:
    return ServingError("INVALID_ARGUMENT", message)


def not_found(message: str) -> ServingError:
    return ServingError("NOT_FOUND", message)


def code_name(number: int) -> str:
    """The canonical code name of a numeric code (UNKNOWN for numbers outside the table)."""
    return CODES[number] if 0 < number < len(CODES) else "UNKNOWN"


def first_line(message: str) -> str:
    """A TensorFlow error message without the function and graph-node context TensorFlow adds."""
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", str(message))
    text = re.sub(r"\s*\[Op:[^\]]*\]\s*$", "", text.split("\n\t [[", 1)[0]).strip()
    if text.startswith("Graph execution error:"):  # "Detected at node ...", a stack, then the message
        text = [line for line in text.splitlines() if line.strip()][-1]
    return text


def internal_error(log: logging.Logger, what: str) -> ServingError:
    """INTERNAL for an unexpected exception being handled: the traceback goes to `log` under a
    fresh request id, the client's message carries only that id (never the exception's text,
    which may hold server paths or data). Call inside an ``except`` block.

    Args:
        what: the request, for the log line (e.g. ``"POST /v1/models/din:predict"``).
    """
    request_id = uuid.uuid4().hex[:16]
    log.exception("Unexpected error while serving %s (request id %s)", what, request_id)
    return ServingError("INTERNAL", f"Internal error (request id {request_id}); the server's log has the details.")
