"""The one base class for domain errors. Each app's ``errors.py`` subclasses it with a stable
``code``; the API exception handler turns any of them into ``{code, detail, fields}``."""

from typing import Any


class ApplicationError(Exception):
    code: str = "error"
    status_code: int = 400
    default_detail: str = "The request could not be processed."

    def __init__(
        self,
        detail: str | None = None,
        *,
        fields: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.detail = detail or self.default_detail
        self.fields = fields or {}
        self.extra = extra or {}
        super().__init__(self.detail)


class NotFound(ApplicationError):
    code = "not_found"
    status_code = 404
    default_detail = "Not found."


class Conflict(ApplicationError):
    code = "conflict"
    status_code = 409
    default_detail = "The request conflicts with the current state."


class InvalidInput(ApplicationError):
    code = "invalid"
    status_code = 400
    default_detail = "Invalid input."
