"""Rate limits (core/api/throttling.py) against the real Redis: exact under concurrency,
separate budgets per kind and per key, per address when anonymous, a window that resets, and
requests allowed when Redis is down."""

import logging
import time
import uuid
from collections import Counter

import pytest
from django.urls import path
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.test import APIClient
from rest_framework.views import APIView

from tests.db_helpers import run_concurrently
from tests.factories import TenantFactory
from tests.marketplace.api_helpers import tenant_client

pytestmark = pytest.mark.django_db(transaction=True)

SEARCH_URL = "/api/v1/gpu-models/"
WRITE_URL = "/api/v1/quotes/"  # an empty body is a 400: the request got past the limiter


class PublicPing(APIView):
    """An endpoint open to anonymous callers (the API has none), to test that budget."""

    permission_classes = [AllowAny]

    def get(self, request):
        return Response({"ok": True})


urlpatterns = [path("ping/", PublicPing.as_view())]


@pytest.fixture
def limits(settings):
    """Small budgets, counted under a key prefix of this test's own."""
    settings.RATE_LIMIT_KEY_PREFIX = f"test-ratelimit:{uuid.uuid4()}"
    settings.RATE_LIMIT_WINDOW_SECONDS = WINDOW
    settings.RATE_LIMIT_SEARCH = 20
    settings.RATE_LIMIT_WRITE = 3
    settings.RATE_LIMIT_ANONYMOUS = 2
    return settings


def key_client(raw_key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return client


WINDOW = 60


def assert_window_reset(value: str, started: float) -> None:
    """Seconds to the reset of a window that opened at the first request after ``started``:
    the window less the time gone since (rounded up), never more than the window."""
    gone = time.monotonic() - started
    assert WINDOW - gone - 1 <= int(value) <= WINDOW, (value, gone)


def assert_rate_limited(response, *, limit: int, started: float) -> None:
    assert response.status_code == 429, response.content
    assert response.json() == {
        "code": "rate_limited",
        "detail": response.json()["detail"],
        "fields": {},
    }
    assert response["Retry-After"] == response["RateLimit-Reset"]
    assert_window_reset(response["Retry-After"], started)
    assert response["RateLimit-Limit"] == str(limit)
    assert response["RateLimit-Remaining"] == "0"


def test_50_concurrent_searches_against_a_budget_of_20_let_exactly_20_through(limits):
    raw_key = tenant_client(TenantFactory()).raw_key

    def search():
        return key_client(raw_key).get(SEARCH_URL)

    started = time.monotonic()
    responses = run_concurrently(*[search] * 50)

    assert Counter(r.status_code for r in responses) == {200: 20, 429: 30}
    for response in responses:
        if response.status_code == 429:
            assert_rate_limited(response, limit=20, started=started)
        else:
            assert response["RateLimit-Limit"] == "20"
    remaining = sorted(int(r["RateLimit-Remaining"]) for r in responses if r.status_code == 200)
    assert remaining == list(range(20))  # each passing request counted exactly once


def test_successful_responses_carry_the_rate_limit_headers(limits):
    client = tenant_client(TenantFactory())

    started = time.monotonic()
    first, second = client.get(SEARCH_URL), client.get(SEARCH_URL)

    assert first.status_code == second.status_code == 200
    assert (first["RateLimit-Limit"], first["RateLimit-Remaining"]) == ("20", "19")
    assert second["RateLimit-Remaining"] == "18"
    assert_window_reset(first["RateLimit-Reset"], started)
    assert "Retry-After" not in first


def test_writes_have_a_budget_of_their_own(limits):
    client = tenant_client(TenantFactory())
    started = time.monotonic()
    for _ in range(20):
        assert client.get(SEARCH_URL).status_code == 200
    assert_rate_limited(client.get(SEARCH_URL), limit=20, started=started)

    writes = [client.post(WRITE_URL, {}) for _ in range(4)]

    assert [r.status_code for r in writes] == [400, 400, 400, 429]
    assert writes[0]["RateLimit-Limit"] == "3"
    assert_rate_limited(writes[3], limit=3, started=started)


def test_two_keys_do_not_share_a_budget(limits):
    tenant = TenantFactory()
    first, second = tenant_client(tenant), tenant_client(tenant)
    started = time.monotonic()
    for _ in range(20):
        first.get(SEARCH_URL)
    assert_rate_limited(first.get(SEARCH_URL), limit=20, started=started)

    response = second.get(SEARCH_URL)

    assert response.status_code == 200
    assert response["RateLimit-Remaining"] == "19"


@pytest.mark.urls(__name__)
def test_anonymous_calls_are_limited_per_client_address(limits):
    client = APIClient()
    here = {"REMOTE_ADDR": "198.51.100.7"}
    started = time.monotonic()
    assert [client.get("/ping/", **here).status_code for _ in range(2)] == [200, 200]
    assert_rate_limited(client.get("/ping/", **here), limit=2, started=started)

    # Another address has its own budget; X-Forwarded-For is not trusted (no proxy set up).
    assert client.get("/ping/", REMOTE_ADDR="198.51.100.8").status_code == 200
    spoofed = client.get("/ping/", REMOTE_ADDR="198.51.100.7", HTTP_X_FORWARDED_FOR="203.0.113.1")
    assert spoofed.status_code == 429


@pytest.mark.urls(__name__)
def test_a_trusted_proxy_makes_the_forwarded_address_count(limits):
    limits.REST_FRAMEWORK = {**limits.REST_FRAMEWORK, "NUM_PROXIES": 1}
    client = APIClient()
    proxy = "10.0.0.2"
    for _ in range(2):
        client.get("/ping/", REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="203.0.113.1")

    response = client.get("/ping/", REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="203.0.113.2")

    assert response.status_code == 200


def test_the_budget_comes_back_when_the_window_ends(limits):
    limits.RATE_LIMIT_WINDOW_SECONDS = 1
    limits.RATE_LIMIT_SEARCH = 2
    client = tenant_client(TenantFactory())
    assert [client.get(SEARCH_URL).status_code for _ in range(3)] == [200, 200, 429]

    time.sleep(1.1)

    response = client.get(SEARCH_URL)
    assert response.status_code == 200
    assert response["RateLimit-Remaining"] == "1"


def test_schema_and_docs_are_not_limited(limits):
    limits.RATE_LIMIT_ANONYMOUS = 1
    client = APIClient()
    for _ in range(3):
        response = client.get("/api/schema/")
        assert response.status_code == 200
        assert "RateLimit-Limit" not in response


def test_requests_pass_when_redis_is_down(limits, caplog):
    limits.RATE_LIMIT_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    limits.RATE_LIMIT_SEARCH = 1
    client = tenant_client(TenantFactory())

    with caplog.at_level(logging.WARNING, logger="core.api.throttling"):
        responses = [client.get(SEARCH_URL) for _ in range(3)]

    assert [r.status_code for r in responses] == [200, 200, 200]
    assert "RateLimit-Limit" not in responses[0]
    assert "Redis unreachable" in caplog.text


def test_every_operation_documents_429_and_503_with_their_headers(client):
    schema = client.get("/api/schema/?format=json").json()
    operations = [
        (url, method, operation)
        for url, methods in schema["paths"].items()
        if url.startswith("/api/v1/")
        for method, operation in methods.items()
    ]
    assert operations
    for url, method, operation in operations:
        responses = operation["responses"]
        assert {"429", "503"} <= set(responses), (method, url)
        assert "Retry-After" in responses["429"]["headers"]
        assert "RateLimit-Remaining" in responses["429"]["headers"]
        assert "Retry-After" in responses["503"]["headers"]
