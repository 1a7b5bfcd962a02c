"""One currency per tenant: a tenant is offered only pools priced in its billing currency,
prices are compared and charged in that currency alone, and the currency is fixed once the
tenant has history.

The catalogue: three H100 pools of 32 GPUs. ``usd-cheap`` is sold in USD only at 1.0000 (the
lowest figure of all), ``eur-dear`` in EUR only at 2.9000, and ``both`` in USD at 3.0000 and
in EUR at 2.5000."""

from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command
from django.test import Client

from billing.models import LedgerEntry
from marketplace import selectors
from marketplace.errors import CurrencyLocked, NoMatchingPool
from marketplace.models import PoolPrice, Reservation, Tenant
from marketplace.services import booking as svc
from marketplace.services.tenants import tenant_update
from tests.capacity.test_admin import pool_form
from tests.factories import CapacityPoolFactory, TenantFactory
from tests.marketplace.api_helpers import tenant_client
from tests.marketplace.conftest import MONDAY_9, NOW, booking

pytestmark = pytest.mark.django_db

MON_9 = "2026-12-07T09:00:00Z"
MON_13 = "2026-12-07T13:00:00Z"


@pytest.fixture
def catalogue() -> dict:
    return {
        "usd-cheap": CapacityPoolFactory(slug="usd-cheap", price_per_gpu_hour=Decimal("1.0000")),
        "eur-dear": CapacityPoolFactory(
            slug="eur-dear", currency="EUR", price_per_gpu_hour=Decimal("2.9000")
        ),
        "both": CapacityPoolFactory(
            slug="both", price_per_gpu_hour=Decimal("3.0000"), prices={"EUR": "2.5000"}
        ),
    }


@pytest.fixture
def eur_tenant() -> Tenant:
    return TenantFactory(slug="euro-labs", currency="EUR")


@pytest.fixture
def usd_tenant() -> Tenant:
    return TenantFactory(slug="dollar-labs", currency="USD")


def book(tenant: Tenant, **kwargs) -> Reservation:
    request = booking(**kwargs)
    reservation, _ = svc.reservation_create(
        tenant=tenant, request=request, fingerprint=request.fingerprint(), now=NOW
    )
    return reservation


def search(tenant: Tenant, **kwargs) -> list[tuple[str, Decimal, Decimal, str]]:
    offers = selectors.availability_search(
        tenant=tenant,
        criteria=selectors.PoolFilter(gpu_model="h100-sxm-80gb", **kwargs),
        gpu_count=8,
        start=MONDAY_9,
        end=MONDAY_9 + timedelta(hours=4),
    )
    return [(o.pool.slug, o.unit_price, o.total_price, o.currency) for o in offers]


def earliest(tenant: Tenant) -> list[tuple[str, Decimal, str]]:
    windows = selectors.earliest_windows(
        tenant=tenant,
        criteria=selectors.PoolFilter(gpu_model="h100-sxm-80gb"),
        gpu_count=8,
        duration_hours=4,
        not_before=MONDAY_9,
        not_after=MONDAY_9 + timedelta(days=1),
    )
    return [(w.pool.slug, w.unit_price, w.currency) for w in windows]


# --- offers -------------------------------------------------------------------------------------


def test_a_eur_tenant_is_offered_only_pools_priced_in_eur_cheapest_eur_price_first(
    catalogue, eur_tenant
):
    # then the USD-only pool is not offered, although 1.0000 is the lowest figure of all, and
    # the EUR prices are compared with each other: 2.5000 before 2.9000
    assert search(eur_tenant) == [
        ("both", Decimal("2.5000"), Decimal("80.00"), "EUR"),
        ("eur-dear", Decimal("2.9000"), Decimal("92.80"), "EUR"),
    ]


def test_a_usd_tenant_is_offered_only_pools_priced_in_usd(catalogue, usd_tenant):
    assert search(usd_tenant) == [
        ("usd-cheap", Decimal("1.0000"), Decimal("32.00"), "USD"),
        ("both", Decimal("3.0000"), Decimal("96.00"), "USD"),
    ]


def test_a_pool_pinned_by_a_eur_tenant_but_not_priced_in_eur_is_not_offered(catalogue, eur_tenant):
    assert search(eur_tenant, pool="usd-cheap") == []


def test_earliest_windows_list_only_pools_priced_in_the_tenants_currency(catalogue, eur_tenant):
    assert earliest(eur_tenant) == [
        ("both", Decimal("2.5000"), "EUR"),
        ("eur-dear", Decimal("2.9000"), "EUR"),
    ]


def test_a_price_limit_is_in_the_tenants_currency(catalogue, eur_tenant):
    offers = selectors.availability_search(
        tenant=eur_tenant,
        criteria=selectors.PoolFilter(gpu_model="h100-sxm-80gb"),
        gpu_count=8,
        start=MONDAY_9,
        end=MONDAY_9 + timedelta(hours=4),
        max_unit_price=Decimal("2.6000"),
    )
    assert [offer.pool.slug for offer in offers] == ["both"]


# --- booking ------------------------------------------------------------------------------------


def test_a_eur_booking_goes_to_the_cheapest_eur_price_and_is_kept_in_eur(catalogue, eur_tenant):
    # when the EUR tenant books 8 GPUs for 4 hours, with a 10 % negotiated discount
    Tenant.objects.filter(pk=eur_tenant.pk).update(discount_percent=Decimal("10.00"))
    eur_tenant.refresh_from_db()
    reservation = book(eur_tenant, gpus=8, hours=4)

    # then it lands on the pool with the lowest EUR price, priced from that price, in EUR
    assert reservation.pool.slug == "both"
    assert (
        reservation.currency,
        reservation.list_price_per_gpu_hour,
        reservation.unit_price,
        reservation.total_price,
    ) == ("EUR", Decimal("2.5000"), Decimal("2.2500"), Decimal("72.00"))


def test_eur_bookings_fill_the_eur_pools_and_never_the_usd_only_one(catalogue, eur_tenant):
    # when the EUR tenant books all 32 GPUs three times for the same hours
    first = book(eur_tenant, gpus=32)
    second = book(eur_tenant, gpus=32)

    # then the two EUR-priced pools fill, cheapest first, and then nothing is left for it
    assert [first.pool.slug, second.pool.slug] == ["both", "eur-dear"]
    assert second.list_price_per_gpu_hour == Decimal("2.9000")
    with pytest.raises(svc.InsufficientCapacity):
        book(eur_tenant, gpus=32)
    # although the USD-only pool is still empty
    assert book(TenantFactory(currency="USD"), gpus=32).pool.slug == "usd-cheap"


def test_a_booking_pinned_to_a_pool_not_priced_in_the_tenants_currency_finds_no_pool(
    catalogue, eur_tenant
):
    with pytest.raises(NoMatchingPool) as error:
        book(eur_tenant, pool="usd-cheap")

    assert "priced in EUR" in error.value.detail
    assert not Reservation.objects.exists()


def test_a_usd_tenant_pays_the_usd_price_of_a_pool_sold_in_both(catalogue, usd_tenant):
    PoolPrice.objects.filter(pool__slug="usd-cheap").delete()  # not sold at all any more

    reservation = book(usd_tenant)

    assert (reservation.pool.slug, reservation.currency, reservation.unit_price) == (
        "both",
        "USD",
        Decimal("3.0000"),
    )


def test_a_pool_priced_in_yen_rounds_totals_to_whole_yen():
    CapacityPoolFactory(slug="tokyo", currency="JPY", price_per_gpu_hour=Decimal("450.1250"))
    yen = TenantFactory(currency="JPY")

    reservation = book(yen, gpus=8, hours=1)

    # 450.125 x 8 = 3601.00 -> 3601 (the yen has no minor unit)
    assert (reservation.currency, reservation.total_price) == ("JPY", Decimal("3601"))


# --- the tenant's currency is fixed once it has history ---------------------------------------


def test_a_tenant_without_history_may_change_its_currency(eur_tenant):
    changed = tenant_update(tenant=eur_tenant, currency="GBP")

    assert changed.currency == "GBP"
    assert Tenant.objects.get(pk=eur_tenant.pk).currency == "GBP"


def test_a_tenant_with_a_reservation_may_not_change_its_currency(catalogue, eur_tenant):
    book(eur_tenant)

    with pytest.raises(CurrencyLocked) as error:
        tenant_update(tenant=eur_tenant, currency="USD", max_gpus=64)

    assert (error.value.code, error.value.status_code) == ("currency_locked", 409)
    assert error.value.fields["currency"][0]["code"] == "currency_locked"
    # and nothing changed, the other field neither
    stored = Tenant.objects.get(pk=eur_tenant.pk)
    assert (stored.currency, stored.max_gpus) == ("EUR", eur_tenant.max_gpus)


def test_a_tenant_with_a_ledger_entry_may_not_change_its_currency(eur_tenant):
    LedgerEntry.objects.create(
        tenant=eur_tenant, kind="top_up", amount=Decimal("100.00"), currency="EUR", reference="T"
    )

    with pytest.raises(CurrencyLocked):
        tenant_update(tenant=eur_tenant, currency="USD")


def test_a_tenant_with_history_may_still_change_other_fields_and_keep_its_currency(
    catalogue, eur_tenant
):
    book(eur_tenant)

    changed = tenant_update(tenant=eur_tenant, currency="EUR", max_gpus=64)

    assert (changed.currency, changed.max_gpus) == ("EUR", 64)


@pytest.fixture
def admin(operator) -> Client:
    client = Client()
    client.force_login(operator)
    return client


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


def test_the_admin_refuses_a_currency_change_with_history_as_a_form_error(
    admin, catalogue, eur_tenant
):
    book(eur_tenant)

    response = admin.post(
        f"/admin/marketplace/tenant/{eur_tenant.pk}/change/",
        tenant_form(eur_tenant, currency="USD", max_gpus="64"),
    )

    # then the form comes back with the refusal on the currency field, and nothing is saved
    assert response.status_code == 200
    assert response.context["adminform"].form.errors.as_data()["currency"][0].code == (
        "currency_locked"
    )
    assert "already has reservations" in response.content.decode()
    stored = Tenant.objects.get(pk=eur_tenant.pk)
    assert (stored.currency, stored.max_gpus) == ("EUR", eur_tenant.max_gpus)


def test_the_admin_changes_the_currency_of_a_tenant_without_history(admin, eur_tenant):
    response = admin.post(
        f"/admin/marketplace/tenant/{eur_tenant.pk}/change/",
        tenant_form(eur_tenant, currency="USD", max_gpus="64"),
    )

    assert response.status_code == 302
    stored = Tenant.objects.get(pk=eur_tenant.pk)
    assert (stored.currency, stored.max_gpus) == ("USD", 64)


def test_the_admin_saves_other_changes_of_a_tenant_with_history(admin, catalogue, eur_tenant):
    book(eur_tenant)

    response = admin.post(
        f"/admin/marketplace/tenant/{eur_tenant.pk}/change/",
        tenant_form(eur_tenant, max_gpus="64"),
    )

    assert response.status_code == 302
    assert Tenant.objects.get(pk=eur_tenant.pk).max_gpus == 64


# --- the catalogue API --------------------------------------------------------------------------


def prices(response) -> dict[str, tuple]:
    assert response.status_code == 200, response.json()
    return {
        row["slug"]: (row["price_per_gpu_hour"], row["currency"])
        for row in response.json()["results"]
    }


def test_the_pools_api_shows_a_tenant_the_price_in_its_own_currency(catalogue, eur_tenant):
    response = tenant_client(eur_tenant).get("/api/v1/pools/")

    # the USD-only pool is listed, without a price in EUR
    assert prices(response) == {
        "both": ("2.5000", "EUR"),
        "eur-dear": ("2.9000", "EUR"),
        "usd-cheap": (None, "EUR"),
    }


def test_the_pools_api_orders_by_the_price_in_the_callers_currency(catalogue, usd_tenant):
    response = tenant_client(usd_tenant).get("/api/v1/pools/?ordering=price_per_gpu_hour")

    assert list(prices(response).items()) == [
        ("usd-cheap", ("1.0000", "USD")),
        ("both", ("3.0000", "USD")),
        ("eur-dear", (None, "USD")),  # not sold in USD: last
    ]


def test_one_pool_shows_the_price_in_the_callers_currency(catalogue, eur_tenant, usd_tenant):
    for tenant, expected in ((eur_tenant, "2.5000"), (usd_tenant, "3.0000")):
        row = tenant_client(tenant).get("/api/v1/pools/both/").json()
        assert (row["price_per_gpu_hour"], row["currency"]) == (expected, tenant.currency)


def test_a_pools_page_is_its_entry_in_the_list(catalogue, eur_tenant, usd_tenant, operator_client):
    PoolPrice.objects.filter(pool__slug="eur-dear").delete()
    for client in (tenant_client(eur_tenant), tenant_client(usd_tenant), operator_client):
        listed = client.get("/api/v1/pools/").json()["results"]
        assert len(listed) == 3
        for entry in listed:
            assert client.get(f"/api/v1/pools/{entry['slug']}/").json() == entry

    response = operator_client.get("/api/v1/pools/no-such-pool/")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_an_operator_sees_each_pool_priced_in_its_own_currency(catalogue, operator_client):
    PoolPrice.objects.filter(pool__slug="eur-dear").delete()

    assert prices(operator_client.get("/api/v1/pools/")) == {
        "both": ("3.0000", "USD"),
        "eur-dear": (None, "EUR"),
        "usd-cheap": ("1.0000", "USD"),
    }


# --- the price book on the pool page ------------------------------------------------------------


def test_the_operator_prices_a_pool_in_eur_and_stops_selling_it_in_usd_on_its_page(
    admin, catalogue, eur_tenant, usd_tenant
):
    pool = catalogue["usd-cheap"]
    usd = pool.prices.get()
    form = pool_form(pool)
    form.update(
        {
            "prices-TOTAL_FORMS": "2",
            "prices-0-DELETE": "on",
            "prices-1-pool": str(pool.pk),
            "prices-1-currency": "EUR",
            "prices-1-price_per_gpu_hour": "0.9000",
        }
    )

    with time_machine.travel(NOW, tick=False):
        response = admin.post(f"/admin/capacity/capacitypool/{pool.pk}/change/", form)

    assert response.status_code == 302
    assert list(pool.prices.values_list("currency", "price_per_gpu_hour")) == [
        ("EUR", Decimal("0.9000"))
    ]
    assert not PoolPrice.objects.filter(pk=usd.pk).exists()
    # the EUR tenant is now offered it first; the USD tenant no longer
    assert [slug for slug, *_ in search(eur_tenant)] == ["usd-cheap", "both", "eur-dear"]
    assert [slug for slug, *_ in search(usd_tenant)] == ["both"]


def test_a_pool_may_have_one_price_per_currency_only(admin, catalogue):
    pool = catalogue["both"]
    form = pool_form(pool)
    form.update(
        {
            "prices-TOTAL_FORMS": "3",
            "prices-2-pool": str(pool.pk),
            "prices-2-currency": "EUR",
            "prices-2-price_per_gpu_hour": "1.0000",
        }
    )

    with time_machine.travel(NOW, tick=False):
        response = admin.post(f"/admin/capacity/capacitypool/{pool.pk}/change/", form)

    assert response.status_code == 200  # shown again with the error
    assert "Please correct the duplicate data for currency" in response.content.decode()
    assert pool.prices.get(currency="EUR").price_per_gpu_hour == Decimal("2.5000")


# --- demo data ----------------------------------------------------------------------------------


def test_the_demo_catalogue_has_offers_for_a_eur_tenant_and_a_pool_sold_in_eur_only():
    call_command("seed_demo", "--no-history", stdout=StringIO())
    call_command("seed_demo", "--no-history", stdout=StringIO())  # twice: nothing added

    euro = TenantFactory(currency="EUR")
    assert [slug for slug, *_ in search(euro)] == [
        "aws-euw1-h100-b",
        "gcp-euw4-h100-a",
        "aws-use1-h100-a",
    ]
    assert list(
        PoolPrice.objects.filter(pool__slug="gcp-euw4-h100-a").values_list("currency", flat=True)
    ) == ["EUR"]
    assert PoolPrice.objects.count() == 27
