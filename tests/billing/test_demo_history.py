"""`manage.py seed_demo` creates about three months of history through the services: what
the operators' reports and dashboards show has data, the books balance, and a second run
changes nothing. The history is seeded once for the module (it takes seconds), as of a fixed
day."""

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command
from django.db import transaction
from django.db.models import Count, Q, Sum

from billing import selectors
from billing.models import (
    CreditNote,
    FxRate,
    Invoice,
    InvoiceLine,
    LedgerEntry,
    Payment,
    SlaCredit,
    UsageRecord,
)
from billing.services.reports import reports_build
from capacity.models import CapacityPool, GpuModel, Incident, PoolHour, Provider
from events.models import Delivery, DeliveryAttempt, Event, WebhookEndpoint
from marketplace.demo_history import TENANTS
from marketplace.models import Displacement, Placement, Reservation, Tenant
from tests.db_helpers import restore_default_policies

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
CUTOFF = datetime(2026, 11, 23, tzinfo=UTC)
SLUGS = [spec.slug for spec in TENANTS]
MODELS = (
    Tenant,
    Reservation,
    Placement,
    Displacement,
    Incident,
    PoolHour,
    UsageRecord,
    Invoice,
    InvoiceLine,
    CreditNote,
    Payment,
    LedgerEntry,
    SlaCredit,
    FxRate,
    Event,
    Delivery,
    DeliveryAttempt,
    WebhookEndpoint,
)


def _snapshot() -> dict[str, list]:
    return {
        model.__name__: sorted(map(str, model.objects.values_list("pk", flat=True)))
        for model in MODELS
    }


@pytest.fixture(scope="module")
def seeded(django_db_setup, django_db_blocker):
    """The seed, once, in a transaction rolled back after the module's tests; yields what the
    command printed the first and the second time and the rows after each run."""
    with django_db_blocker.unblock(), transaction.atomic():
        restore_default_policies()  # an earlier transactional test may have emptied them
        with time_machine.travel(NOW, tick=True):
            first, second = StringIO(), StringIO()
            call_command("seed_demo", stdout=first)
            after_first = _snapshot()
            call_command("seed_demo", stdout=second)
            after_second = _snapshot()
        yield first.getvalue(), second.getvalue(), after_first, after_second
        transaction.set_rollback(True)


@pytest.fixture
def demo(seeded, db):
    return seeded


def test_the_demo_has_tenants_in_two_currencies_booking_every_provider_and_gpu_model(demo):
    tenants = Tenant.objects.filter(slug__in=SLUGS)
    assert dict(tenants.values_list("slug", "currency")) == {
        "orbital-robotics": "USD",
        "helix-bio": "USD",
        "kestrel-ai": "USD",
        "nordlicht-labs": "EUR",
        "atelier-vision": "EUR",
    }
    placed = Placement.objects.filter(reservation__tenant__in=tenants)
    assert set(placed.values_list("pool__region__provider__slug", flat=True)) == set(
        Provider.objects.values_list("slug", flat=True)
    )
    assert set(placed.values_list("pool__gpu_model__slug", flat=True)) == set(
        GpuModel.objects.values_list("slug", flat=True)
    )
    assert set(placed.values_list("pool__slug", flat=True)) == set(
        CapacityPool.objects.values_list("slug", flat=True)
    )
    reservations = Reservation.objects.filter(tenant__in=tenants)
    assert reservations.count() == 229
    assert dict(reservations.values_list("status").annotate(n=Count("pk")).order_by()) == {
        "active": 6,
        "cancelled": 3,
        "completed": 179,
        "confirmed": 40,
        "expired": 1,
    }
    assert (
        reservations.filter(start__gte=CUTOFF, start__lt=CUTOFF + timedelta(days=30)).count() == 40
    )
    assert reservations.filter(start__lt=CUTOFF - timedelta(days=80)).exists()
    assert reservations.filter(cancellation_fee__gt=0).count() == 2
    assert not reservations.filter(end__gt=CUTOFF + timedelta(days=31)).exists()


def test_the_demo_has_invoices_paid_overdue_credited_and_an_sla_credit(demo):
    invoices = Invoice.objects.filter(tenant__slug__in=SLUGS)
    assert dict(invoices.values_list("status").annotate(n=Count("pk")).order_by()) == {
        "draft": 5,
        "finalized": 3,
        "paid": 12,
    }
    assert set(invoices.values_list("currency", flat=True)) == {"USD", "EUR"}
    overdue = selectors.with_settlement(invoices.filter(status="finalized")).filter(
        amount_due__gt=0, due_at__lt=CUTOFF
    )
    assert [(i.tenant.slug, i.period_start) for i in overdue] == [
        ("kestrel-ai", datetime(2026, 9, 1, tzinfo=UTC))
    ]
    assert Payment.objects.filter(method="transfer").count() == 9
    assert invoices.filter(tenant__slug="nordlicht-labs", prepaid_applied__gt=0).exists()
    assert sorted(CreditNote.objects.values_list("reason", flat=True)) == ["goodwill", "sla"]
    assert SlaCredit.objects.filter(amount__gt=0).count() == 1
    assert FxRate.objects.filter(currency="EUR").count() == 4


def test_the_demo_has_an_outage_that_moved_a_reservation_a_recall_and_open_incidents(demo):
    outage = Incident.objects.get(kind="outage", pool__slug="cw-use04-h100-a")
    moved = Displacement.objects.filter(incident=outage, gpus_moved__gt=0)
    assert moved.count() == 1
    # found three hours late: those hours are lost (an SLA credit), the rest moved
    assert Displacement.objects.filter(incident=outage, gpus_lost__gt=0).count() == 1
    recall = Incident.objects.get(kind="recall")
    assert not recall.short_notice
    assert Displacement.objects.filter(incident=recall).exists()
    still_open = Incident.objects.filter(closed_at__isnull=True).filter(
        Q(end__isnull=True) | Q(end__gt=CUTOFF)
    )
    assert sorted(still_open.values_list("kind", flat=True)) == ["maintenance", "outage"]
    assert CapacityPool.objects.filter(available_until__lt=CUTOFF + timedelta(days=90)).count() == 2


def test_the_failing_endpoint_has_failed_deliveries_and_the_receiver_took_everything(demo):
    failing = WebhookEndpoint.objects.get(url__startswith="http://127.0.0.1:9/")
    assert failing.enabled
    assert failing.failing_since is not None
    assert Delivery.objects.filter(endpoint=failing, status="failed").count() == 4
    assert not Delivery.objects.filter(endpoint=failing, status="succeeded").exists()
    receiver = WebhookEndpoint.objects.exclude(pk=failing.pk).get()
    assert receiver.failing_since is None
    assert set(Delivery.objects.filter(endpoint=receiver).values_list("status", flat=True)) == {
        "succeeded"
    }


def test_the_books_balance(demo):
    # the capacity ledger is what the placements imply, pool by pool and hour by hour
    implied: dict[tuple[int, datetime], int] = defaultdict(int)
    for pool_id, start, end, gpus in Placement.objects.values_list(
        "pool_id", "start", "end", "gpus"
    ):
        hour = start
        while hour < end:
            implied[pool_id, hour] += gpus
            hour += timedelta(hours=1)
    booked = {
        (pool_id, hour): n
        for pool_id, hour, n in PoolHour.objects.filter(booked__gt=0).values_list(
            "pool_id", "hour", "booked"
        )
    }
    assert booked == {key: gpus for key, gpus in implied.items() if gpus}
    # each invoice's figures are the sums of its lines
    for invoice in Invoice.objects.filter(tenant__slug__in=SLUGS).prefetch_related("lines"):
        lines = list(invoice.lines.all())
        assert invoice.subtotal == sum((line.gross_amount for line in lines), Decimal(0))
        assert invoice.discount_total == sum((line.discount_amount for line in lines), Decimal(0))
        assert invoice.total == invoice.subtotal - invoice.discount_total + invoice.tax_amount
    # the ledger: issued invoices charged, payments, credit notes and top-ups credited
    for tenant in Tenant.objects.filter(slug__in=SLUGS):
        entries = LedgerEntry.objects.filter(tenant=tenant)
        issued = Invoice.objects.filter(tenant=tenant, status__in=["finalized", "paid"])
        expected = (
            -(issued.aggregate(s=Sum("total"))["s"] or 0)
            + (
                Payment.objects.filter(tenant=tenant, method="transfer").aggregate(s=Sum("amount"))[
                    "s"
                ]
                or 0
            )
            + (CreditNote.objects.filter(tenant=tenant).aggregate(s=Sum("amount"))["s"] or 0)
            + (entries.filter(kind="top_up").aggregate(s=Sum("amount"))["s"] or 0)
        )
        assert entries.aggregate(s=Sum("amount"))["s"] == expected
        balance = selectors.balance_get(tenant=tenant, now=CUTOFF)
        assert balance.ledger_balance == expected


def test_the_revenue_and_utilisation_reports_have_the_past_months(demo):
    reports = reports_build(start=datetime(2026, 8, 1, tzinfo=UTC), end=CUTOFF)
    assert reports
    assert all(report.rows for report in reports)
    margin = next(report for report in reports if report.slug == "margin")
    revenue = [i for i, column in enumerate(margin.columns) if "revenue" in column.lower()]
    assert revenue
    assert all(row[i] is not None for row in margin.rows for i in revenue)  # EUR converted


def test_seed_demo_prints_the_history_once_and_a_second_run_changes_nothing(demo):
    first, second, after_first, after_second = demo
    assert (
        "Demo history 2026-08-01 to 2026-11-23: 5 tenants (USD and EUR), 229 reservations" in first
    )
    assert "Demo history already present" in second
    assert after_second == after_first
