"""The margin report against figures worked out by hand: revenue net of credit notes and void
invoices, the provider cost of sold and of idle contracted capacity at the rate in force at
the hour, converted to the reporting currency with the FX table, which rates it used, and what
it says when a rate is missing."""

from datetime import date
from decimal import Decimal

import pytest
from django.urls import reverse

from billing.models import FxRate, Invoice
from billing.services.credit_notes import credit_note_create
from billing.services.invoicing import invoice_void, invoices_draft, invoices_finalize_due
from billing.services.metering import meter_usage
from billing.services.reports import margin_pools_report, margin_report
from capacity.models import PoolCostRate
from tests.admin_helpers import rows
from tests.billing.conftest import APRIL, MARCH, at, incident_record, reserve
from tests.factories import CapacityPoolFactory, ProviderFactory, RegionFactory, TenantFactory

# Invoices of March are issued on 3 April, 01:00 (after the two-day grace period).
ISSUED_AT = at(3, 1, month=4)


def issue_march_invoices() -> None:
    invoices_draft(now=ISSUED_AT)
    invoices_finalize_due(now=ISSUED_AT)


def by_pool(report) -> dict[str, dict[str, object]]:
    return {row[2]: dict(zip(report.columns, row, strict=True)) for row in report.rows}


@pytest.fixture(autouse=True)
def _usd_reporting(settings):
    settings.REPORTING_CURRENCY = "USD"


@pytest.fixture
def provider():
    return ProviderFactory(name="Lambda Cloud", slug="lambda")


@pytest.fixture
def sold_pool(provider):
    # 8 GPUs (one node) bought at 2.00 USD per GPU-hour, under contract all of March
    return CapacityPoolFactory(
        slug="sold",
        region=RegionFactory(provider=provider),
        node_count=1,
        cost_per_gpu_hour=Decimal("2.0000"),
    )


@pytest.fixture
def idle_pool(provider):
    # 8 GPUs under contract from 16 March 00:00, nothing sold on them; what we pay the
    # provider is 1.00 from the start of the contract and 1.50 from 20 March, 12:00
    pool = CapacityPoolFactory(
        slug="idle",
        region=RegionFactory(provider=provider),
        node_count=1,
        available_from=at(16),
        cost_per_gpu_hour=Decimal("1.5000"),
    )
    PoolCostRate.objects.update_or_create(
        pool=pool, effective_from=at(16), defaults={"cost_per_gpu_hour": Decimal(1)}
    )
    PoolCostRate.objects.create(
        pool=pool, effective_from=at(20, 12), cost_per_gpu_hour=Decimal("1.5")
    )
    return pool


@pytest.fixture
def march(sold_pool, idle_pool):
    """March on the two pools:

    (a) Acme (USD, 20 % tax): 8 GPUs x 10 h at 3.00 on 2 March = 240.00 net, 288.00 with tax;
        a credit note of 36.00 (tax included) on 10 April;
    (b) Globex (USD): 8 GPUs x 5 h at 3.00 on 3 March = 120.00, invoice voided on 5 April;
    (c) the idle pool, with an outage of all its GPUs for a day on 25 March;
    (d) Euro GmbH (EUR): 8 GPUs x 4 h at 2.50 EUR on 4 March = 80.00 EUR; EUR is worth
        1.05 USD from 1 February, 1.10 from 1 April and 1.30 from 10 April;
    and Acme's 8 GPUs x 2 h on 31 March 10:00 metered after March was invoiced: late usage,
    on April's draft, not invoiced yet."""
    acme = TenantFactory(name="Acme AI", slug="acme", tax_rate_percent=Decimal(20))
    globex = TenantFactory(name="Globex", slug="globex")
    euro = TenantFactory(name="Euro GmbH", slug="euro", currency="EUR")
    for effective_from, rate in [
        (date(2026, 2, 1), "1.05"),
        (date(2026, 4, 1), "1.10"),
        (date(2026, 4, 10), "1.30"),
    ]:
        FxRate.objects.create(
            currency="EUR", effective_from=effective_from, rate=Decimal(rate), source="ECB"
        )
    reserve(tenant=acme, pool=sold_pool, start=at(2, 10), hours=10)
    reserve(tenant=globex, pool=sold_pool, start=at(3), hours=5)
    reserve(tenant=euro, pool=sold_pool, start=at(4), hours=4, unit_price="2.5000", currency="EUR")
    incident_record(pool=idle_pool, start=at(25), end=at(26))
    meter_usage(until=APRIL)
    issue_march_invoices()

    acme_march = Invoice.objects.get(tenant=acme)
    credit_note_create(
        invoice_id=acme_march.pk, amount=Decimal("36.00"), reason="sla", now=at(10, month=4)
    )
    invoice_void(
        invoice_id=Invoice.objects.get(tenant=globex).pk, reason="test", now=at(5, month=4)
    )
    reserve(tenant=acme, pool=sold_pool, start=at(31, 10), hours=2)
    meter_usage(until=APRIL)
    invoices_draft(now=at(10, month=4))
    return acme_march


@pytest.mark.django_db
def test_the_margin_of_a_month_matches_the_figures_worked_out_by_hand(march):
    assert march.total == Decimal("288.00")  # 240.00 + 20 % tax
    assert Invoice.objects.get(tenant__slug="acme", period_start=APRIL).status == "draft"

    report = margin_pools_report(start=MARCH, end=APRIL)
    rows = by_pool(report)

    # Sold pool: 8 GPUs x 744 h = 5952 GPU-hours under contract in March.
    # Sold: 80 (Acme) + 40 (Globex, void) + 32 (Euro) + 16 (Acme, late) = 168 GPU-hours,
    # at 2.00 = 336.00. Idle: 5952 - 168 = 5784 GPU-hours at 2.00 = 11568.00.
    # Invoiced: Acme 240.00 net of tax + Euro 80.00 EUR x 1.10 (the rate in force on
    # 3 April, the invoice's date) = 88.00; Globex's invoice is void: 0. 240 + 88 = 328.00.
    # Credit note net of tax: 36.00 x 240.00 / 288.00 = 30.00. Revenue 328 - 30 = 298.00.
    # Margin: 298.00 - 336.00 - 11568.00 = -11606.00; percent -11606 / 298 = -3894.63 %.
    # Not yet invoiced: Acme's late 16 GPU-hours at 3.00 = 48.00.
    assert rows["sold"] == {
        "month": "2026-03",
        "provider": "Lambda Cloud",
        "pool": "sold",
        "tier": "primary",
        "currency": "USD",
        "sold_gpu_hours": Decimal(168),
        "idle_gpu_hours": Decimal(5784),
        "invoiced_revenue": Decimal("328.00"),
        "credit_notes": Decimal("30.00"),
        "revenue": Decimal("298.00"),
        "sold_cost": Decimal("336.00"),
        "idle_cost": Decimal("11568.00"),
        "margin": Decimal("-11606.00"),
        "margin_percent": Decimal("-3894.63"),
        "not_yet_invoiced": Decimal("48.00"),
        "fx_rates": "EUR 1.1 from 2026-04-01",
        "missing_fx_rates": "",
    }
    # Idle pool: 16 days x 24 h x 8 GPUs = 3072 GPU-hours, none sold; the outage on 25 March
    # changes nothing (the provider is paid for the contract).
    # 16 March 00:00 to 20 March 12:00: 108 h x 8 = 864 GPU-hours at 1.00 = 864.00;
    # 20 March 12:00 to 1 April: 276 h x 8 = 2208 GPU-hours at 1.50 = 3312.00; 4176.00.
    assert rows["idle"] == {
        "month": "2026-03",
        "provider": "Lambda Cloud",
        "pool": "idle",
        "tier": "primary",
        "currency": "USD",
        "sold_gpu_hours": Decimal(0),
        "idle_gpu_hours": Decimal(3072),
        "invoiced_revenue": Decimal("0.00"),
        "credit_notes": Decimal("0.00"),
        "revenue": Decimal("0.00"),
        "sold_cost": Decimal("0.00"),
        "idle_cost": Decimal("4176.00"),
        "margin": Decimal("-4176.00"),
        "margin_percent": None,
        "not_yet_invoiced": Decimal("0.00"),
        "fx_rates": "",
        "missing_fx_rates": "",
    }
    assert report.notes == ("Rate used: 1 EUR = 1.1 USD from 2026-04-01 (ECB).",)

    # The provider's row is the sum of its pools: idle 5784 + 3072 = 8856 GPU-hours,
    # 11568.00 + 4176.00 = 15744.00; margin 298.00 - 336.00 - 15744.00 = -15782.00.
    provider = margin_report(start=MARCH, end=APRIL)
    assert provider.rows == [
        [
            "2026-03",
            "Lambda Cloud",
            "USD",
            Decimal(168),
            Decimal(8856),
            Decimal("328.00"),
            Decimal("30.00"),
            Decimal("298.00"),
            Decimal("336.00"),
            Decimal("15744.00"),
            Decimal("-15782.00"),
            Decimal("-5295.97"),  # -15782 / 298
            Decimal("48.00"),
            "EUR 1.1 from 2026-04-01",
            "",
        ]
    ]
    assert provider.to_csv().splitlines()[1] == (
        "2026-03,Lambda Cloud,USD,168,8856,328.00,30.00,298.00,336.00,15744.00,-15782.00,"
        "-5295.97,48.00,EUR 1.1 from 2026-04-01,"
    )


@pytest.mark.django_db
def test_idle_hours_are_counted_only_as_far_as_metering_has_run(sold_pool):
    # Metering has reached 11 March 00:00: 10 days x 24 h x 8 GPUs = 1920 GPU-hours idle at 2.00
    meter_usage(until=at(11))

    row = by_pool(margin_pools_report(start=MARCH, end=APRIL))["sold"]

    assert (row["idle_gpu_hours"], row["idle_cost"]) == (Decimal(1920), Decimal("3840.00"))


@pytest.mark.django_db
def test_a_missing_rate_is_named_and_nothing_is_converted_at_a_guess(sold_pool):
    # a GBP tenant, 8 GPUs x 1 h at 3.00 GBP = 24.00 GBP invoiced on 3 April; the only GBP
    # rate starts on 4 April
    pounds = TenantFactory(name="Pounds Ltd", slug="pounds", currency="GBP")
    FxRate.objects.create(currency="GBP", effective_from=date(2026, 4, 4), rate=Decimal("1.25"))
    reserve(tenant=pounds, pool=sold_pool, start=at(2), hours=1, currency="GBP")
    meter_usage(until=APRIL)
    issue_march_invoices()

    report = margin_pools_report(start=MARCH, end=APRIL)
    row = by_pool(report)["sold"]

    # The revenue and the margin are left blank; the costs (USD) are still known:
    # sold 8 x 2.00 = 16.00, idle (5952 - 8) x 2.00 = 11888.00.
    assert row["invoiced_revenue"] is None
    assert row["revenue"] is None
    assert row["margin"] is None
    assert row["margin_percent"] is None
    assert (row["sold_cost"], row["idle_cost"]) == (Decimal("16.00"), Decimal("11888.00"))
    assert row["missing_fx_rates"] == "GBP 2026-04-03"
    assert report.notes == (
        "Missing rate: no GBP rate in force on 2026-04-03. 24.00 GBP of invoiced revenue not "
        "converted; the figures that include it are left blank.",
    )
    assert report.to_csv().splitlines()[1].startswith("2026-03,Lambda Cloud,sold,primary,USD,8,")

    # Once the operator adds a rate in force that day, the report converts with it.
    FxRate.objects.create(currency="GBP", effective_from=date(2026, 3, 1), rate=Decimal("1.27"))
    row = by_pool(margin_pools_report(start=MARCH, end=APRIL))["sold"]
    assert row["invoiced_revenue"] == Decimal("30.48")  # 24.00 x 1.27
    assert row["fx_rates"] == "GBP 1.27 from 2026-03-01"
    assert row["missing_fx_rates"] == ""


@pytest.mark.django_db
def test_costs_in_another_currency_are_converted_at_the_delivery_date(provider, settings):
    # a EUR-costed pool (8 GPUs at 1.00 EUR) with nothing sold, 1 to 10 March; the report in
    # EUR needs no rate for it, the report in USD converts at 1.05 (from 1 February) up to
    # 5 March and 1.15 from 6 March: 5 days x 192 GPU-hours x 1.05 + 5 x 192 x 1.15
    CapacityPoolFactory(
        slug="eur-pool",
        region=RegionFactory(provider=provider),
        node_count=1,
        currency="EUR",
        cost_per_gpu_hour=Decimal(1),
        available_from=MARCH,
        available_until=at(11),
    )
    FxRate.objects.create(currency="EUR", effective_from=date(2026, 2, 1), rate=Decimal("1.05"))
    FxRate.objects.create(currency="EUR", effective_from=date(2026, 3, 6), rate=Decimal("1.15"))
    meter_usage(until=APRIL)

    in_usd = by_pool(margin_pools_report(start=MARCH, end=APRIL))["eur-pool"]
    settings.REPORTING_CURRENCY = "EUR"
    in_eur = by_pool(margin_pools_report(start=MARCH, end=APRIL))["eur-pool"]

    assert in_usd["idle_cost"] == Decimal("2112.00")  # 1008.00 + 1104.00
    assert in_usd["fx_rates"] == "EUR 1.05 from 2026-02-01; EUR 1.15 from 2026-03-06"
    assert (in_eur["currency"], in_eur["idle_cost"], in_eur["fx_rates"]) == (
        "EUR",
        Decimal("1920.00"),
        "",
    )


@pytest.mark.django_db
def test_the_reports_page_names_the_rates_used(admin_client, march):
    page = admin_client.get(
        reverse("admin:billing_revenuereport_changelist") + "?from=2026-03&to=2026-03"
    )

    assert page.status_code == 200
    assert "Rate used: 1 EUR = 1.1 USD from 2026-04-01 (ECB)." in page.content.decode()
    csv = admin_client.get(
        reverse("admin:billing_revenuereport_csv", args=["margin-pools"]) + "?from=2026-03"
    )
    assert csv.content.decode().splitlines()[0].endswith(",fx_rates,missing_fx_rates")


@pytest.mark.django_db
def test_operators_keep_the_fx_rates_in_the_admin(admin_client):
    FxRate.objects.create(currency="EUR", effective_from=date(2026, 3, 1), rate=Decimal("1.08"))
    FxRate.objects.create(currency="GBP", effective_from=date(2026, 4, 1), rate=Decimal("1.27"))
    add = reverse("admin:billing_fxrate_add")

    saved = admin_client.post(
        add, {"currency": "EUR", "effective_from": "2026-04-01", "rate": "1.1", "source": "ECB"}
    )
    not_positive = admin_client.post(
        add, {"currency": "CHF", "effective_from": "2026-04-01", "rate": "0"}
    )
    reporting = admin_client.post(
        add, {"currency": "USD", "effective_from": "2026-04-01", "rate": "1"}
    )
    twice = admin_client.post(add, {"currency": "EUR", "effective_from": "2026-03-01", "rate": "2"})

    assert saved.status_code == 302
    for refused in (not_positive, reporting, twice):
        assert refused.status_code == 200
        assert "errornote" in refused.content.decode()
    assert "USD is the reporting currency" in reporting.content.decode()
    # newest first
    assert [
        (row["currency"], row["effective_from"])
        for row in rows(admin_client.get(reverse("admin:billing_fxrate_changelist")))
    ] == [
        ("EUR", "April 1, 2026"),
        ("GBP", "April 1, 2026"),
        ("EUR", "March 1, 2026"),
    ]
