"""OpenAPI description of the one error shape (see core/api/exception_handler.py).

Views document their errors with ``error_responses("insufficient_capacity", ...)``: every code
named lands under its HTTP status, with an example body, so clients can switch on ``code``."""

from collections import defaultdict

from drf_spectacular.utils import OpenApiExample, OpenApiResponse
from rest_framework import serializers

# code -> (HTTP status, what it means). The one list of error codes the API documents.
ERROR_CODES: dict[str, tuple[int, str]] = {
    "validation_error": (400, "A field is missing or malformed; `fields` names each one."),
    "parse_error": (400, "The body is not valid JSON (or nested too deeply)."),
    "bad_request": (400, "The request is malformed (e.g. a Host this service does not answer)."),
    "unsupported_media_type": (415, "The body is not `application/json`."),
    "request_too_large": (413, "The body is larger than the limit (64 KiB by default)."),
    "uri_too_long": (414, "The URL is longer than the limit (8,192 characters by default)."),
    "service_unavailable": (
        503,
        "The database cannot be reached right now; retry after `Retry-After` seconds.",
    ),
    "invalid_window": (
        400,
        "The time window is not whole UTC hours, is shorter than an hour, starts in the past, "
        "is longer than the maximum or reaches beyond the booking horizon.",
    ),
    "unknown_gpu_model": (400, "No GPU model has this slug (see /api/v1/gpu-models/)."),
    "invalid_gpu_count": (400, "The matching pools sell whole nodes: ask for a multiple."),
    "invalid_cursor": (
        400,
        "`after` is not the id of one of the tenant's events (unknown, another tenant's, or "
        "deleted after the retention period): list again without it.",
    ),
    "url_not_allowed": (
        400,
        "The webhook URL is not https, carries credentials, or resolves to an address that is "
        "not public (loopback, private, link-local, reserved).",
    ),
    "unknown_event_type": (400, "An event type is not one we send; `valid_types` lists them."),
    "endpoint_disabled_by_operator": (
        409,
        "An operator disabled this webhook endpoint; only an operator can enable it again.",
    ),
    "not_authenticated": (401, "No credentials: send `Authorization: Bearer <API key>`."),
    "invalid_api_key": (401, "The API key is unknown, malformed, revoked or expired."),
    "credit_limit_exceeded": (402, "The booking would take the tenant beyond its credit limit."),
    "tenant_suspended": (403, "The tenant is suspended."),
    "permission_denied": (403, "The caller may not do this."),
    "tenant_required": (403, "This endpoint needs a tenant API key (not an operator session)."),
    "insufficient_scope": (
        403,
        "The API key lacks the scope this request needs (`read` for reading, `book` for quotes "
        "and reservation changes, `admin` for API keys, webhook endpoints and tenant "
        "settings); `required_scope` names it.",
    ),
    "quota_exceeded": (403, "The booking exceeds a tenant quota (GPUs at once, hours)."),
    "not_found": (404, "No such object for this tenant (or a page past the last one)."),
    "no_matching_pool": (404, "No active pool matches the GPU model and location filters."),
    "insufficient_capacity": (409, "No pool has enough free GPUs for the whole window."),
    "invalid_state": (409, "The reservation cannot do that in its current status."),
    "last_admin_key": (
        409,
        "This is the tenant's last active API key with the `admin` scope: create another "
        "before revoking it.",
    ),
    "idempotency_key_in_use": (
        409,
        "The first request with this Idempotency-Key is still being processed; retry after "
        "`Retry-After` seconds to get its outcome.",
    ),
    "quote_expired": (410, "The quote's hold has lapsed; request a new quote."),
    "idempotency_key_reused": (422, "This Idempotency-Key was used with a different request."),
    "rate_limited": (
        429,
        "Too many requests for this API key (or address) in the current window; retry after "
        "`Retry-After` seconds. `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` "
        "headers describe the budget.",
    ),
}

AUTH_ERRORS = ("not_authenticated", "invalid_api_key", "tenant_suspended", "insufficient_scope")
TENANT_AUTH_ERRORS = (*AUTH_ERRORS, "tenant_required")


class ErrorSerializer(serializers.Serializer):
    """Every error response. Some codes add keys, listed below; clients switch on ``code``."""

    code = serializers.CharField(help_text="Stable, machine-readable error code.")
    detail = serializers.CharField(help_text="Human-readable explanation.")
    fields = serializers.DictField(
        child=serializers.ListField(child=serializers.DictField()),
        help_text="Input field name -> list of {code, message}; empty unless a field is at fault.",
    )
    available_gpus = serializers.IntegerField(
        required=False, help_text="insufficient_capacity: the most GPUs any pool could take."
    )
    quota = serializers.CharField(
        required=False, help_text="quota_exceeded: max_gpus or max_reservation_hours."
    )
    limit = serializers.IntegerField(required=False, help_text="quota_exceeded: the quota.")
    in_use = serializers.IntegerField(
        required=False, help_text="quota_exceeded (max_gpus): GPUs already held in the window."
    )
    available_credit = serializers.DecimalField(
        max_digits=14,
        decimal_places=2,
        required=False,
        help_text="credit_limit_exceeded: credit left.",
    )
    amount = serializers.DecimalField(
        max_digits=14,
        decimal_places=2,
        required=False,
        help_text="credit_limit_exceeded: what the booking costs.",
    )
    expired_at = serializers.DateTimeField(
        required=False, help_text="quote_expired: when the hold lapsed."
    )
    status = serializers.CharField(
        required=False, help_text="invalid_state: the reservation's current status."
    )
    pool_status = serializers.CharField(
        required=False, help_text="invalid_state: the pool no longer sells hours (extend)."
    )
    required_scope = serializers.CharField(
        required=False, help_text="insufficient_scope: the scope the request needs."
    )
    valid_types = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="unknown_event_type: every event type there is.",
    )


def error_responses(*codes: str) -> dict[int, OpenApiResponse]:
    """``{status: OpenApiResponse(ErrorSerializer)}`` for the given error codes, one example
    body per code."""
    by_status: dict[int, list[str]] = defaultdict(list)
    for code in codes:
        status, _ = ERROR_CODES[code]
        if code not in by_status[status]:
            by_status[status].append(code)
    responses = {}
    for status, status_codes in sorted(by_status.items()):
        responses[status] = OpenApiResponse(
            response=ErrorSerializer,
            description="; ".join(f"`{code}`: {ERROR_CODES[code][1]}" for code in status_codes),
            examples=[
                OpenApiExample(
                    code,
                    value={"code": code, "detail": ERROR_CODES[code][1], "fields": {}},
                    response_only=True,
                    status_codes=[str(status)],
                )
                for code in status_codes
            ],
        )
    return responses


def _edge_response(code: str, headers: dict[str, str]) -> dict:
    _, description = ERROR_CODES[code]
    return {
        "description": f"`{code}`: {description}",
        "headers": {
            name: {"schema": {"type": "integer"}, "description": text}
            for name, text in headers.items()
        },
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/Error"},
                "examples": {code: {"value": {"code": code, "detail": description, "fields": {}}}},
            }
        },
    }


# OpenAPI links for stateful clients (and tests): what a response's id lets you do next.
_ID = "$response.body#/id"
LINKS: dict[str, dict[str, dict]] = {
    "quote_create": {
        "ConfirmQuote": {"operationId": "reservation_create", "requestBody": {"quote": _ID}},
    },
    "reservation_create": {
        name: {"operationId": target, "parameters": {"reservation_id": _ID}}
        for name, target in (
            ("GetReservation", "reservation_retrieve"),
            ("ExtendReservation", "reservation_extend"),
            ("CancelReservation", "reservation_cancel"),
        )
    },
    "webhook_endpoint_create": {
        name: {"operationId": target, "parameters": {"endpoint_id": _ID}}
        for name, target in (
            ("GetEndpoint", "webhook_endpoint_retrieve"),
            ("UpdateEndpoint", "webhook_endpoint_update"),
            ("RotateSecret", "webhook_endpoint_rotate_secret"),
            ("ListDeliveries", "webhook_delivery_list"),
            ("DeleteEndpoint", "webhook_endpoint_delete"),
        )
    },
    "invoices_list": {
        "GetInvoice": {
            "operationId": "invoices_retrieve",
            "parameters": {"id": "$response.body#/results/0/id"},
        },
    },
    "api_key_create": {
        "RevokeKey": {"operationId": "api_key_revoke", "parameters": {"key_id": _ID}},
    },
}


def _errors_response(*codes: str) -> dict:
    description = "; ".join(f"`{code}`: {ERROR_CODES[code][1]}" for code in codes)
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/Error"},
                "examples": {
                    code: {"value": {"code": code, "detail": ERROR_CODES[code][1], "fields": {}}}
                    for code in codes
                },
            }
        },
    }


def _no_empty_values(parameter: dict) -> None:
    """Query values may not be empty (core/api/limits.py): ``minLength: 1`` on strings."""
    schema = parameter.get("schema", {})
    target = schema.get("items", {}) if schema.get("type") == "array" else schema
    if target.get("type") == "string":
        target.setdefault("minLength", 1)


def document_api_edges(result: dict, generator, request, public) -> dict:
    """What every API operation may answer besides its own responses, added by a
    drf-spectacular post-processing hook wherever an operation does not document it itself:
    429 (its rate-limit budget is spent) and 503 (the database cannot be reached) with their
    headers; 401/403 (credentials); 414 (URL too long); 400 for bad query values; 413/415 for
    bodies; 404 for path ids and for pages past the last. Also the OpenAPI links (``LINKS``)
    and ``minLength: 1`` on query strings (empty values are refused)."""
    retry = {"Retry-After": "Seconds to wait before retrying."}
    rate = {
        **retry,
        "RateLimit-Limit": "The budget of the window.",
        "RateLimit-Remaining": "What is left of it.",
        "RateLimit-Reset": "Seconds until the window resets.",
    }
    for path, operations in result.get("paths", {}).items():
        if not path.startswith("/api/v1/"):
            continue
        for operation in operations.values():
            parameters = operation.get("parameters", [])
            query = [p for p in parameters if p.get("in") == "query"]
            for parameter in query:
                _no_empty_values(parameter)
            responses = operation.setdefault("responses", {})
            if query or "requestBody" in operation:
                responses.setdefault("400", _errors_response("validation_error", "parse_error"))
            responses.setdefault("401", _errors_response("not_authenticated", "invalid_api_key"))
            responses.setdefault("403", _errors_response("permission_denied", "insufficient_scope"))
            if any(p.get("in") == "path" for p in parameters) or any(
                p["name"] == "page" for p in query
            ):
                responses.setdefault("404", _errors_response("not_found"))
            if "requestBody" in operation:
                responses.setdefault("413", _errors_response("request_too_large"))
                responses.setdefault("415", _errors_response("unsupported_media_type"))
            responses.setdefault("414", _errors_response("uri_too_long"))
            responses.setdefault("429", _edge_response("rate_limited", rate))
            responses.setdefault("503", _edge_response("service_unavailable", retry))
            links = LINKS.get(operation.get("operationId", ""))
            if links:
                success = next(code for code in ("201", "200") if code in responses)
                responses[success]["links"] = links
    return result
