"""Service-level errors that the HTTP layer turns into RFC 9457 problems."""

from __future__ import annotations


class ServiceError(Exception):
    """An error with an HTTP status, a short title and the offending field (if any)."""

    status = 400
    title = "Bad request"

    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class NotFound(ServiceError):
    status = 404
    title = "Not found"


class Gone(ServiceError):
    """The resource existed and was deleted (RFC 9110 §15.5.11): unlike 404, retrying is pointless."""

    status = 410
    title = "Gone"


class Conflict(ServiceError):
    status = 409
    title = "Conflict"


class TooLarge(ServiceError):
    status = 413
    title = "Request too large"


class Unprocessable(ServiceError):
    status = 422
    title = "Validation error"
