"""The request limits of /api/ (core/api/limits.py) follow their settings, apply to every
operation alike, and leave the rest of the site (the admin) alone."""

import pytest
from django.test import Client

from marketplace.models import Tenant
from tests.factories import TenantFactory
from tests.marketplace.api_helpers import tenant_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def api():
    return tenant_client(TenantFactory())


def test_the_body_limit_is_a_setting(api, settings):
    settings.API_MAX_BODY_BYTES = 100
    body = {"name": "x" * 90, "scopes": ["read"]}  # 117 bytes of JSON
    small = api.post("/api/v1/api-keys/", {"name": "ci", "scopes": ["read"]}, format="json")
    large = api.post("/api/v1/api-keys/", body, format="json")
    assert small.status_code == 201
    assert (large.status_code, large.json()["code"]) == (413, "request_too_large")


def test_the_url_limit_is_a_setting_and_counts_path_and_query(api, settings):
    settings.API_MAX_URL_LENGTH = 40
    path = "/api/v1/pools/?provider="  # 24 characters
    assert api.get(path + "a" * 16).status_code == 200  # 40 in all
    too_long = api.get(path + "a" * 17)
    assert (too_long.status_code, too_long.json()["code"]) == (414, "uri_too_long")


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/pools/?provider=",
        "/api/v1/events/?type=",
        "/api/v1/reservations/?status=confirmed&status=",
        "/api/v1/invoices/?overdue",
        "/api/v1/availability/?gpu_model=&gpu_count=8",
    ],
)
def test_an_empty_query_value_is_a_400_naming_the_parameter_on_every_operation(api, path):
    response = api.get(path)
    assert response.status_code == 400
    body = response.json()
    empty = path.rsplit("&", 1)[-1].split("?")[-1].split("=")[0]
    if path.startswith("/api/v1/availability/"):
        empty = "gpu_model"
    assert body["code"] == "validation_error"
    assert body["fields"] == {
        empty: [
            {"code": "blank", "message": "Leave the parameter out instead of sending it empty."}
        ]
    }


def test_a_boolean_filter_takes_only_true_or_false(api):
    for value, status in (("true", 200), ("false", 200), ("null", 400), ("1", 400), ("yes", 400)):
        assert api.get(f"/api/v1/invoices/?overdue={value}").status_code == status, value


def test_json_types_are_kept_in_bodies_but_query_strings_are_text(api):
    # given a tenant's settings sent with the wrong JSON types
    wrong = api.patch(
        "/api/v1/tenant/",
        {"ending_soon_lead_minutes": "30", "low_balance_threshold": 10},
        format="json",
    )
    # then both are named, and nothing changed
    assert wrong.status_code == 400
    assert {name: errors[0]["code"] for name, errors in wrong.json()["fields"].items()} == {
        "ending_soon_lead_minutes": "invalid_type",
        "low_balance_threshold": "invalid_type",
    }
    tenant = Tenant.objects.get()
    assert tenant.low_balance_threshold is None
    # and the right types are taken
    right = api.patch(
        "/api/v1/tenant/",
        {"ending_soon_lead_minutes": 30, "low_balance_threshold": "10.00"},
        format="json",
    )
    assert right.status_code == 200
    assert right.json()["low_balance_threshold"] == "10.00"
    # while a query string's integers are text, as always
    search = api.get("/api/v1/events/?limit=5")
    assert search.status_code == 200


def test_the_admin_is_not_held_to_the_api_rules(operator):
    client = Client()
    client.force_login(operator)
    assert client.get("/admin/marketplace/tenant/?q=").status_code == 200
