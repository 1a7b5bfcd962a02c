"""Operator screens of the demand side: every page renders, and every action goes through a
service (tenants and keys are created, keys revoked, reservations cancelled)."""

import re
from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.test import Client

from capacity.models import PoolHour
from marketplace.models import (
    ApiKey,
    CancellationRule,
    CommitmentDiscount,
    IdempotencyRecord,
    LedgerEntry,
    Reservation,
    Tenant,
)
from marketplace.services import booking as svc
from marketplace.services.tenants import api_key_create
from tests.marketplace.api_helpers import tenant_client
from tests.marketplace.conftest import booking

pytestmark = pytest.mark.django_db

KEY_PATTERN = re.compile(r"gpum_[0-9a-f]{12}_\S+")


@pytest.fixture
def admin(operator) -> Client:
    client = Client()
    client.force_login(operator)
    return client


@pytest.fixture
def reservation(frozen_now, tenant, pool) -> Reservation:
    request = booking(gpus=8)
    reserved, _, _ = svc.reservation_create(
        tenant=tenant, request=request, idempotency_key="k-1", fingerprint=request.fingerprint()
    )
    return reserved


@pytest.fixture
def one_of_each(reservation, tenant):
    key, _ = api_key_create(tenant=tenant)
    entry = LedgerEntry.objects.create(
        tenant=tenant, kind="top_up", amount=Decimal("100.00"), currency="USD", reference="T-1"
    )
    return {
        "tenant": tenant,
        "apikey": key,
        "reservation": reservation,
        "commitmentdiscount": CommitmentDiscount.objects.first(),
        "cancellationrule": CancellationRule.objects.first(),
        "ledgerentry": entry,
        "idempotencyrecord": IdempotencyRecord.objects.get(),
    }


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


@pytest.mark.parametrize(
    "model",
    [
        "tenant",
        "apikey",
        "reservation",
        "commitmentdiscount",
        "cancellationrule",
        "ledgerentry",
        "idempotencyrecord",
    ],
)
def test_every_marketplace_admin_page_renders(admin, one_of_each, model):
    obj = one_of_each[model]
    changelist = admin.get(f"/admin/marketplace/{model}/")
    change = admin.get(f"/admin/marketplace/{model}/{obj.pk}/change/")
    assert changelist.status_code == 200
    assert change.status_code == 200


@pytest.mark.parametrize(
    "model", ["tenant", "commitmentdiscount", "cancellationrule", "ledgerentry"]
)
def test_the_editable_models_have_an_add_form(admin, model):
    assert admin.get(f"/admin/marketplace/{model}/add/").status_code == 200


@pytest.mark.parametrize("model", ["apikey", "reservation", "idempotencyrecord"])
def test_the_read_only_models_cannot_be_added(admin, model):
    assert admin.get(f"/admin/marketplace/{model}/add/").status_code == 403


def test_the_tenant_list_shows_credit_available(admin, one_of_each):
    # given a credit limit of 1,000,000, a top-up of 100 and a booking of 96
    response = admin.get("/admin/marketplace/tenant/")
    # then the list shows 1,000,004 available
    assert "1000004.00" in response.content.decode()


def test_an_api_key_page_never_shows_the_digest(admin, one_of_each):
    key = one_of_each["apikey"]
    for url in ("/admin/marketplace/apikey/", f"/admin/marketplace/apikey/{key.pk}/change/"):
        content = admin.get(url).content.decode()
        assert key.prefix in content
        assert key.digest not in content


def test_adding_a_tenant_in_the_admin_shows_its_first_key_once(admin):
    # when an operator adds a tenant
    response = admin.post(
        "/admin/marketplace/tenant/add/",
        {
            "name": "Gamma Compute",
            "slug": "gamma",
            "status": "active",
            "webhook_url": "",
            "currency": "EUR",
            "credit_limit": "5000",
            "discount_percent": "5",
            "tax_rate_percent": "0",
            "max_gpus": "256",
            "max_reservation_hours": "720",
        },
        follow=True,
    )
    # then the tenant exists with what was entered, and one key was created and shown once
    assert response.status_code == 200
    tenant = Tenant.objects.get(slug="gamma")
    assert (tenant.currency, tenant.credit_limit, tenant.max_gpus) == ("EUR", Decimal("5000"), 256)
    shown = [m for m in messages_of(response) if "New API key" in m]
    assert len(shown) == 1
    raw_key = KEY_PATTERN.search(shown[0]).group(0)
    assert ApiKey.objects.get(tenant=tenant).prefix in shown[0]
    # and the key works
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    assert client.get("/api/v1/tenant/").json()["slug"] == "gamma"
    # and it is not shown again
    assert (
        raw_key not in admin.get(f"/admin/marketplace/tenant/{tenant.pk}/change/").content.decode()
    )


def test_the_create_api_key_action_shows_a_new_key_for_each_tenant(admin, tenant):
    response = admin.post(
        "/admin/marketplace/tenant/",
        {"action": "create_api_key", "_selected_action": [tenant.pk]},
        follow=True,
    )
    shown = [m for m in messages_of(response) if "New API key" in m]
    assert len(shown) == 1
    raw_key = KEY_PATTERN.search(shown[0]).group(0)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    assert client.get("/api/v1/tenant/").status_code == 200


def test_suspending_a_tenant_locks_its_keys_out_and_reactivating_lets_them_in(
    admin, frozen_now, tenant
):
    api = tenant_client(tenant)
    # when the operator suspends the tenant
    admin.post("/admin/marketplace/tenant/", {"action": "suspend", "_selected_action": [tenant.pk]})
    # then its key is refused
    assert api.get("/api/v1/tenant/").json()["code"] == "tenant_suspended"
    # when the operator reactivates it
    admin.post(
        "/admin/marketplace/tenant/", {"action": "reactivate", "_selected_action": [tenant.pk]}
    )
    # then the key works again
    assert api.get("/api/v1/tenant/").status_code == 200


def test_revoking_a_key_in_the_admin_stops_it(admin, frozen_now, tenant):
    api = tenant_client(tenant)
    admin.post(
        "/admin/marketplace/apikey/", {"action": "revoke", "_selected_action": [api.api_key.pk]}
    )
    assert ApiKey.objects.get(pk=api.api_key.pk).revoked_at is not None
    assert api.get("/api/v1/tenant/").status_code == 401


def test_the_cancel_action_cancels_through_the_service_and_releases_capacity(
    admin, reservation, pool
):
    # given a confirmed reservation holding 8 GPUs for 4 hours
    assert list(PoolHour.objects.values_list("booked", flat=True)) == [8, 8, 8, 8]
    # when an operator cancels it
    response = admin.post(
        "/admin/marketplace/reservation/",
        {"action": "cancel", "_selected_action": [str(reservation.pk)]},
        follow=True,
    )
    # then it is cancelled by that operator and the GPUs are free again
    reservation.refresh_from_db()
    assert reservation.status == "cancelled"
    assert reservation.cancelled_by == "operator:op"
    assert reservation.cancellation_fee == Decimal("0.00")
    assert list(PoolHour.objects.values_list("booked", flat=True)) == [0, 0, 0, 0]
    assert "1 reservation(s) cancelled." in messages_of(response)


def test_the_cancel_action_reports_what_it_could_not_cancel(admin, reservation):
    # given the reservation has run and completed
    with time_machine.travel(reservation.end + timedelta(minutes=1), tick=False):
        svc.reservations_advance()
    # when an operator tries to cancel it
    response = admin.post(
        "/admin/marketplace/reservation/",
        {"action": "cancel", "_selected_action": [str(reservation.pk)]},
        follow=True,
    )
    # then nothing is cancelled and the operator is told why
    assert messages_of(response) == [
        f"{reservation.pk}: not cancelled: A completed reservation cannot be cancelled.",
        "0 reservation(s) cancelled.",
    ]
    reservation.refresh_from_db()
    assert reservation.status == "completed"


def test_reservations_are_read_only_in_the_admin(admin, reservation):
    change = admin.get(f"/admin/marketplace/reservation/{reservation.pk}/change/")
    assert b'name="gpu_count"' not in change.content
    assert admin.post(f"/admin/marketplace/reservation/{reservation.pk}/delete/").status_code == 403


@pytest.mark.parametrize("query", ["", "not-a-uuid", "Tenant"])
def test_reservations_can_be_searched_by_id_and_tenant(admin, reservation, query):
    term = query or str(reservation.pk)
    response = admin.get("/admin/marketplace/reservation/", {"q": term})
    assert response.status_code == 200
    found = str(reservation.pk) in response.content.decode()
    assert found is (term != "not-a-uuid")


def test_the_price_book_is_editable(admin):
    rule = CommitmentDiscount.objects.get(min_hours=168)
    response = admin.post(
        f"/admin/marketplace/commitmentdiscount/{rule.pk}/change/",
        {"min_hours": "168", "percent": "12.50"},
    )
    assert response.status_code == 302
    rule.refresh_from_db()
    assert rule.percent == Decimal("12.50")


def posting(tenant, **fields) -> dict:
    return {
        "tenant": tenant.pk,
        "kind": "top_up",
        "amount": "500.00",
        "reference": "TOPUP-1",
        "memo": "",
        **fields,
    }


def test_an_operator_tops_up_an_account_through_the_service(admin, frozen_now, tenant):
    # when an operator posts a top-up of 500
    response = admin.post("/admin/marketplace/ledgerentry/add/", posting(tenant, memo="wire"))
    # then the ledger has it in the tenant's currency and the tenant may spend 500 more
    assert response.status_code == 302
    entry = LedgerEntry.objects.get()
    assert (entry.kind, entry.amount, entry.currency, entry.reference, entry.memo) == (
        "top_up",
        Decimal("500.00"),
        "USD",
        "TOPUP-1",
        "wire",
    )
    assert tenant_client(tenant).get("/api/v1/tenant/").json()["credit_available"] == ("1000500.00")


def test_an_operator_posts_a_negative_adjustment(admin, tenant):
    response = admin.post(
        "/admin/marketplace/ledgerentry/add/",
        posting(tenant, kind="adjustment", amount="-20.00", reference="ADJ-1"),
    )
    assert response.status_code == 302
    assert LedgerEntry.objects.get().amount == Decimal("-20.00")


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"amount": "-5.00"}, "The amount must be positive and in the currency's minor unit."),
        ({"amount": "0"}, "Constraint “ledger_amount_nonzero” is violated."),
        (
            {"kind": "invoice"},
            "Select a valid choice. invoice is not one of the available choices.",
        ),
    ],
)
def test_a_posting_the_service_refuses_is_shown_on_the_form(admin, tenant, fields, error):
    response = admin.post("/admin/marketplace/ledgerentry/add/", posting(tenant, **fields))
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert [str(message) for errors in form.errors.values() for message in errors] == [error]
    assert not LedgerEntry.objects.exists()


def test_a_reference_is_posted_only_once(admin, tenant):
    admin.post("/admin/marketplace/ledgerentry/add/", posting(tenant))
    response = admin.post("/admin/marketplace/ledgerentry/add/", posting(tenant, amount="7.00"))
    assert response.status_code == 200
    assert LedgerEntry.objects.count() == 1


def test_ledger_entries_cannot_be_changed_or_deleted(admin, one_of_each):
    entry = one_of_each["ledgerentry"]
    change = admin.post(f"/admin/marketplace/ledgerentry/{entry.pk}/change/", {"amount": "1.00"})
    delete = admin.post(f"/admin/marketplace/ledgerentry/{entry.pk}/delete/", {"post": "yes"})
    assert (change.status_code, delete.status_code) == (403, 403)
    entry.refresh_from_db()
    assert entry.amount == Decimal("100.00")
