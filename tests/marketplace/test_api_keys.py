"""Tenant API keys: scopes, expiry, and managing keys through /api/v1/api-keys/."""

from datetime import timedelta

import pytest
import time_machine
from django.test import Client

from marketplace.errors import LastAdminKey
from marketplace.models import ApiKey, Reservation
from marketplace.services.tenants import api_key_create, api_key_revoke
from tests.db_helpers import run_concurrently
from tests.factories import TenantFactory
from tests.marketplace.api_helpers import tenant_client
from tests.marketplace.conftest import NOW

pytestmark = pytest.mark.django_db

BOOKING = {
    "gpu_model": "h100-sxm-80gb",
    "gpu_count": 8,
    "start": "2026-12-07T09:00:00Z",
    "end": "2026-12-07T13:00:00Z",
}
KEY_FIELDS = {
    "id",
    "name",
    "prefix",
    "scopes",
    "created_at",
    "last_used_at",
    "expires_at",
    "revoked_at",
}


def refused_for_scope(response, scope: str) -> None:
    assert response.status_code == 403, response.content
    body = response.json()
    assert (body["code"], body["required_scope"]) == ("insufficient_scope", scope)
    assert f"`{scope}`" in body["detail"]


@pytest.fixture
def admin_api(frozen_now, tenant):
    return tenant_client(tenant, scopes=["admin"])


# --- scopes ------------------------------------------------------------------------------------


def test_a_read_key_reads_but_cannot_book(frozen_now, tenant, pool):
    api = tenant_client(tenant, scopes=["read"])
    assert api.get("/api/v1/tenant/").status_code == 200
    assert api.get("/api/v1/reservations/").status_code == 200
    assert api.get("/api/v1/pools/").status_code == 200
    refused_for_scope(api.post("/api/v1/reservations/", BOOKING, format="json"), "book")
    refused_for_scope(api.post("/api/v1/quotes/", BOOKING, format="json"), "book")
    assert not Reservation.objects.exists()


def test_a_book_key_books_but_cannot_read(frozen_now, tenant, pool):
    api = tenant_client(tenant, scopes=["book"])
    assert api.post("/api/v1/reservations/", BOOKING, format="json").status_code == 201
    refused_for_scope(api.get("/api/v1/reservations/"), "read")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/api-keys/"),
        ("post", "/api/v1/api-keys/"),
        ("delete", "/api/v1/api-keys/1/"),
        ("post", "/api/v1/webhook-endpoints/"),
        ("patch", "/api/v1/webhook-endpoints/1/"),
        ("delete", "/api/v1/webhook-endpoints/1/"),
        ("post", "/api/v1/webhook-endpoints/1/rotate-secret/"),
        ("patch", "/api/v1/tenant/"),
    ],
)
def test_managing_keys_webhooks_and_settings_needs_admin(frozen_now, tenant, method, path):
    api = tenant_client(tenant, scopes=["read", "book"])
    response = getattr(api, method)(path, {}, format="json")
    refused_for_scope(response, "admin")


def test_a_read_key_lists_webhook_endpoints(frozen_now, tenant):
    api = tenant_client(tenant, scopes=["read"])
    assert api.get("/api/v1/webhook-endpoints/").status_code == 200


def test_unknown_and_missing_scopes_are_validation_errors(admin_api):
    for scopes, at_fault, code in (
        (["read", "delete"], "scopes.1", "invalid_choice"),
        ([], "scopes", "min_length"),
        ("read", "scopes", "invalid_type"),
        (["read", 7], "scopes.1", "invalid_type"),
    ):
        response = admin_api.post(
            "/api/v1/api-keys/", {"name": "x", "scopes": scopes}, format="json"
        )
        assert response.status_code == 400, scopes
        body = response.json()
        assert body["code"] == "validation_error"
        assert [(field, errors[0]["code"]) for field, errors in body["fields"].items()] == [
            (at_fault, code)
        ]
    assert ApiKey.objects.count() == 1


def test_an_expiry_in_the_past_is_a_validation_error(admin_api):
    response = admin_api.post(
        "/api/v1/api-keys/",
        {"name": "x", "scopes": ["read"], "expires_at": "2026-11-30T00:00:00Z"},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["fields"]["expires_at"][0]["code"] == "in_past"


# --- create, list, revoke ----------------------------------------------------------------------


def test_an_admin_key_creates_a_key_whose_secret_is_shown_once(admin_api, tenant):
    # when an admin key creates a read key expiring in a day
    response = admin_api.post(
        "/api/v1/api-keys/",
        {"name": "ci", "scopes": ["read", "read"], "expires_at": "2026-12-02T08:30:00Z"},
        format="json",
    )
    # then the secret is in the answer, and works with the scopes given
    assert response.status_code == 201
    created = response.json()
    assert set(created) == KEY_FIELDS | {"key"}
    assert created["scopes"] == ["read"]
    assert created["expires_at"] == "2026-12-02T08:30:00Z"
    assert created["key"].startswith(f"gpum_{created['prefix']}_")
    key = ApiKey.objects.get(pk=created["id"])
    assert (key.tenant_id, key.name, key.scopes) == (tenant.pk, "ci", ["read"])
    assert created["key"] not in (key.digest, key.prefix)
    # and the list never shows a secret or a digest
    listed = admin_api.get("/api/v1/api-keys/").json()
    assert listed["count"] == 2
    for item in listed["results"]:
        assert set(item) == KEY_FIELDS
    assert created["key"] not in str(listed)
    assert key.digest not in str(listed)
    assert listed["results"][0]["id"] == created["id"]  # newest first


def test_the_list_shows_only_the_callers_keys(admin_api, tenant):
    tenant_client(TenantFactory())
    listed = admin_api.get("/api/v1/api-keys/").json()
    assert [item["id"] for item in listed["results"]] == [admin_api.api_key.pk]


def test_a_revoked_key_is_refused_on_its_very_next_request(admin_api, tenant):
    other = tenant_client(tenant, scopes=["read"])
    assert other.get("/api/v1/tenant/").status_code == 200
    response = admin_api.delete(f"/api/v1/api-keys/{other.api_key.pk}/")
    assert response.status_code == 204
    refused = other.get("/api/v1/tenant/")
    assert refused.status_code == 401
    assert refused.json()["code"] == "invalid_api_key"
    listed = admin_api.get("/api/v1/api-keys/").json()["results"]
    assert {item["id"]: item["revoked_at"] for item in listed}[other.api_key.pk] is not None
    # revoking it again changes nothing
    assert admin_api.delete(f"/api/v1/api-keys/{other.api_key.pk}/").status_code == 204


def test_an_expired_key_is_a_401(frozen_now, tenant):
    api = tenant_client(tenant, expires_at=NOW + timedelta(hours=1))
    assert api.get("/api/v1/tenant/").status_code == 200
    with time_machine.travel(NOW + timedelta(hours=1), tick=False):
        response = api.get("/api/v1/tenant/")
    assert response.status_code == 401
    assert response.json() == {
        "code": "invalid_api_key",
        "detail": "This API key has expired.",
        "fields": {},
    }


def test_the_last_admin_key_cannot_be_revoked_and_keeps_working(admin_api, tenant):
    tenant_client(tenant, scopes=["read", "book"])  # not an admin key
    expired, _ = api_key_create(
        tenant=tenant, scopes=["admin"], expires_at=NOW + timedelta(minutes=1)
    )
    ApiKey.objects.filter(pk=expired.pk).update(expires_at=NOW)  # an expired admin key
    response = admin_api.delete(f"/api/v1/api-keys/{admin_api.api_key.pk}/")
    assert response.status_code == 409
    assert response.json()["code"] == "last_admin_key"
    assert ApiKey.objects.get(pk=admin_api.api_key.pk).revoked_at is None
    assert admin_api.get("/api/v1/api-keys/").status_code == 200


def test_an_admin_key_can_be_revoked_while_another_remains(admin_api, tenant):
    second = tenant_client(tenant, scopes=["admin"])
    assert second.delete(f"/api/v1/api-keys/{admin_api.api_key.pk}/").status_code == 204
    assert admin_api.get("/api/v1/api-keys/").status_code == 401
    assert second.delete(f"/api/v1/api-keys/{second.api_key.pk}/").status_code == 409


@pytest.mark.parametrize("key_id", ["other", "999999", "abc"])
def test_another_tenants_key_or_an_unknown_id_is_a_404(admin_api, key_id):
    other = tenant_client(TenantFactory())
    path_id = other.api_key.pk if key_id == "other" else key_id
    response = admin_api.delete(f"/api/v1/api-keys/{path_id}/")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert ApiKey.objects.get(pk=other.api_key.pk).revoked_at is None


def test_the_schema_documents_the_key_endpoints_and_codes(db):
    schema = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    keys, key = schema["paths"]["/api/v1/api-keys/"], schema["paths"]["/api/v1/api-keys/{key_id}/"]
    assert set(keys) >= {"get", "post"}
    assert "delete" in key
    assert "key" in schema["components"]["schemas"]["ApiKeyCreated"]["properties"]
    assert "403" in keys["post"]["responses"]
    assert "409" in key["delete"]["responses"]
    assert "insufficient_scope" in str(keys["post"]["responses"]["403"])
    assert "last_admin_key" in str(key["delete"]["responses"]["409"])


# --- two revokes at once -----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_revokes_of_the_last_two_admin_keys_leave_one():
    tenant = TenantFactory()
    first, _ = api_key_create(tenant=tenant, scopes=["admin"])
    second, _ = api_key_create(tenant=tenant, scopes=["admin"])

    def revoke(key_id: int) -> str:
        try:
            api_key_revoke(tenant=tenant, key_id=key_id)
        except LastAdminKey as exc:
            return exc.code
        return "revoked"

    outcomes = run_concurrently(lambda: revoke(first.pk), lambda: revoke(second.pk))
    assert sorted(outcomes) == ["last_admin_key", "revoked"]
    assert ApiKey.objects.filter(tenant=tenant, revoked_at__isnull=True).count() == 1
