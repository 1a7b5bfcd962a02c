import io
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django_celery_beat.models import PeriodicTask

from billing.models import Invoice
from tests.billing.conftest import at, reserve
from tests.sqlite_helpers import run_on_sqlite


def run_billing(*args: str) -> str:
    out = io.StringIO()
    call_command("run_billing", *args, "--no-progress", stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_run_billing_meters_drafts_and_finalizes_a_month_by_hand(tenant, pool):
    reserve(tenant=tenant, pool=pool, start=at(30, 12), hours=48)

    first = run_billing("--until", "2026-04-01T00:30:00Z")
    with pytest.raises(CommandError, match="may be finalized from 2026-04-03 00:00 UTC"):
        run_billing("--until", "2026-04-01T05:00:00Z", "--finalize", "2026-03")
    forced = run_billing("--until", "2026-04-03T05:00:00Z", "--finalize", "2026-03")

    assert first.splitlines() == [
        "Metered until 2026-04-01T00:00Z: 36 usage records, 0 charges.",
        "Usage corrections: 0 displacement(s) applied.",
        "Drafts built: 1.",
        "Finalized after grace: 0.",
        "SLA credit notes issued: 0.",
    ]
    # the grace period is over: the scheduled finalization issues March before --finalize does
    assert forced.splitlines()[-3:] == [
        "Finalized after grace: 1.",
        "Finalized for 2026-03: 0.",
        "SLA credit notes issued: 0.",
    ]
    assert dict(Invoice.objects.values_list("period_start", "status")) == {
        at(1): "finalized",
        at(1, month=4): "draft",
    }
    assert Invoice.objects.get(status="finalized").total == Decimal("864.00")


@pytest.mark.django_db
def test_run_billing_refuses_a_month_that_has_not_ended(tenant, pool):
    with pytest.raises(CommandError, match="has not ended"):
        run_billing("--until", "2026-03-20T00:00:00Z", "--finalize", "2026-03")
    with pytest.raises(CommandError, match="not a month"):
        run_billing("--finalize", "March")
    with pytest.raises(CommandError, match="ISO 8601"):
        run_billing("--until", "tomorrow")


@pytest.mark.django_db
def test_the_billing_schedule_is_installed_and_editable_in_the_admin():
    tasks = dict(
        PeriodicTask.objects.filter(task__startswith="billing.").values_list(
            "task", "crontab__hour"
        )
    )
    assert tasks == {
        "billing.tasks.meter_usage_task": "*",
        "billing.tasks.draft_invoices_task": "*",
        "billing.tasks.finalize_invoices_task": "1",
        "billing.tasks.suspend_overdue_tenants_task": "2",
    }


def test_billing_runs_on_the_sqlite_development_setup(tmp_path):
    """`make run` uses SQLite and its beat calls the billing tasks: they must work there, the
    usage corrections and SLA credits included."""
    script = """
        import io
        import django
        django.setup()
        from datetime import UTC, datetime
        from decimal import Decimal
        from django.core.management import call_command
        from billing import tasks
        from billing.models import CreditNote, Invoice
        from capacity.models import Incident
        from marketplace.models import Displacement, Placement
        from marketplace.services.booking import BookingRequest, reservation_cancel
        from marketplace.services.booking import reservation_create
        from marketplace.services.tenants import tenant_create

        def at(day, hour, month=3):
            return datetime(2026, month, day, hour, tzinfo=UTC)

        def outage(reservation, start, end):
            # what the marketplace leaves: the placement cut around the hours, the displacement
            incident = Incident.objects.create(pool=reservation.pool, kind="outage", gpus=8,
                                               start=start, end=end)
            placement = Placement.objects.get(reservation=reservation, start__lt=end,
                                              end__gt=start)
            Placement.objects.create(reservation=reservation, pool=placement.pool, start=end,
                                     end=placement.end, gpus=8)
            placement.end = start
            placement.save()
            Displacement.objects.create(incident=incident, reservation=reservation, start=start,
                                        end=end, gpus_taken=8, gpus_lost=8, created_at=start)

        call_command("migrate", verbosity=0)
        call_command("seed_demo", "--no-history", stdout=io.StringIO())
        tenant = tenant_create(name="Smoke", credit_limit=Decimal("100000"))
        def book(start, end):
            request = BookingRequest(gpu_model="h100-sxm-80gb", gpu_count=8, start=start, end=end)
            return reservation_create(
                tenant=tenant, request=request, fingerprint=request.fingerprint(),
                now=at(30, 0),
            )[0]
        kept = book(at(31, 12), at(1, 12, month=4))
        dropped = book(at(31, 0), at(31, 10))
        reservation_cancel(tenant=tenant, reservation_id=dropped.pk, cancelled_by="t",
                           now=datetime(2026, 3, 31, 3, 20, tzinfo=UTC))
        outage(kept, at(31, 14), at(31, 15))  # before metering: never billed
        for _ in range(2):
            print(tasks.meter_usage_task("2026-04-03T01:00:00+00:00"))
            print(tasks.draft_invoices_task("2026-04-03T01:00:00+00:00"))
            print(tasks.finalize_invoices_task("2026-04-03T01:00:00+00:00"))
            if not Displacement.objects.filter(start=at(1, 2, month=4)).exists():
                outage(kept, at(1, 2, month=4), at(1, 4, month=4))  # after: on April's draft
        for invoice in Invoice.objects.order_by("period_start"):
            print(invoice.number, invoice.status, invoice.lines.count(), invoice.total)
        for note in CreditNote.objects.all():
            print(note.number, note.reason, note.amount)
        """
    result = run_on_sqlite(script, tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "{'until': '2026-04-03T01:00:00+00:00', 'usage_created': 27, 'charges_created': 1, "
        "'displacements_corrected': 1, 'failed': []}",
        "{'drafts_built': 2, 'failed': []}",
        "{'finalized': 1, 'sla_credit_notes': 1, 'failed': []}",
        "{'until': '2026-04-03T01:00:00+00:00', 'usage_created': 0, 'charges_created': 0, "
        "'displacements_corrected': 1, 'failed': []}",
        "{'drafts_built': 0, 'failed': []}",
        "{'finalized': 0, 'sla_credit_notes': 0, 'failed': []}",
        # March: 11 of kept's 12 hours (162.80 at 1.85 x 8 GPUs), 4 delivered hours of the
        # cancelled one (59.20) and its fee (44.40); kept delivered 88 of 96 promised
        # GPU-hours (91.7 %): an SLA credit of 100 % of its line
        "INV-2026-000001 finalized 3 266.40",
        "None draft 1 148.00",  # April: 10 of kept's 12 hours, the outage's 2 dropped
        "CN-2026-000001 sla 162.80",
    ]
