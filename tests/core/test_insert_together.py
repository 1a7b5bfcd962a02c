"""``core.db.insert_together``: new rows and their audit-trail rows, as ``save()`` writes them,
in one round trip on PostgreSQL."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from core.db import insert_together
from core.history import HistoricalRecords
from marketplace.models import Placement, Reservation
from tests.factories import CapacityPoolFactory, TenantFactory
from tests.sqlite_helpers import run_on_sqlite

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 1, 8, 30, tzinfo=UTC)
START = datetime(2026, 12, 7, 9, tzinfo=UTC)


class FakeRequest:
    method, path = "POST", "/api/v1/reservations/"

    class auth:  # noqa: N801 - an API key as the request carries it
        prefix = "3f9a0c1b2d4e"

    def __init__(self, tenant_id: int) -> None:
        self.user = type("Principal", (), {"tenant_id": tenant_id, "is_authenticated": True})()


def new_booking(tenant, pool) -> tuple[Reservation, Placement]:
    reservation = Reservation(
        tenant=tenant,
        pool=pool,
        gpu_count=8,
        start=START,
        end=START + timedelta(hours=4),
        capacity_until=START + timedelta(hours=4),
        currency="USD",
        list_price_per_gpu_hour=Decimal("3.0000"),
        unit_price=Decimal("2.8500"),
        total_price=Decimal("91.20"),
        charge=Decimal("91.20"),
        scope={"region": "us-east-1"},
        cancellation_terms=[{"min_notice_hours": 24, "fee_percent": "0.00"}],
        commitment_percent=Decimal("5.00"),
    )
    placement = Placement(
        reservation=reservation, pool=pool, start=reservation.start, end=reservation.end, gpus=8
    )
    return reservation, placement


def stored(reservation: Reservation) -> tuple[dict, list[dict], list[dict]]:
    """The reservation's row, its history and its placements, without ids and stamps."""
    row = Reservation.objects.filter(pk=reservation.pk).values().get()
    history = list(Reservation.history.filter(id=reservation.pk).order_by("history_id").values())
    placements = list(Placement.objects.filter(reservation=reservation).values())
    for values in (row, *history, *placements):
        for name in ("id", "history_id", "reservation_id"):
            values.pop(name, None)
    return row, history, placements


def test_the_rows_are_those_save_writes_with_the_audit_trail_row_of_the_request():
    # given a tenant, a pool and a request made with an API key
    tenant, pool = TenantFactory(), CapacityPoolFactory()
    HistoricalRecords.context.request = FakeRequest(tenant.pk)
    try:
        # when one booking is written by save() and the same booking by insert_together
        with time_machine.travel(NOW, tick=False), transaction.atomic():
            saved, saved_placement = new_booking(tenant, pool)
            saved.save()
            saved_placement.save()
            together, together_placement = new_booking(tenant, pool)
            insert_together(together, together_placement)
    finally:
        del HistoricalRecords.context.request

    # then the rows are the same, the history row names the key, its tenant and the request
    assert stored(together) == stored(saved)
    (history,) = stored(together)[1]
    assert (
        history["history_type"],
        history["history_api_key_prefix"],
        history["history_tenant_id"],
        history["history_change_reason"],
        history["history_date"],
        history["created_at"],
    ) == ("+", "3f9a0c1b2d4e", tenant.pk, "POST /api/v1/reservations/", NOW, NOW)
    # and the instances are saved ones: the placement has its id, a save() is an UPDATE
    assert together_placement.pk == Placement.objects.get(reservation=together).pk
    together.charge = Decimal("0.00")
    together.save(update_fields=["charge"])
    assert Reservation.objects.get(pk=together.pk).charge == Decimal("0.00")


def test_postgresql_writes_them_in_one_statement_and_all_or_nothing():
    tenant, pool = TenantFactory(), CapacityPoolFactory()

    # when a booking, its placement and its history row are inserted together
    reservation, placement = new_booking(tenant, pool)
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        insert_together(reservation, placement)

    # then that is one statement
    assert [q["sql"].split(" ", 1)[0] for q in queries if q["sql"] not in ("BEGIN", "COMMIT")] == [
        "WITH"
    ]
    # and when a row of a call breaks a constraint, none of its rows is written
    again, broken = new_booking(tenant, pool)
    broken.gpus = 0  # placements hold at least one GPU
    with pytest.raises(IntegrityError), transaction.atomic():
        insert_together(again, broken)
    assert not Reservation.objects.filter(pk=again.pk).exists()
    assert not Reservation.history.filter(id=again.pk).exists()


def test_sqlite_writes_the_same_rows_one_statement_each(tmp_path):
    script = """
        import django
        django.setup()
        from datetime import UTC, datetime, timedelta
        from decimal import Decimal
        from django.core.management import call_command
        from django.db import transaction
        from core.db import insert_together
        from marketplace.models import Placement, Reservation
        from tests.factories import CapacityPoolFactory, TenantFactory

        call_command("migrate", verbosity=0)
        tenant, pool = TenantFactory(), CapacityPoolFactory()
        start = datetime(2026, 12, 7, 9, tzinfo=UTC)
        reservation = Reservation(
            tenant=tenant, pool=pool, gpu_count=8, start=start, end=start + timedelta(hours=2),
            capacity_until=start + timedelta(hours=2), currency="USD",
            list_price_per_gpu_hour=Decimal("3"), unit_price=Decimal("3"),
            total_price=Decimal("48"), charge=Decimal("48"), scope={"pool": pool.slug},
        )
        placement = Placement(
            reservation=reservation, pool=pool, start=start, end=reservation.end, gpus=8
        )
        with transaction.atomic():
            insert_together(reservation, placement)
        row = Reservation.objects.get()
        print(row.total_price, row.scope == {"pool": pool.slug}, row.created_at is not None)
        print(placement.pk == Placement.objects.get().pk)
        print(list(Reservation.history.values_list("history_type", "total_price")))
        """
    result = run_on_sqlite(script, tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "48.00 True True",
        "True",
        "[('+', Decimal('48.00'))]",
    ]
