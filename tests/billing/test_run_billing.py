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
    forced = run_billing("--until", "2026-04-01T05:00:00Z", "--finalize", "2026-03")

    assert first.splitlines() == [
        "Metered until 2026-04-01T00:00Z: 36 usage records, 0 charges.",
        "Drafts built: 1.",
        "Finalized after grace: 0.",
    ]
    assert forced.splitlines()[-1] == "Finalized for 2026-03: 1."
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
    }


def test_billing_runs_on_the_sqlite_development_setup(tmp_path):
    """`make run` uses SQLite and its beat calls the billing tasks: they must work there."""
    script = """
        import io
        import django
        django.setup()
        from datetime import UTC, datetime
        from decimal import Decimal
        from django.core.management import call_command
        from billing import tasks
        from billing.models import Invoice
        from capacity.models import MaintenanceWindow
        from marketplace.services.booking import BookingRequest, reservation_cancel
        from marketplace.services.booking import reservation_create
        from marketplace.services.tenants import tenant_create

        call_command("migrate", verbosity=0)
        call_command("seed_demo", stdout=io.StringIO())
        tenant = tenant_create(name="Smoke", credit_limit=Decimal("100000"))
        def book(start, end):
            request = BookingRequest(gpu_model="h100-sxm-80gb", gpu_count=8, start=start, end=end)
            return reservation_create(
                tenant=tenant, request=request, fingerprint=request.fingerprint(),
                now=datetime(2026, 3, 30, tzinfo=UTC),
            )[0]
        kept = book(datetime(2026, 3, 31, 12, tzinfo=UTC), datetime(2026, 4, 1, 12, tzinfo=UTC))
        dropped = book(datetime(2026, 3, 31, tzinfo=UTC), datetime(2026, 3, 31, 10, tzinfo=UTC))
        reservation_cancel(tenant=tenant, reservation_id=dropped.pk, cancelled_by="t",
                           now=datetime(2026, 3, 31, 3, 20, tzinfo=UTC))
        MaintenanceWindow.objects.create(pool=kept.pool, kind="outage", gpus=8,
            start=datetime(2026, 3, 31, 14, tzinfo=UTC), end=datetime(2026, 3, 31, 15, tzinfo=UTC))
        for _ in range(2):
            print(tasks.meter_usage_task("2026-04-03T01:00:00+00:00"))
            print(tasks.draft_invoices_task("2026-04-03T01:00:00+00:00"))
            print(tasks.finalize_invoices_task("2026-04-03T01:00:00+00:00"))
        for invoice in Invoice.objects.order_by("period_start"):
            print(invoice.number, invoice.status, invoice.lines.count())
        """
    result = run_on_sqlite(script, tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "{'until': '2026-04-03T01:00:00+00:00', 'usage_created': 27, 'charges_created': 1}",
        "{'drafts_built': 2, 'failed': []}",
        "{'finalized': 1, 'failed': []}",
        "{'until': '2026-04-03T01:00:00+00:00', 'usage_created': 0, 'charges_created': 0}",
        "{'drafts_built': 0, 'failed': []}",
        "{'finalized': 0, 'failed': []}",
        "INV-2026-000001 finalized 3",
        "None draft 1",
    ]
