"""Maps every error to one JSON shape: ``{"code": str, "detail": str, "fields": {...}}``.

``code`` is stable and machine-readable; ``fields`` maps input field names to lists of
``{code, message}`` for validation errors."""

from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler

from core.errors import ApplicationError


def _field_errors(detail: Any, path: str = "") -> dict[str, list[dict[str, str]]]:
    """DRF's nested errors flattened: ``{"event_types.3": [{code, message}], ...}``, a dotted
    path per value at fault (list items by index), ``non_field_errors`` for the body itself."""
    if isinstance(detail, dict):
        flat: dict[str, list[dict[str, str]]] = {}
        for key, value in detail.items():
            flat.update(_field_errors(value, f"{path}.{key}" if path else str(key)))
        return flat
    if isinstance(detail, list) and not all(
        isinstance(item, exceptions.ErrorDetail) for item in detail
    ):
        flat = {}
        for index, item in enumerate(detail):
            if item:  # a valid item of a list has no errors
                flat.update(_field_errors(item, f"{path}.{index}" if path else str(index)))
        return flat
    items = detail if isinstance(detail, list) else [detail]
    key = path or api_settings.NON_FIELD_ERRORS_KEY
    return {key: [{"code": str(item.code), "message": str(item)} for item in items]}


def service_unavailable() -> Response:
    """The database (or another part we depend on) cannot be reached: try again shortly."""
    response = Response(
        {
            "code": "service_unavailable",
            "detail": "The service is briefly unavailable; retry after the given seconds.",
            "fields": {},
        },
        status=status.HTTP_503_SERVICE_UNAVAILABLE,
    )
    response["Retry-After"] = str(settings.API_RETRY_AFTER_SECONDS)
    return response


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, (OperationalError, InterfaceError)):
        # A lost or refused connection: Django drops it, and the next request reconnects.
        return service_unavailable()
    if isinstance(exc, ApplicationError):
        body = {"code": exc.code, "detail": exc.detail, "fields": exc.fields, **exc.extra}
        return Response(body, status=exc.status_code)

    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()

    response = drf_exception_handler(exc, context)
    if response is None:
        return None

    if isinstance(exc, exceptions.ValidationError):
        fields = _field_errors(exc.detail)
        response.data = {
            "code": "validation_error",
            "detail": "The request has invalid fields.",
            "fields": fields,
        }
        response.status_code = status.HTTP_400_BAD_REQUEST
        return response

    detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
    code = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
    if not isinstance(code, str):
        code = getattr(exc, "default_code", "error")
    if isinstance(exc, exceptions.Throttled):
        code = "rate_limited"  # Retry-After is set by DRF's handler, RateLimit-* by middleware
    response.data = {"code": code, "detail": str(detail), "fields": {}}
    return response
