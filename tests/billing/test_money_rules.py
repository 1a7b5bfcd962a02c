"""Money rules of billing: never the future, and a reservation's invoice lines add up to it.

* Metering stops at the last whole hour: ``meter_usage`` and ``run_billing --until`` refuse an
  instant after now and meter nothing.
* A month is finalized once its end plus BILLING_GRACE_DAYS has passed, by the service, the
  operator's ``--finalize`` and the single-invoice finalization alike.
* A reservation is rounded once over all its invoices: the month that ends it takes the
  remainder, so its lines add up to its total (unit 1.6650, 3 h in January and 1 h in February
  bill 5.00 + 1.66 = 6.66, the quoted total, not 5.00 + 1.67).

Reservations are written straight to the database (conftest.reserve); the clock is moved to
the instant each run happens at."""

import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core.management import CommandError, call_command

from billing.errors import PeriodNotEnded, UntilInFuture
from billing.models import Invoice, InvoiceLine, MeteringCursor, UsageRecord
from billing.services.invoicing import (
    invoice_finalize,
    invoice_void,
    invoices_draft,
    invoices_finalize_due,
    invoices_finalize_month,
)
from billing.services.metering import meter_usage
from core.timeutils import HOUR
from marketplace.models import Reservation
from tests.billing.conftest import MARCH, at, reserve

pytestmark = pytest.mark.django_db

JANUARY = datetime(2026, 1, 1, tzinfo=UTC)
FEBRUARY = datetime(2026, 2, 1, tzinfo=UTC)
CLOCK = at(10, 12, month=3)  # 10 March 2026 12:00, "now" in the tests of the future


def run_billing(*args: str) -> str:
    out = io.StringIO()
    call_command("run_billing", *args, "--no-progress", stdout=out)
    return out.getvalue()


def bill_at(moment: datetime) -> None:
    """The hourly runs at ``moment``: meter up to it, then build the drafts."""
    with time_machine.travel(moment, tick=False):
        meter_usage(until=moment)
        invoices_draft(now=moment)


def usage_lines(reservation: Reservation) -> list[tuple[datetime, Decimal, Decimal, Decimal]]:
    """(period, gross, discount, amount) of the reservation's usage lines, oldest first."""
    return list(
        InvoiceLine.objects.filter(reservation=reservation, kind=InvoiceLine.Kind.USAGE)
        .order_by("invoice__period_start")
        .values_list("invoice__period_start", "gross_amount", "discount_amount", "amount")
    )


def billed(reservation: Reservation) -> Decimal:
    return sum((line[3] for line in usage_lines(reservation)), Decimal("0.00"))


# --- never the future --------------------------------------------------------------------------


def test_run_billing_until_tomorrow_fails_with_a_clear_message_and_meters_nothing(tenant, pool):
    # given a reservation delivering hours since this morning
    reserve(tenant=tenant, pool=pool, start=at(10, 0), hours=48)
    tomorrow = CLOCK + timedelta(days=1)

    # when billing is run by hand until tomorrow
    with time_machine.travel(CLOCK, tick=False), pytest.raises(CommandError) as error:
        run_billing("--until", tomorrow.isoformat())

    # then the command fails (non-zero exit) naming the instant, and nothing was metered,
    # drafted or moved
    message = str(error.value)
    assert "is in the future" in message
    assert "2026-03-11T12:00:00+00:00" in message
    assert not UsageRecord.objects.exists()
    assert not Invoice.objects.exists()
    assert not MeteringCursor.objects.filter(metered_until__isnull=False).exists()


def test_run_billing_without_until_meters_up_to_the_last_whole_hour(tenant, pool):
    reserve(tenant=tenant, pool=pool, start=at(10, 0), hours=48)

    with time_machine.travel(CLOCK + timedelta(minutes=40), tick=False):
        out = run_billing()

    assert out.splitlines()[0] == "Metered until 2026-03-10T12:00Z: 12 usage records, 0 charges."


def test_meter_usage_refuses_an_until_after_now(tenant, pool):
    reserve(tenant=tenant, pool=pool, start=at(10, 0), hours=48)

    with time_machine.travel(CLOCK, tick=False):
        with pytest.raises(UntilInFuture) as error:
            meter_usage(until=CLOCK + timedelta(seconds=1))
        # now itself (and the default, now) is fine: the last whole hour
        at_now = meter_usage(until=CLOCK)
        by_default = meter_usage()

    assert (error.value.code, error.value.status_code) == ("until_in_future", 400)
    assert "2026-03-10T12:00:01+00:00" in error.value.detail
    assert error.value.extra["until"] == "2026-03-10T12:00:01+00:00"
    assert (at_now.until, at_now.usage_created) == (CLOCK, 12)
    assert (by_default.until, by_default.usage_created) == (CLOCK, 0)


def test_the_metering_task_refuses_an_until_in_the_future(tenant, pool):
    from billing.tasks import meter_usage_task

    reserve(tenant=tenant, pool=pool, start=at(10, 0), hours=48)

    with time_machine.travel(CLOCK, tick=False), pytest.raises(UntilInFuture):
        meter_usage_task(until=(CLOCK + HOUR).isoformat())
    assert not UsageRecord.objects.exists()


def test_a_month_is_not_finalized_before_its_end_plus_the_grace_period(tenant, pool):
    # given a March draft
    reserve(tenant=tenant, pool=pool, start=at(2), hours=10)
    bill_at(at(10))
    draft = Invoice.objects.get()
    in_grace = at(2, 23, month=4)  # March ended 47 hours ago; 2 days of grace

    # when it is finalized during the grace period, by month or on its own
    with pytest.raises(PeriodNotEnded) as by_month:
        invoices_finalize_month(period_start=MARCH, now=in_grace)
    with pytest.raises(PeriodNotEnded) as alone:
        invoice_finalize(invoice_id=draft.pk, now=in_grace)

    # then both are refused, saying from when it may be, and the draft stays a draft
    for error in (by_month, alone):
        assert error.value.code == "period_not_ended"
        assert "may be finalized from 2026-04-03 00:00 UTC" in error.value.detail
        assert error.value.extra["finalizable_from"] == "2026-04-03T00:00:00+00:00"
    draft.refresh_from_db()
    assert draft.status == Invoice.Status.DRAFT

    # and once the grace period is over it is finalized
    assert invoices_finalize_month(period_start=MARCH, now=at(3, month=4)).done == 1


def test_the_grace_period_follows_the_setting(tenant, pool, settings):
    settings.BILLING_GRACE_DAYS = 5
    reserve(tenant=tenant, pool=pool, start=at(2), hours=10)
    bill_at(at(10))

    with pytest.raises(PeriodNotEnded, match="from 2026-04-06 00:00 UTC"):
        invoices_finalize_month(period_start=MARCH, now=at(5, 23, month=4))
    with pytest.raises(PeriodNotEnded, match="has not ended yet"):
        invoices_finalize_month(period_start=MARCH, now=at(31, 23))
    assert invoices_finalize_month(period_start=MARCH, now=at(6, month=4)).done == 1


def test_run_billing_refuses_to_finalize_a_month_in_its_grace_period(tenant, pool):
    reserve(tenant=tenant, pool=pool, start=at(2), hours=10)

    with pytest.raises(CommandError, match="may be finalized from 2026-04-03 00:00 UTC"):
        run_billing("--until", "2026-04-02T12:00:00Z", "--finalize", "2026-03")

    assert Invoice.objects.get().status == Invoice.Status.DRAFT


# --- a reservation's lines add up to its total -------------------------------------------------


def test_a_reservation_split_over_two_months_bills_its_quoted_total(tenant, pool):
    # given 1 GPU at 1.6650 from 31 January 21:00 to 1 February 01:00: quoted 6.66 (6.6600)
    reservation = reserve(
        tenant=tenant,
        pool=pool,
        start=datetime(2026, 1, 31, 21, tzinfo=UTC),
        hours=4,
        gpus=1,
        unit_price="1.6650",
    )
    assert reservation.total_price == Decimal("6.66")

    # when January is finalized after its grace period, then February after its own
    bill_at(datetime(2026, 2, 3, 1, tzinfo=UTC))
    invoices_finalize_month(period_start=JANUARY, now=datetime(2026, 2, 3, 1, tzinfo=UTC))
    bill_at(datetime(2026, 3, 3, 1, tzinfo=UTC))
    invoices_finalize_month(period_start=FEBRUARY, now=datetime(2026, 3, 3, 1, tzinfo=UTC))

    # then January bills round(4.995) = 5.00 and February the rest, 6.66 - 5.00 = 1.66
    assert usage_lines(reservation) == [
        (JANUARY, Decimal("5.00"), Decimal("0.00"), Decimal("5.00")),
        (FEBRUARY, Decimal("1.66"), Decimal("0.00"), Decimal("1.66")),
    ]
    assert billed(reservation) == reservation.total_price == Decimal("6.66")
    assert list(Invoice.objects.order_by("period_start").values_list("status", "total")) == [
        (Invoice.Status.FINALIZED, Decimal("5.00")),
        (Invoice.Status.FINALIZED, Decimal("1.66")),
    ]
    reservation.refresh_from_db()
    assert reservation.invoiced_amount == Decimal("6.66")


def test_two_open_drafts_of_one_reservation_are_rounded_together(tenant, pool):
    # given the same split, with January still in its grace period when February's hour is
    # metered: both drafts are built in the same run
    reservation = reserve(
        tenant=tenant,
        pool=pool,
        start=datetime(2026, 1, 31, 21, tzinfo=UTC),
        hours=4,
        gpus=1,
        unit_price="1.6650",
    )

    bill_at(datetime(2026, 2, 1, 3, tzinfo=UTC))

    # then January's draft says 5.00 and February's 1.66
    assert [line[3] for line in usage_lines(reservation)] == [Decimal("5.00"), Decimal("1.66")]
    # and finalizing both in turn keeps it so
    invoices_finalize_due(now=datetime(2026, 3, 3, 1, tzinfo=UTC))
    assert billed(reservation) == Decimal("6.66")
    assert set(Invoice.objects.values_list("status", flat=True)) == {Invoice.Status.FINALIZED}


def test_over_three_months_the_lines_add_up_to_the_total_and_keep_their_discounts(tenant, pool):
    # given 1 GPU at 1.6650 (list price 1.9999) from 31 January 21:00 to 1 March 01:00:
    # 3 h in January, 672 h in February, 1 h in March; rounded month by month it would be
    # 5.00 + 1118.88 + 1.67 = 1125.55
    reservation = reserve(
        tenant=tenant,
        pool=pool,
        start=datetime(2026, 1, 31, 21, tzinfo=UTC),
        hours=676,
        gpus=1,
        unit_price="1.6650",
        list_price="1.9999",
    )
    assert reservation.total_price == Decimal("1125.54")

    # when each month is finalized after its grace period
    for month, closed in (
        (JANUARY, datetime(2026, 2, 3, 1, tzinfo=UTC)),
        (FEBRUARY, datetime(2026, 3, 3, 1, tzinfo=UTC)),
        (MARCH, datetime(2026, 4, 3, 1, tzinfo=UTC)),
    ):
        bill_at(closed)
        invoices_finalize_month(period_start=month, now=closed)

    # then its lines add up to its total, the last month taking the remainder, and each
    # line's discount is its gross less its amount, never negative
    lines = usage_lines(reservation)
    assert [line[3] for line in lines] == [Decimal("5.00"), Decimal("1118.88"), Decimal("1.66")]
    assert billed(reservation) == reservation.total_price
    # gross: round(1.9999 x 3) = 6.00, round(1.9999 x 675) - 6.00 = 1343.93, then the rest of
    # round(1.9999 x 676) = 1351.93
    assert [line[1] for line in lines] == [Decimal("6.00"), Decimal("1343.93"), Decimal("2.00")]
    for _, gross, discount, amount in lines:
        assert discount == gross - amount >= 0
    assert sum(line[1] for line in lines) == Decimal("1351.93")


def test_a_void_invoice_counts_for_nothing_in_the_next_months_line(tenant, pool):
    # given January of the split reservation finalized, then voided
    reservation = reserve(
        tenant=tenant,
        pool=pool,
        start=datetime(2026, 1, 31, 21, tzinfo=UTC),
        hours=4,
        gpus=1,
        unit_price="1.6650",
    )
    bill_at(datetime(2026, 2, 3, 1, tzinfo=UTC))
    invoices_finalize_month(period_start=JANUARY, now=datetime(2026, 2, 3, 1, tzinfo=UTC))
    january = Invoice.objects.get(period_start=JANUARY, status=Invoice.Status.FINALIZED)
    invoice_void(invoice_id=january.pk, reason="test", now=datetime(2026, 2, 4, tzinfo=UTC))

    # when February is finalized (its draft is rebuilt then)
    bill_at(datetime(2026, 3, 3, 1, tzinfo=UTC))
    invoices_finalize_month(period_start=FEBRUARY, now=datetime(2026, 3, 3, 1, tzinfo=UTC))

    # then February bills its own hour, rounded on its own (January's usage is not re-billed)
    feb = Invoice.objects.get(period_start=FEBRUARY)
    assert feb.status == Invoice.Status.FINALIZED
    assert feb.lines.get(reservation=reservation).amount == Decimal("1.67")
