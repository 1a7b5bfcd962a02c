"""The audit trail: every operator change in the admin and every tenant write through the API
is kept with who made it, when, and the values before and after; the admin shows it."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine
from django.http import HttpResponse
from django.test.html import Element, parse_html

from capacity.models import CapacityPool, PoolHour
from events.models import WebhookEndpoint
from marketplace.models import ApiKey, PoolPrice, Reservation, Tenant
from marketplace.services.tenants import api_key_create
from tests.admin_helpers import text
from tests.capacity.test_admin import pool_form
from tests.factories import CapacityPoolFactory, TenantFactory
from tests.marketplace.api_helpers import tenant_client

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 1, 8, 30, tzinfo=UTC)
BOOKING = {
    "gpu_model": "h100-sxm-80gb",
    "gpu_count": 8,
    "start": "2026-12-07T09:00:00Z",
    "end": "2026-12-07T13:00:00Z",
}


@pytest.fixture
def admin_client(client, operator):
    client.force_login(operator)
    return client


@pytest.fixture
def frozen_now():
    with time_machine.travel(NOW, tick=False):
        yield NOW


def changes(history_row, *, ignore=("updated_at",)) -> dict[str, tuple]:
    """What a historical row changed from the one before it: {field: (old, new)}. (The one
    before by id: with the clock frozen, both rows have the same date.)"""
    pk_name = history_row.instance_type._meta.pk.attname
    previous = (
        type(history_row)
        .objects.filter(
            **{pk_name: getattr(history_row, pk_name)}, history_id__lt=history_row.history_id
        )
        .order_by("-history_id")
        .first()
    )
    delta = history_row.diff_against(previous, excluded_fields=ignore)
    return {change.field: (change.old, change.new) for change in delta.changes}


def history_table(response: HttpResponse) -> list[dict[str, str]]:
    """The admin History page's table of changes, newest first: {column heading: text}."""
    assert response.status_code == 200, response.status_code
    tables = [
        element
        for element in _elements(parse_html(response.content.decode()))
        if element.name == "table" and ("id", "change-history") in element.attributes
    ]
    assert len(tables) == 1
    headings = [text(cell) for cell in _elements(tables[0]) if cell.name == "th"]
    body = next(element for element in _elements(tables[0]) if element.name == "tbody")
    cells = [
        [text(cell) for cell in row.children if isinstance(cell, Element)]
        for row in body.children
        if isinstance(row, Element) and row.name == "tr"
    ]
    return [dict(zip(headings, row, strict=True)) for row in cells]


def _elements(element: Element):
    for child in element.children:
        if isinstance(child, Element):
            yield child
            yield from _elements(child)


# --- the admin ---------------------------------------------------------------------------------


def test_an_operators_pool_edit_is_recorded_with_the_operator_and_the_values_before_and_after(
    admin_client, operator
):
    # given a pool of 4 nodes of 8 GPUs at 3.00 USD
    pool = CapacityPoolFactory(slug="pool-a", gpus_per_node=8, node_count=4)
    # when the operator grows it to 6 nodes, holds 2 GPUs back and raises its price
    form = pool_form(
        pool, node_count=6, reserved_gpus=2, **{"prices-0-price_per_gpu_hour": "3.5000"}
    )
    with time_machine.travel(datetime(2026, 12, 7, 8, 30, tzinfo=UTC), tick=False):
        response = admin_client.post(f"/admin/capacity/capacitypool/{pool.pk}/change/", form)
    assert response.status_code == 302
    # then the pool's history has the change, by the operator, with both values
    change = CapacityPool.history.filter(id=pool.pk).order_by("history_id").last()
    assert change.history_type == "~"
    assert change.history_user == operator
    assert change.history_date == datetime(2026, 12, 7, 8, 30, tzinfo=UTC)
    assert (change.history_api_key_prefix, change.history_tenant_id) == ("", None)
    assert change.history_change_reason == f"POST /admin/capacity/capacitypool/{pool.pk}/change/"
    assert changes(change) == {"node_count": (4, 6), "reserved_gpus": (0, 2)}
    # and so has its list price, changed on the same page (the factory wrote it in bulk,
    # which leaves no history: this is its first row)
    price = PoolPrice.history.get(pool_id=pool.pk)
    assert (price.history_type, price.history_user) == ("~", operator)
    assert price.price_per_gpu_hour == Decimal("3.5000")


def test_a_refused_pool_edit_leaves_no_history(admin_client):
    # given a pool with 24 GPUs booked at 09:00
    pool = CapacityPoolFactory(gpus_per_node=8, node_count=4)
    PoolHour.objects.create(
        pool=pool, hour=datetime(2026, 12, 7, 9, tzinfo=UTC), capacity=32, booked=24
    )
    recorded = CapacityPool.history.filter(id=pool.pk).count()
    # when the operator tries to cut it to 2 nodes
    with time_machine.travel(datetime(2026, 12, 7, 8, 30, tzinfo=UTC), tick=False):
        response = admin_client.post(
            f"/admin/capacity/capacitypool/{pool.pk}/change/", pool_form(pool, node_count=2)
        )
    # then the service refuses, and the history rolled back with the change
    assert response.status_code == 200
    assert CapacityPool.history.filter(id=pool.pk).count() == recorded


def test_suspending_tenants_from_the_admin_records_each_of_them(admin_client, operator):
    # given two active tenants and a suspended one
    first, second = TenantFactory(name="Acme"), TenantFactory(name="Globex")
    TenantFactory(name="Initech", status=Tenant.Status.SUSPENDED)
    # when the operator suspends all three at once
    response = admin_client.post(
        "/admin/marketplace/tenant/",
        {"action": "suspend", "_selected_action": [t.pk for t in Tenant.objects.all()]},
    )
    assert response.status_code == 302
    # then the two that changed have a history row each, by the operator
    suspended = Tenant.history.filter(history_type="~").order_by("id")
    assert [(row.id, row.status, row.history_user) for row in suspended] == [
        (first.pk, "suspended", operator),
        (second.pk, "suspended", operator),
    ]
    assert {changes(row)["status"] for row in suspended} == {("active", "suspended")}
    assert {row.history_change_reason for row in suspended} == {"POST /admin/marketplace/tenant/"}


def test_an_operator_revoking_a_key_is_recorded(admin_client, operator, frozen_now):
    key, _ = api_key_create(tenant=TenantFactory())
    response = admin_client.post(
        "/admin/marketplace/apikey/", {"action": "revoke", "_selected_action": [key.pk]}
    )
    assert response.status_code == 302
    revoked = ApiKey.history.filter(id=key.pk).order_by("history_id").last()
    assert (revoked.history_type, revoked.history_user) == ("~", operator)
    assert changes(revoked) == {"revoked_at": (None, NOW)}


# --- the API -----------------------------------------------------------------------------------


def test_a_tenants_booking_and_cancellation_through_the_api_are_recorded_with_its_key(
    frozen_now,
):
    # given a tenant with an API key and a pool
    tenant = TenantFactory()
    CapacityPoolFactory(slug="pool-a")
    api = tenant_client(tenant)
    # when it books through the API, then cancels
    booked = api.post("/api/v1/reservations/", BOOKING, format="json")
    assert booked.status_code == 201, booked.content
    reservation_id = booked.json()["id"]
    cancelled = api.post(
        f"/api/v1/reservations/{reservation_id}/cancel/", {"reason": "plans changed"}
    )
    assert cancelled.status_code == 200, cancelled.content
    # then the reservation's history has both, by that key of that tenant, and no Django user
    rows = list(Reservation.history.filter(id=reservation_id).order_by("history_id"))
    assert [
        (
            row.history_type,
            row.status,
            row.history_user_id,
            row.history_api_key_prefix,
            row.history_tenant_id,
            row.history_change_reason,
            row.history_date,
        )
        for row in rows
    ] == [
        ("+", "confirmed", None, api.api_key.prefix, tenant.pk, "POST /api/v1/reservations/", NOW),
        (
            "~",
            "cancelled",
            None,
            api.api_key.prefix,
            tenant.pk,
            f"POST /api/v1/reservations/{reservation_id}/cancel/",
            NOW,
        ),
    ]
    assert changes(rows[1]) == {
        "status": ("confirmed", "cancelled"),
        "capacity_until": (
            datetime(2026, 12, 7, 13, tzinfo=UTC),
            datetime(2026, 12, 7, 9, tzinfo=UTC),
        ),
        "charge": (Decimal("96.00"), Decimal("0.00")),
        "cancelled_at": (None, NOW),
        "cancelled_by": ("", f"api-key:{api.api_key.prefix}"),
        "cancellation_reason": ("", "plans changed"),
    }


def test_creating_and_revoking_a_key_through_the_api_is_recorded_without_its_digest(
    frozen_now,
):
    # given a tenant's admin key
    tenant = TenantFactory()
    api = tenant_client(tenant, scopes=["admin"])
    # when it creates a read key, then revokes it
    created = api.post("/api/v1/api-keys/", {"name": "ci", "scopes": ["read"]}, format="json")
    assert created.status_code == 201, created.content
    key = ApiKey.objects.get(pk=created.json()["id"])
    assert api.delete(f"/api/v1/api-keys/{key.pk}/").status_code == 204
    # then both are in the key's history, made by the admin key
    rows = list(ApiKey.history.filter(id=key.pk).order_by("history_id"))
    assert [
        (
            row.history_type,
            row.name,
            row.scopes,
            row.revoked_at,
            row.history_api_key_prefix,
            row.history_tenant_id,
            row.history_change_reason,
        )
        for row in rows
    ] == [
        ("+", "ci", ["read"], None, api.api_key.prefix, tenant.pk, "POST /api/v1/api-keys/"),
        (
            "~",
            "ci",
            ["read"],
            NOW,
            api.api_key.prefix,
            tenant.pk,
            f"DELETE /api/v1/api-keys/{key.pk}/",
        ),
    ]
    # and the history keeps neither the digest nor the secret, in any column
    columns = {field.name for field in ApiKey.history.model._meta.get_fields()}
    assert "digest" not in columns
    assert "last_used_at" not in columns
    stored = str(list(ApiKey.history.values()))
    assert key.digest not in stored
    assert created.json()["key"] not in stored


def test_a_webhook_endpoints_history_keeps_no_signing_secret(frozen_now):
    tenant = TenantFactory()
    api = tenant_client(tenant)
    created = api.post(
        "/api/v1/webhook-endpoints/", {"url": "https://hooks.example.com/gpu"}, format="json"
    )
    assert created.status_code == 201, created.content
    endpoint = WebhookEndpoint.objects.get()
    row = WebhookEndpoint.history.get(id=endpoint.pk)
    assert (row.history_type, row.url, row.history_api_key_prefix, row.history_tenant_id) == (
        "+",
        "https://hooks.example.com/gpu",
        api.api_key.prefix,
        tenant.pk,
    )
    columns = {field.name for field in WebhookEndpoint.history.model._meta.get_fields()}
    assert not {"secret", "previous_secret"} & columns
    assert endpoint.secret not in str(list(WebhookEndpoint.history.values()))


def test_a_write_outside_any_request_has_no_actor():
    # a job or a command: no user, no key, no reason
    tenant = TenantFactory()
    row = Tenant.history.get(id=tenant.pk)
    assert (
        row.history_user,
        row.history_api_key_prefix,
        row.history_tenant_id,
        row.history_change_reason,
    ) == (None, "", None, None)


# --- what the admin shows ----------------------------------------------------------------------


def test_the_reservations_history_page_shows_who_changed_what(admin_client, frozen_now):
    # given a reservation booked and cancelled through the API
    tenant = TenantFactory()
    CapacityPoolFactory(slug="pool-a")
    api = tenant_client(tenant)
    reservation_id = api.post("/api/v1/reservations/", BOOKING, format="json").json()["id"]
    api.post(f"/api/v1/reservations/{reservation_id}/cancel/", {"reason": "plans changed"})
    # when the operator opens its History page
    response = admin_client.get(f"/admin/marketplace/reservation/{reservation_id}/history/")
    # then it lists both changes, newest first, by the tenant's key, with what changed
    shown = history_table(response)
    by_key = f"API key {api.api_key.prefix} (tenant {tenant.pk})"
    assert [(row["Comment"], row["Changed by"], row["Change reason"]) for row in shown] == [
        ("Changed", by_key, f"POST /api/v1/reservations/{reservation_id}/cancel/"),
        ("Created", by_key, "POST /api/v1/reservations/"),
    ]
    assert "Status: confirmed → cancelled" in shown[0]["Changes"]
    assert "Cancellation reason: → plans changed" in shown[0]["Changes"]
    assert shown[1]["Changes"] == ""
    # and one version's page renders, read-only: reverting is not offered
    version = Reservation.history.filter(id=reservation_id).order_by("history_id").first()
    page = admin_client.get(
        f"/admin/marketplace/reservation/{reservation_id}/history/{version.history_id}/"
    )
    assert page.status_code == 200
    assert b"Revert" not in page.content
    refused = admin_client.post(
        f"/admin/marketplace/reservation/{reservation_id}/history/{version.history_id}/", {}
    )
    assert refused.status_code == 405
    assert Reservation.objects.get(pk=reservation_id).status == "cancelled"


def test_the_pool_history_page_names_the_operator(admin_client, operator):
    pool = CapacityPoolFactory(slug="pool-a")
    with time_machine.travel(datetime(2026, 12, 7, 8, 30, tzinfo=UTC), tick=False):
        admin_client.post(
            f"/admin/capacity/capacitypool/{pool.pk}/change/", pool_form(pool, node_count=5)
        )
    shown = history_table(admin_client.get(f"/admin/capacity/capacitypool/{pool.pk}/history/"))
    assert shown[0]["Changed by"] == "op"
    assert "Node count: 4 → 5" in shown[0]["Changes"]
