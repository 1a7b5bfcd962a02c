"""Odd input under /api/, sent over HTTP to a live gunicorn on production settings: each gets
a 4xx JSON error with a machine-readable ``code`` (never a 5xx, never an HTML page), and
writes nothing."""

import json

import httpx
import pytest

from marketplace.models import Reservation
from marketplace.services.tenants import api_key_create
from tests.factories import CapacityPoolFactory, TenantFactory
from tests.live_server import gunicorn

pytestmark = pytest.mark.django_db(transaction=True)

BOOKING = {
    "gpu_model": "h100-sxm-80gb",
    "gpu_count": 8,
    "start": "2027-03-01T09:00:00Z",
    "end": "2027-03-01T13:00:00Z",
}
DEEP = "[" * 30_000 + "]" * 30_000  # 60 KB: under the body limit


def _raw(body: bytes, content_type: str = "application/json") -> dict:
    return {"content": body, "headers": {"Content-Type": content_type}}


# (what, method, path, request keyword arguments, status, code)
ODD_INPUTS = [
    (
        "an offset past ±14 h in a query",
        "GET",
        "/api/v1/reservations/?end_after=2000-01-01T02:00:02.0782-17:15",
        {},
        400,
        "validation_error",
    ),
    (
        "an offset past ±14 h in a body",
        "POST",
        "/api/v1/quotes/",
        {"json": {**BOOKING, "start": "2027-03-01T09:00:00-23:59"}},
        400,
        "validation_error",
    ),
    ("an empty query value", "GET", "/api/v1/usage/?to=", {}, 400, "validation_error"),
    ("page 0", "GET", "/api/v1/reservations/?page=0", {}, 400, "validation_error"),
    ("a page past the last", "GET", "/api/v1/reservations/?page=9", {}, 404, "not_found"),
    ("page_size null", "GET", "/api/v1/pools/?page_size=null", {}, 400, "validation_error"),
    (
        "a huge number in a query",
        "GET",
        "/api/v1/availability/?gpu_model=h100-sxm-80gb&gpu_count=1"
        + "0" * 400
        + "&start=2027-03-01T09:00:00Z&end=2027-03-01T10:00:00Z",
        {},
        400,
        "validation_error",
    ),
    (
        "a huge number in a body",
        "POST",
        "/api/v1/quotes/",
        _raw(json.dumps(BOOKING).replace('"gpu_count": 8', '"gpu_count": 1' + "0" * 400).encode()),
        400,
        "validation_error",
    ),
    (
        "a float exponent beyond float",
        "POST",
        "/api/v1/quotes/",
        _raw(b'{"gpu_model": "h100-sxm-80gb", "gpu_count": 1e400}'),
        400,
        "validation_error",
    ),
    (
        "a null byte in a query",
        "GET",
        "/api/v1/reservations/?pool=a%00b",
        {},
        400,
        "validation_error",
    ),
    (
        "a null byte in a body",
        "POST",
        "/api/v1/quotes/",
        {"json": {**BOOKING, "gpu_model": "h100\u0000"}},
        400,
        "validation_error",
    ),
    (
        "a 20,000-character URL",
        "GET",
        "/api/v1/pools/?provider=" + "a" * 20_000,
        {},
        414,
        "uri_too_long",
    ),
    (
        "a 1 MB body",
        "POST",
        "/api/v1/quotes/",
        _raw(b" " * 1_000_000 + b"{}"),
        413,
        "request_too_large",
    ),
    (
        "a text/plain body",
        "POST",
        "/api/v1/quotes/",
        _raw(json.dumps(BOOKING).encode(), "text/plain"),
        415,
        "unsupported_media_type",
    ),
    (
        "a form body",
        "POST",
        "/api/v1/quotes/",
        _raw(b"gpu_model=h100-sxm-80gb&gpu_count=8", "application/x-www-form-urlencoded"),
        415,
        "unsupported_media_type",
    ),
    (
        "JSON nested 30,000 deep",
        "POST",
        "/api/v1/quotes/",
        _raw(DEEP.encode()),
        400,
        "parse_error",
    ),
    ("malformed JSON", "POST", "/api/v1/quotes/", _raw(b'{"gpu_model": '), 400, "parse_error"),
    (
        "a body that is not UTF-8",
        "POST",
        "/api/v1/quotes/",
        _raw(b'{"gpu_model": "\xff"}'),
        400,
        "parse_error",
    ),
    ("a JSON list for a body", "POST", "/api/v1/quotes/", _raw(b"[1, 2]"), 400, "validation_error"),
    (
        "a string for an integer",
        "POST",
        "/api/v1/quotes/",
        {"json": {**BOOKING, "gpu_count": "8"}},
        400,
        "validation_error",
    ),
    (
        "a number for a string",
        "POST",
        "/api/v1/reservations/00000000-0000-0000-0000-000000000000/cancel/",
        {"json": {"reason": 0}},
        400,
        "validation_error",
    ),
    (
        "a number for an amount",
        "PATCH",
        "/api/v1/tenant/",
        {"json": {"low_balance_threshold": 0}},
        400,
        "validation_error",
    ),
    (
        "null for an event type",
        "POST",
        "/api/v1/webhook-endpoints/",
        {"json": {"url": "https://example.com/h", "event_types": [None]}},
        400,
        "validation_error",
    ),
    (
        "2,000 query parameters",
        "GET",
        "/api/v1/pools/?" + "&".join(["p=1"] * 2000),
        {},
        400,
        "validation_error",
    ),
    ("an unknown API path", "GET", "/api/v1/no-such-thing/", {}, 404, "not_found"),
    ("a method the path does not take", "DELETE", "/api/v1/pools/", {}, 405, "method_not_allowed"),
    (
        "an HTML-only Accept header",
        "GET",
        "/api/v1/pools/",
        {"headers": {"Accept": "text/html"}},
        406,
        "not_acceptable",
    ),
    (
        "a Host not allowed",
        "GET",
        "/api/v1/pools/",
        {"headers": {"Host": "evil.example"}},
        400,
        "bad_request",
    ),
]


@pytest.fixture
def api():
    tenant = TenantFactory()
    CapacityPoolFactory()
    _, raw_key = api_key_create(tenant=tenant)
    with gunicorn() as base:
        yield httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {raw_key}"}, timeout=30
        )


def test_odd_inputs_get_4xx_json_with_a_code_and_write_nothing(api):
    wrong = []
    for what, method, path, kwargs, status, code in ODD_INPUTS:
        response = api.request(method, path, **kwargs)
        content_type = response.headers.get("content-type", "")
        body = response.json() if content_type.startswith("application/json") else None
        got = (response.status_code, body and body.get("code"))
        if got != (status, code):
            wrong.append((what, got, content_type, response.text[:200]))
    assert wrong == [], "\n".join(map(repr, wrong))
    assert Reservation.objects.count() == 0
