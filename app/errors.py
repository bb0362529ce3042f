"""Service-level errors that the HTTP layer turns into RFC 9457 problems."""

from __future__ import annotations


class ServiceError(Exception):
    """An error with an HTTP status and the offending field (if any); the problem type, and so its
    title, follows from the status (`app.problems.TITLES`)."""

    status = 400

    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class NotFound(ServiceError):
    status = 404


class Gone(ServiceError):
    """The resource existed and was deleted (RFC 9110 §15.5.11): unlike 404, retrying is pointless."""

    status = 410


class NotAcceptable(ServiceError):
    """No representation the client accepts (RFC 9110 §15.5.7): the detail lists those offered."""

    status = 406


class Conflict(ServiceError):
    status = 409


class TooLarge(ServiceError):
    status = 413


class Unprocessable(ServiceError):
    status = 422
