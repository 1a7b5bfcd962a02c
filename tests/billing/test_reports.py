from decimal import Decimal

import pytest

from billing.services.invoicing import invoices_draft, invoices_finalize_due
from billing.services.metering import meter_usage
from billing.services.reports import (
    backup_share_report,
    margin_pools_report,
    margin_report,
    utilisation_report,
)
from marketplace.models import Reservation
from tests.billing.conftest import APRIL, MARCH, at, displace, incident_record, reserve
from tests.factories import CapacityPoolFactory


@pytest.fixture
def march_usage(tenant, pool, backup_pool):
    # primary: 8 GPUs x 10 h at 3.00 (cost 2.00); backup: 8 GPUs x 5 h at 2.00 (cost 1.50);
    # and a cancellation fee of 12.00 on the primary pool
    reserve(tenant=tenant, pool=pool, start=at(2), hours=10)
    reserve(tenant=tenant, pool=backup_pool, start=at(2), hours=5, unit_price="2.0000")
    reserve(
        tenant=tenant,
        pool=pool,
        start=at(20),
        hours=4,
        status=Reservation.Status.CANCELLED,
        capacity_until=at(20),
        cancellation_fee=Decimal("12.00"),
        cancelled_at=at(19, 12),
        charge=Decimal("12.00"),
    )
    meter_usage(until=APRIL)


def issue_march_invoices() -> None:
    """March's invoices, issued on 3 April after the grace period."""
    invoices_draft(now=at(3, 1, month=4))
    invoices_finalize_due(now=at(3, 1, month=4))


def margin_rows(**kwargs) -> dict[str, dict[str, object]]:
    report = margin_pools_report(start=MARCH, end=APRIL, **kwargs)
    return {row[2]: dict(zip(report.columns, row, strict=True)) for row in report.rows}


@pytest.mark.django_db
def test_margin_per_provider_pool_and_month(march_usage, pool, backup_pool):
    # Before March is invoiced its usage and fee are not revenue yet, but their cost is.
    drafts = margin_rows()
    assert drafts["aws-h100"]["invoiced_revenue"] == Decimal("0.00")
    assert drafts["aws-h100"]["not_yet_invoiced"] == Decimal("252.00")

    issue_march_invoices()
    report = margin_pools_report(start=MARCH, end=APRIL)

    rows = {row[2]: dict(zip(report.columns, row, strict=True)) for row in report.rows}
    # 32 GPUs x 744 h = 23808 GPU-hours under contract on each pool. Primary: 80 sold at
    # 2.00 = 160.00, 23728 idle at 2.00 = 47456.00; revenue 240.00 usage + 12.00 fee;
    # margin 252.00 - 160.00 - 47456.00 = -47364.00 (-18795.24 % of revenue).
    assert rows["aws-h100"] == {
        "month": "2026-03",
        "provider": pool.region.provider.name,
        "pool": "aws-h100",
        "tier": "primary",
        "currency": "USD",
        "sold_gpu_hours": Decimal("80"),
        "idle_gpu_hours": Decimal("23728"),
        "invoiced_revenue": Decimal("252.00"),
        "credit_notes": Decimal("0.00"),
        "revenue": Decimal("252.00"),
        "sold_cost": Decimal("160.00"),
        "idle_cost": Decimal("47456.00"),
        "margin": Decimal("-47364.00"),
        "margin_percent": Decimal("-18795.24"),
        "not_yet_invoiced": Decimal("0.00"),
        "fx_rates": "",
        "missing_fx_rates": "",
    }
    # Backup: 40 sold at 1.50 = 60.00, 23768 idle at 1.50 = 35652.00; revenue 80.00.
    assert rows["azure-h100-backup"]["revenue"] == Decimal("80.00")
    assert rows["azure-h100-backup"]["idle_cost"] == Decimal("35652.00")
    assert rows["azure-h100-backup"]["margin"] == Decimal("-35632.00")
    assert report.to_csv().splitlines()[0] == ",".join(report.columns)
    # The per-provider report sums a provider's pools (here one pool each).
    by_provider = margin_report(start=MARCH, end=APRIL)
    margin = by_provider.columns.index("margin")
    assert {row[1]: row[margin] for row in by_provider.rows} == {
        pool.region.provider.name: Decimal("-47364.00"),
        backup_pool.region.provider.name: Decimal("-35632.00"),
    }


@pytest.mark.django_db
def test_utilisation_is_sold_over_available_gpu_hours(march_usage, pool, backup_pool):
    # given 8 of the pool's GPUs out for 31 hours of planned maintenance
    incident_record(pool=pool, kind="maintenance", start=at(10), end=at(11, 7))
    idle = CapacityPoolFactory(slug="idle", available_from=at(16), node_count=1)

    report = utilisation_report(start=MARCH, end=APRIL)

    rows = {row[2]: dict(zip(report.columns, row, strict=True)) for row in report.rows}
    # March has 744 hours; 32 GPUs -> 23808 GPU-hours, minus 8 x 31 = 248
    assert rows["aws-h100"]["available_gpu_hours"] == Decimal("23560")
    assert rows["aws-h100"]["sold_gpu_hours"] == Decimal("80")
    assert rows["aws-h100"]["utilisation_percent"] == Decimal("0.34")
    # a pool whose contract starts on 16 March: 16 days x 24 h x 8 GPUs
    assert rows[idle.slug]["available_gpu_hours"] == Decimal("3072")
    assert rows[idle.slug]["utilisation_percent"] == Decimal("0.00")


@pytest.mark.django_db
def test_utilisation_counts_open_incidents_up_to_the_end_of_the_report(march_usage, pool):
    # given 16 of the pool's 32 GPUs out since 30 March 00:00 and still out, a withdrawn
    # recall, and 40 GPUs (more than the pool has) out for 10 hours on 20 March
    incident_record(pool=pool, start=at(30), end=None, gpus=16)
    incident_record(pool=pool, kind="recall", start=at(25), end=at(25), gpus=32)
    incident_record(pool=pool, start=at(20), end=at(20, 10), gpus=40)

    march = utilisation_report(start=MARCH, end=APRIL)
    both = utilisation_report(start=MARCH, end=at(1, month=5))

    # then March loses 16 x 48 GPU-hours to the open one and 32 x 10 to the other
    # (23808 - 768 - 320), and April the whole month at 16 GPUs (23040 - 11520)
    by_month = {(row[0], row[2]): row[6] for row in both.rows}
    assert {row[2]: row[6] for row in march.rows}["aws-h100"] == Decimal("22720")
    assert by_month["2026-03", "aws-h100"] == Decimal("22720")
    assert by_month["2026-04", "aws-h100"] == Decimal("11520")


@pytest.mark.django_db
def test_usage_moved_by_an_incident_counts_on_the_pool_it_ran_on(tenant, pool, backup_pool):
    # given 8 GPUs at 3.00 for 10 hours on the pool, moved to the backup pool for 4 of them
    reservation = reserve(tenant=tenant, pool=pool, start=at(2), hours=10)
    displace(
        reservation,
        incident_record(pool=pool, start=at(2, 2), end=at(2, 6)),
        moved=8,
        to=backup_pool,
    )
    meter_usage(until=APRIL)

    issue_march_invoices()

    margin = margin_rows()
    sold = {row[2]: row[5] for row in utilisation_report(start=MARCH, end=APRIL).rows}

    # then the backup pool sold 32 GPU-hours at the reservation's price and its own cost: the
    # invoice's one line (240.00) is split by where the hours ran, 96.00 and 144.00
    figures = ["sold_gpu_hours", "invoiced_revenue", "sold_cost"]
    assert [margin["azure-h100-backup"][name] for name in figures] == [
        Decimal("32"),
        Decimal("96.00"),
        Decimal("48.00"),
    ]
    assert [margin["aws-h100"][name] for name in figures] == [
        Decimal("48"),
        Decimal("144.00"),
        Decimal("96.00"),
    ]
    assert sold == {"aws-h100": Decimal("48"), "azure-h100-backup": Decimal("32")}


@pytest.mark.django_db
def test_share_of_revenue_from_backup_capacity(march_usage):
    report = backup_share_report(start=MARCH, end=APRIL)

    assert report.rows == [
        ["2026-03", "USD", Decimal("320.00"), Decimal("80.00"), Decimal("25.00")]
    ]
