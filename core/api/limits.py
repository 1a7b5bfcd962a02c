"""What every ``/api/`` request must be before a view sees it, answered in the API's one error
shape (``{"code", "detail", "fields"}``), never an HTML page:

* a URL (path and query string) longer than ``API_MAX_URL_LENGTH`` characters: 414
  ``uri_too_long``;
* a body longer than ``API_MAX_BODY_BYTES``: 413 ``request_too_large`` (checked against
  ``Content-Length`` before anything is read);
* a query parameter given with an empty value (``?to=``): 400 ``validation_error``, the same
  on every operation. A parameter that is not wanted is left out, not sent empty; the schema
  says so with ``minLength: 1``.
* more query parameters than Django parses (``DATA_UPLOAD_MAX_NUMBER_FIELDS``): 400
  ``validation_error``."""

from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import TooManyFieldsSent
from django.http import HttpRequest, HttpResponse, JsonResponse

from core.api.fallback import api_error


def _content_length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0  # Django reads no body then


class RequestLimits:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith("/api/"):
            refusal = self.refusal(request)
            if refusal is not None:
                return refusal
        return self.get_response(request)

    def refusal(self, request: HttpRequest) -> JsonResponse | None:
        query = request.META.get("QUERY_STRING", "")
        if len(request.path) + len(query) + 1 > settings.API_MAX_URL_LENGTH:
            return api_error(
                "uri_too_long",
                f"The URL is longer than {settings.API_MAX_URL_LENGTH} characters.",
                414,
            )
        if _content_length(request) > settings.API_MAX_BODY_BYTES:
            return api_error(
                "request_too_large",
                f"The body is larger than {settings.API_MAX_BODY_BYTES} bytes.",
                413,
            )
        try:
            params = request.GET
        except TooManyFieldsSent:
            return api_error(
                "validation_error",
                f"More than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} query parameters.",
                400,
            )
        blank = sorted({name for name, values in params.lists() if "" in values})
        if blank:
            message = "Leave the parameter out instead of sending it empty."
            return api_error(
                "validation_error",
                "The request has invalid fields.",
                400,
                {name: [{"code": "blank", "message": message}] for name in blank},
            )
        return None
