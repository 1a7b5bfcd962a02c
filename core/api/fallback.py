"""What ``/api/`` answers outside the DRF views: JSON, never Django's HTML pages.

``handler400``, ``handler403``, ``handler404`` and ``handler500`` (config/urls.py) use these
for paths under ``/api/`` (a request Django itself refuses — a host not allowed, too many
query parameters — is a 400 ``bad_request``);
other paths keep Django's pages. A lost database connection met outside a view (in a
middleware, say) reaches ``server_error`` and answers the same 503 as the views do."""

import sys

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def api_error(code: str, detail: str, status: int, fields: dict | None = None) -> JsonResponse:
    """The API's one error shape, outside DRF (core/api/exception_handler.py inside it)."""
    return JsonResponse({"code": code, "detail": detail, "fields": fields or {}}, status=status)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return api_error("bad_request", "The request is malformed or not allowed.", 400)
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return api_error("permission_denied", "You do not have permission to do this.", 403)
    return defaults.permission_denied(request, exception)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return api_error("not_found", "No such API path.", 404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if not _is_api(request):
        return defaults.server_error(request)
    if isinstance(sys.exc_info()[1], (OperationalError, InterfaceError)):
        response = api_error(
            "service_unavailable",
            "The service is briefly unavailable; retry after the given seconds.",
            503,
        )
        response["Retry-After"] = str(settings.API_RETRY_AFTER_SECONDS)
        return response
    return api_error("server_error", "An unexpected error occurred.", 500)
