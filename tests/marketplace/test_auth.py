"""API keys: who gets in, who gets a 401 or a 403, and what the schema promises."""

from datetime import timedelta

import pytest
import time_machine
from django.test import Client
from rest_framework.test import APIClient

from marketplace.models import ApiKey, Tenant
from marketplace.services.tenants import api_key_operator_revoke
from tests.marketplace.api_helpers import tenant_client
from tests.marketplace.conftest import NOW

pytestmark = pytest.mark.django_db

TENANT_ENDPOINTS = [
    ("get", "/api/v1/tenant/"),
    ("get", "/api/v1/reservations/"),
    ("post", "/api/v1/reservations/"),
    ("post", "/api/v1/quotes/"),
    (
        "get",
        "/api/v1/availability/?gpu_model=h100-sxm-80gb&gpu_count=8"
        "&start=2026-12-07T09:00:00Z&end=2026-12-07T13:00:00Z",
    ),
    ("get", "/api/v1/availability/earliest/?gpu_model=h100-sxm-80gb&gpu_count=8&duration_hours=4"),
    ("get", "/api/v1/reservations/7b0c8c44-3a4f-4b7e-9d55-0d9c1a3c2f10/"),
    ("post", "/api/v1/reservations/7b0c8c44-3a4f-4b7e-9d55-0d9c1a3c2f10/cancel/"),
    ("post", "/api/v1/reservations/7b0c8c44-3a4f-4b7e-9d55-0d9c1a3c2f10/extend/"),
]


@pytest.fixture
def api(frozen_now, tenant):
    return tenant_client(tenant)


def call(client, method: str, path: str):
    return (
        getattr(client, method)(path, {}, format="json") if method == "post" else client.get(path)
    )


@pytest.mark.parametrize(("method", "path"), TENANT_ENDPOINTS)
def test_no_credentials_is_a_401_with_a_bearer_challenge(db, method, path):
    response = call(APIClient(), method, path)
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'


@pytest.mark.parametrize(
    "header",
    [
        "Bearer gpum_000000000000_not-a-key",
        "Bearer ",
        "Bearer two parts",
        "bearer gpum_000000000000_not-a-key",
        "Bearer " + "x" * 5000,
        "Bearer ключ",
    ],
)
def test_an_unknown_or_malformed_key_is_a_401(frozen_now, tenant, header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/v1/tenant/")
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_api_key"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'


def test_an_unknown_key_says_invalid_api_key(frozen_now, tenant):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer gpum_000000000000_not-a-key")
    response = client.get("/api/v1/tenant/")
    assert response.status_code == 401
    assert response.json() == {
        "code": "invalid_api_key",
        "detail": "Invalid API key.",
        "fields": {},
    }


def test_a_valid_key_authenticates_and_records_its_use(api, tenant):
    # when a tenant calls with its key
    response = api.get("/api/v1/tenant/")
    # then it is recognised, and the key's last use is recorded
    assert response.status_code == 200
    assert response.json()["slug"] == tenant.slug
    assert ApiKey.objects.get(pk=api.api_key.pk).last_used_at == NOW


def test_last_use_is_written_at_most_once_a_minute(api):
    api.get("/api/v1/tenant/")
    with time_machine.travel(NOW + timedelta(seconds=30), tick=False):
        api.get("/api/v1/tenant/")
    assert ApiKey.objects.get(pk=api.api_key.pk).last_used_at == NOW
    with time_machine.travel(NOW + timedelta(seconds=61), tick=False):
        api.get("/api/v1/tenant/")
    assert ApiKey.objects.get(pk=api.api_key.pk).last_used_at == NOW + timedelta(seconds=61)


def test_a_revoked_key_is_a_401(api):
    # given the key was revoked
    api_key_operator_revoke(key=api.api_key)
    # when it is used
    response = api.get("/api/v1/tenant/")
    # then it no longer authenticates
    assert response.status_code == 401
    assert response.json() == {
        "code": "invalid_api_key",
        "detail": "This API key has been revoked.",
        "fields": {},
    }


def test_revoking_one_key_leaves_the_tenants_other_keys_working(frozen_now, tenant):
    first, second = tenant_client(tenant), tenant_client(tenant)
    api_key_operator_revoke(key=first.api_key)
    assert first.get("/api/v1/tenant/").status_code == 401
    assert second.get("/api/v1/tenant/").status_code == 200


@pytest.mark.parametrize(("method", "path"), [*TENANT_ENDPOINTS, ("get", "/api/v1/pools/")])
def test_a_suspended_tenant_is_a_403_everywhere(api, tenant, method, path):
    # given the tenant is suspended
    Tenant.objects.filter(pk=tenant.pk).update(status=Tenant.Status.SUSPENDED)
    # when it calls any endpoint, the catalogue included
    response = call(api, method, path)
    # then it is refused as suspended
    assert response.status_code == 403
    assert response.json() == {
        "code": "tenant_suspended",
        "detail": "The tenant is suspended.",
        "fields": {},
    }


@pytest.mark.parametrize(("method", "path"), TENANT_ENDPOINTS)
def test_an_operator_session_is_refused_on_tenant_endpoints(operator_client, method, path):
    response = call(operator_client, method, path)
    assert response.status_code == 403
    assert response.json()["code"] == "tenant_required"


def test_an_operator_logged_in_to_the_admin_is_refused_with_tenant_required(operator):
    # given an operator's real browser session
    client = Client()
    client.force_login(operator)
    # when the session calls a tenant endpoint
    response = client.get("/api/v1/reservations/")
    # then it is told the endpoint needs a tenant key
    assert response.status_code == 403
    assert response.json()["code"] == "tenant_required"


@pytest.mark.parametrize("path", ["/api/v1/pools/", "/api/v1/providers/", "/api/v1/gpu-models/"])
def test_the_catalogue_is_readable_with_a_tenant_key_and_an_operator_session(
    api, operator_client, path
):
    assert api.get(path).status_code == 200
    assert operator_client.get(path).status_code == 200


def test_the_schema_documents_bearer_auth_and_every_booking_endpoint(db):
    # when the OpenAPI schema is fetched
    response = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    # then it describes bearer keys and the booking API with its error codes
    assert response.status_code == 200
    schema = response.json()
    assert schema["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    operations = {
        (method, path): operation
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
    }
    assert {op["operationId"] for (_, path), op in operations.items() if "/pools" not in path} >= {
        "availability_search",
        "availability_earliest",
        "quote_create",
        "reservation_create",
        "reservation_list",
        "reservation_retrieve",
        "reservation_cancel",
        "reservation_extend",
        "tenant_retrieve",
    }
    create = operations[("post", "/api/v1/reservations/")]
    assert create["security"] == [{"bearerAuth": []}]
    assert set(create["responses"]) == {
        "201",
        "400",
        "401",
        "402",
        "403",
        "404",
        "409",
        "410",
        "413",
        "414",
        "415",
        "422",
        "429",
        "503",
    }
    assert "idempotency_key_reused" in create["responses"]["422"]["description"]
    assert "Idempotency-Key" in [p["name"] for p in create["parameters"]]
