"""Operator screens of the demand side: every page renders, and every action goes through a
service (tenants and keys are created, keys revoked, reservations cancelled)."""

import re
from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.test import Client

from billing.admin import LedgerPostingForm
from billing.models import LedgerEntry
from capacity.models import PoolHour
from marketplace.models import (
    ApiKey,
    CancellationRule,
    CommitmentDiscount,
    IdempotencyRecord,
    Reservation,
    Tenant,
)
from marketplace.services import booking as svc
from marketplace.services.tenants import api_key_create
from tests.admin_helpers import form_values, headings, options, rows
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
    reserved, _ = svc.reservation_create(
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


def form_errors(response) -> dict[str, list[str]]:
    form = response.context["adminform"].form
    return {name: [str(error) for error in errors] for name, errors in form.errors.items()}


BOOKED_AT = "Dec. 1, 2026, 8:30 a.m."  # NOW, when every object of one_of_each was made


def pages(model: str, objects: dict) -> tuple[list[dict[str, str]], dict[str, str]]:
    """What the changelist (its rows) and the change or view page (its fields) of ``model``
    show for ``one_of_each``: a tenant with a 100.00 top-up, one API key and a confirmed
    reservation of 8 GPUs for 4 hours at 3.00 (96.00), plus the default policies."""
    tenant, reservation = objects["tenant"], objects["reservation"]
    ledger = {
        "tenant": tenant.name,
        "kind": "Prepaid top-up",
        "amount": "100.00",
        "currency": "USD",
        "reference": "T-1",
        "memo": "-",
    }
    key = {
        "prefix": objects["apikey"].prefix,
        "name": "default",
        "tenant": tenant.name,
        "scope_list": "read, book, admin",
        "created_at": BOOKED_AT,
        "last_used_at": "-",
        "expires_at": "-",
        "revoked_at": "-",
    }
    window = {"start": "Dec. 7, 2026, 9 a.m.", "end": "Dec. 7, 2026, 1 p.m."}
    money = {"unit_price": "3.0000", "total_price": "96.00", "charge": "96.00"}
    quotas = {"max_gpus": "100000", "max_reservation_hours": "2160", "discount_percent": "0.00"}
    # 1,000,000.00 limit + 100.00 prepaid - 96.00 booked
    credit = {"currency": "USD", "credit_limit": "1000000.00", "credit_available": "1000004.00"}
    return {
        "tenant": (
            [{"name": tenant.name, "slug": tenant.slug, "status": "Active", **credit, **quotas}],
            {
                "name": tenant.name,
                "slug": tenant.slug,
                "status": "Active",
                "members": "",
                **credit,
                **quotas,
                "tax_rate_percent": "0.00",
                "ending_soon_lead": "01:00:00",
                "low_balance_threshold": "",
                "low_balance_alerted": "False",
                "created_at": BOOKED_AT,
                "updated_at": BOOKED_AT,
            },
        ),
        "apikey": ([key], key),
        "reservation": (
            [
                {
                    "id": str(reservation.pk),
                    "tenant": tenant.name,
                    "pool": "pool-a",
                    "status": "Confirmed",
                    "gpu_count": "8",
                    **window,
                    **money,
                    "currency": "USD",
                    "created_at": BOOKED_AT,
                }
            ],
            {
                "tenant": tenant.name,
                "pool": "pool-a",
                "gpu_count": "8",
                **window,
                "capacity_until": window["end"],
                "status": "Confirmed",
                "currency": "USD",
                "list_price_per_gpu_hour": "3.0000",
                **money,
                "invoiced_amount": "0.00",
                "cancellation_fee": "0.00",
                "hold_expires_at": "-",
                "confirmed_at": BOOKED_AT,
                "cancelled_at": "-",
                "cancelled_by": "-",
                "cancellation_reason": "-",
                "scope": "-",
                "ending_soon_notified_at": "-",
                # the terms booked under: the migration's default policy
                "commitment_percent": "0.00",
                "cancellation_terms": '[{"fee_percent": "0.00", "min_notice_hours": 24}, '
                '{"fee_percent": "50.00", "min_notice_hours": 0}]',
            },
        ),
        "commitmentdiscount": (
            [{"min_hours": "168", "percent": "10.00"}, {"min_hours": "720", "percent": "20.00"}],
            {"min_hours": "168", "percent": "10.00"},
        ),
        "cancellationrule": (
            [
                {"min_notice_hours": "24", "fee_percent": "0.00"},
                {"min_notice_hours": "0", "fee_percent": "50.00"},
            ],
            {"min_notice_hours": "24", "fee_percent": "0.00"},
        ),
        "ledgerentry": ([{"created_at": BOOKED_AT, **ledger}], ledger),
        "idempotencyrecord": (
            [
                {
                    "created_at": BOOKED_AT,
                    "tenant": tenant.name,
                    "scope": "reservation.create",
                    "key": "k-1",
                    "reservation": str(reservation),
                }
            ],
            {
                "tenant": tenant.name,
                "scope": "reservation.create",
                "key": "k-1",
                "fingerprint": booking(gpus=8).fingerprint(),
                "reservation": str(reservation),
            },
        ),
    }[model]


@pytest.mark.parametrize(
    ("model", "verb"),
    [
        ("tenant", "change"),
        ("apikey", "view"),
        ("reservation", "view"),
        ("commitmentdiscount", "change"),
        ("cancellationrule", "change"),
        ("ledgerentry", "view"),
        ("idempotencyrecord", "view"),
    ],
)
def test_every_marketplace_admin_page_shows_its_objects(admin, one_of_each, model, verb):
    obj = one_of_each[model]
    name = obj._meta.verbose_name
    shown_in_list, shown_on_page = pages(model, one_of_each)
    app = obj._meta.app_label  # the money ledger is billing's

    changelist = admin.get(f"/admin/{app}/{model}/")
    change = admin.get(f"/admin/{app}/{model}/{obj.pk}/change/")

    assert headings(changelist)["h1"] == f"Select {name} to {verb}"
    assert rows(changelist) == shown_in_list
    assert headings(change) == {
        "title": f"{obj} | {verb.capitalize()} {name} | GPU Marketplace",
        "h1": f"{verb.capitalize()} {name}",
        "h2": str(obj),
    }
    assert form_values(change) == shown_on_page


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        (
            "tenant",
            {
                "name": "",
                "slug": "",
                "status": "Active",
                "members": "",
                "currency": "USD",
                "credit_limit": "0.00",
                "credit_available": "-",
                "discount_percent": "0.00",
                "tax_rate_percent": "0.00",
                "max_gpus": "1024",
                "max_reservation_hours": "2160",
                "ending_soon_lead": "01:00:00",
                "low_balance_threshold": "",
                "low_balance_alerted": "False",
                "created_at": "-",
                "updated_at": "-",
            },
        ),
        ("commitmentdiscount", {"min_hours": "", "percent": ""}),
        ("cancellationrule", {"min_notice_hours": "", "fee_percent": ""}),
        (
            "ledgerentry",
            {"tenant": "---------", "kind": "", "amount": "", "reference": "", "memo": ""},
        ),
    ],
)
def test_the_editable_models_have_an_add_form(admin, model, fields):
    app = "billing" if model == "ledgerentry" else "marketplace"
    response = admin.get(f"/admin/{app}/{model}/add/")
    assert headings(response)["h1"] == f"Add {response.context['opts'].verbose_name}"
    assert form_values(response) == fields


def test_an_operator_may_only_post_top_ups_and_adjustments(admin):
    response = admin.get("/admin/billing/ledgerentry/add/")
    assert options(response, "kind") == ["Prepaid top-up", "Adjustment"]


def test_the_tenant_list_shows_credit_available(admin, one_of_each):
    # given a credit limit of 1,000,000, a top-up of 100 and a booking of 96
    response = admin.get("/admin/marketplace/tenant/")
    # then the list shows 1,000,004 available
    assert [row["credit_available"] for row in rows(response)] == ["1000004.00"]


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
            "ending_soon_lead": "01:00:00",
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


def tenant_form(tenant: Tenant, **changes) -> dict:
    data = {
        "name": tenant.name,
        "slug": tenant.slug,
        "status": tenant.status,
        "currency": tenant.currency,
        "credit_limit": str(tenant.credit_limit),
        "discount_percent": str(tenant.discount_percent),
        "tax_rate_percent": str(tenant.tax_rate_percent),
        "max_gpus": str(tenant.max_gpus),
        "max_reservation_hours": str(tenant.max_reservation_hours),
        "ending_soon_lead": "01:00:00",
        "low_balance_threshold": "",
        "api_keys-TOTAL_FORMS": "0",
        "api_keys-INITIAL_FORMS": "0",
    }
    data.update(changes)
    return data


def test_a_tenant_edit_the_service_refuses_shows_on_the_field_and_saves_nothing(
    admin, operator, one_of_each
):
    # given a tenant with history (a reservation and a top-up in USD)
    tenant = one_of_each["tenant"]
    url = f"/admin/marketplace/tenant/{tenant.pk}/change/"

    # when an operator changes its currency, its quota and its members at once
    refused = admin.post(
        url, tenant_form(tenant, currency="EUR", max_gpus="64", members=[operator.pk])
    )

    # then the refusal is on the currency field, the form is shown again and nothing is saved
    assert refused.status_code == 200
    assert form_errors(refused) == {
        "__all__": [
            f"{tenant.name} is billed in USD and already has reservations, ledger entries or "
            "invoices in it: its currency cannot change to EUR. Create a new tenant to be "
            "billed in EUR."
        ],
        "currency": ["Fixed at USD: the tenant has history."],
    }
    assert refused.context["adminform"].form.errors.as_data()["currency"][0].code == (
        "currency_locked"
    )
    stored = Tenant.objects.get(pk=tenant.pk)
    assert (stored.currency, stored.max_gpus, list(stored.members.all())) == (
        "USD",
        tenant.max_gpus,
        [],
    )

    # when they keep the currency, the rest is saved through the service
    accepted = admin.post(url, tenant_form(tenant, max_gpus="64", members=[operator.pk]))

    assert accepted.status_code == 302
    stored = Tenant.objects.get(pk=tenant.pk)
    assert (stored.currency, stored.max_gpus, list(stored.members.all())) == (
        "USD",
        64,
        [operator],
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
    response = admin.post("/admin/billing/ledgerentry/add/", posting(tenant, memo="wire"))
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
        "/admin/billing/ledgerentry/add/",
        posting(tenant, kind="adjustment", amount="-20.00", reference="ADJ-1"),
    )
    assert response.status_code == 302
    assert LedgerEntry.objects.get().amount == Decimal("-20.00")


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        (  # refused by the service: its detail above the form, its field problem on the field
            {"amount": "-5.00"},
            {
                "__all__": ["The amount must be positive and in the currency's minor unit."],
                "amount": ["Positive, minor unit."],
            },
        ),
        (  # refused by the form: the model's own checks
            {"amount": "0"},
            {"__all__": ["Constraint “ledger_amount_nonzero” is violated."]},
        ),
        (
            {"kind": "invoice"},
            {"kind": ["Select a valid choice. invoice is not one of the available choices."]},
        ),
    ],
    ids=["service", "constraint", "choice"],
)
def test_a_posting_the_service_refuses_is_shown_on_the_form(admin, tenant, fields, errors):
    response = admin.post("/admin/billing/ledgerentry/add/", posting(tenant, **fields))
    assert response.status_code == 200
    assert form_errors(response) == errors
    assert not LedgerEntry.objects.exists()


def test_the_posting_form_only_validates(tenant):
    # a valid posting form, validated: nothing is on the ledger until the admin saves it
    form = LedgerPostingForm(data=posting(tenant))
    assert form.is_valid(), form.errors
    assert not LedgerEntry.objects.exists()


def test_a_refused_posting_then_a_valid_one_leave_exactly_one_entry(admin, frozen_now, tenant):
    refused = admin.post("/admin/billing/ledgerentry/add/", posting(tenant, amount="-5.00"))
    accepted = admin.post("/admin/billing/ledgerentry/add/", posting(tenant))

    assert (refused.status_code, accepted.status_code) == (200, 302)
    assert list(LedgerEntry.objects.values_list("kind", "amount", "reference")) == [
        ("top_up", Decimal("500.00"), "TOPUP-1")
    ]


def test_a_reference_is_posted_only_once(admin, tenant):
    admin.post("/admin/billing/ledgerentry/add/", posting(tenant))
    response = admin.post("/admin/billing/ledgerentry/add/", posting(tenant, amount="7.00"))
    assert response.status_code == 200
    assert LedgerEntry.objects.count() == 1


def test_ledger_entries_cannot_be_changed_or_deleted(admin, one_of_each):
    entry = one_of_each["ledgerentry"]
    change = admin.post(f"/admin/billing/ledgerentry/{entry.pk}/change/", {"amount": "1.00"})
    delete = admin.post(f"/admin/billing/ledgerentry/{entry.pk}/delete/", {"post": "yes"})
    assert (change.status_code, delete.status_code) == (403, 403)
    entry.refresh_from_db()
    assert entry.amount == Decimal("100.00")
