"""A tenant's quota and credit count that tenant's bookings and money only.

Every test here has a second tenant, Globex, with live bookings in the same pool and hours and
money on its own ledger: if a check counted every tenant's rows instead of one tenant's, the
figures below would be wrong."""

import random
from datetime import timedelta
from decimal import Decimal

import pytest

from billing import credit
from billing.models import LedgerEntry
from billing.services import accounts
from core.timeutils import HOUR
from marketplace import selectors
from marketplace.errors import CreditLimitExceeded, QuotaExceeded
from marketplace.models import Reservation, Tenant
from marketplace.services import booking as svc
from tests.factories import CapacityPoolFactory, TenantFactory
from tests.marketplace.conftest import MONDAY_9, NOW, booking
from tests.marketplace.test_concurrency import ledger_violations

pytestmark = pytest.mark.django_db


def book(tenant: Tenant, request: svc.BookingRequest) -> Reservation:
    reservation, _ = svc.reservation_create(
        tenant=tenant, request=request, fingerprint=request.fingerprint(), now=NOW
    )
    return reservation


def hold(tenant: Tenant, request: svc.BookingRequest) -> Reservation:
    quote, _ = svc.quote_create(
        tenant=tenant, request=request, fingerprint=request.fingerprint(), now=NOW
    )
    return quote


def extend(tenant: Tenant, reservation: Reservation, hours: int) -> Reservation:
    new_end = reservation.end + timedelta(hours=hours)
    extended, _ = svc.reservation_extend(
        tenant=tenant,
        reservation_id=reservation.pk,
        new_end=new_end,
        fingerprint=f"{reservation.pk}:{new_end.isoformat()}",
        now=NOW,
    )
    return extended


@pytest.fixture
def pool(db):
    return CapacityPoolFactory(slug="big", gpus_per_node=8, node_count=32)  # 256 GPUs at 3.00


@pytest.fixture
def globex(db, pool) -> Tenant:
    """Another tenant, busy in the same pool and hours: 64 GPUs confirmed and 32 held over
    Monday 09:00-13:00 (1,152.00 uninvoiced), and an issued invoice of 500.00 on its ledger."""
    globex = TenantFactory(name="Globex", slug="globex")
    book(globex, booking(gpus=64, hours=4))
    hold(globex, booking(gpus=32, hours=4))
    accounts.ledger_post(
        tenant=globex,
        kind=LedgerEntry.Kind.INVOICE,
        amount=Decimal("-500.00"),
        currency="USD",
        reference="INV-2026-000001",
    )
    return globex


def test_the_gpu_quota_counts_only_the_tenants_own_reservations(pool, globex):
    # given Acme, allowed 32 GPUs at once, while Globex holds 96 GPUs in the same hours
    acme = TenantFactory(name="Acme", max_gpus=32)

    # when Acme books its full quota in those hours, and then one node more
    mine = book(acme, booking(gpus=32, hours=4))
    with pytest.raises(QuotaExceeded) as error:
        book(acme, booking(gpus=8, hours=4))

    # then the quota saw Acme's 32 GPUs, never Globex's 96
    assert mine.status == Reservation.Status.CONFIRMED
    assert error.value.extra == {"quota": "max_gpus", "limit": 32, "in_use": 32}
    assert selectors.peak_gpus(tenant=acme, start=MONDAY_9, end=MONDAY_9 + 4 * HOUR) == 32
    assert selectors.peak_gpus(tenant=globex, start=MONDAY_9, end=MONDAY_9 + 4 * HOUR) == 96


def test_an_extension_is_checked_against_the_tenants_own_gpu_quota(pool, globex):
    # given Acme, allowed 32 GPUs, booking 32 GPUs 09-13, while Globex holds 96 GPUs 13-17 too
    acme = TenantFactory(name="Acme", max_gpus=32)
    book(globex, booking(gpus=96, start=MONDAY_9 + 4 * HOUR, hours=4))
    mine = book(acme, booking(gpus=32, hours=4))

    # when Acme extends into Globex's busy hours
    extended = extend(acme, mine, hours=4)

    # then Globex's GPUs do not count against Acme's quota
    assert extended.end == MONDAY_9 + 8 * HOUR


def test_the_credit_check_counts_only_the_tenants_own_bookings_and_ledger(pool, globex):
    # given Acme with 100.00 of credit, while Globex owes 500.00 and has 1,152.00 booked
    acme = TenantFactory(name="Acme", credit_limit=Decimal("100.00"))
    assert credit.credit_available(tenant=acme) == Decimal("100.00")

    # when Acme books 96.00 (8 GPUs x 4 h x 3.00), then one GPU-hour's worth more than is left
    mine = book(acme, booking(gpus=8, hours=4))
    with pytest.raises(CreditLimitExceeded) as error:
        book(acme, booking(gpus=8, start=MONDAY_9 + 5 * HOUR, hours=1))

    # then Acme's credit is its limit minus its own booking, whatever Globex owes or books
    assert mine.total_price == Decimal("96.00")
    assert error.value.extra == {"available_credit": "4.00", "amount": "24.00"}
    assert credit.credit_available(tenant=acme) == Decimal("4.00")
    assert credit.ledger_balance(tenant=acme) == Decimal("0.00")
    assert credit.uninvoiced_commitments(tenant=acme) == Decimal("96.00")
    assert credit.ledger_balance(tenant=globex) == Decimal("-500.00")
    assert credit.uninvoiced_commitments(tenant=globex) == Decimal("1152.00")


def test_a_top_up_raises_only_its_own_tenants_credit(pool, globex):
    # given Acme with 100.00 of credit
    acme = TenantFactory(name="Acme", credit_limit=Decimal("100.00"))

    # when Globex tops up 1,000.00
    accounts.top_up_create(tenant=globex, amount=Decimal("1000.00"), reference="wire-g")

    # then Acme still has 100.00, and Globex's ledger moved
    assert credit.credit_available(tenant=acme) == Decimal("100.00")
    assert credit.ledger_balance(tenant=globex) == Decimal("500.00")


def test_an_extension_past_the_credit_limit_is_refused_and_changes_nothing(pool, globex):
    # given Acme with 100.00 of credit and a booking of 72.00 (8 GPUs x 3 h x 3.00)
    acme = TenantFactory(name="Acme", credit_limit=Decimal("100.00"))
    mine = book(acme, booking(gpus=8, hours=3))
    booked_before = list(pool.hours.order_by("hour").values_list("hour", "booked"))

    # when it extends by two hours (48.00 more: 120.00 in all)
    with pytest.raises(CreditLimitExceeded) as error:
        extend(acme, mine, hours=2)

    # then the extension is refused with the figures and nothing moved
    assert error.value.extra == {"available_credit": "28.00", "amount": "48.00"}
    mine.refresh_from_db()
    assert (mine.end, mine.total_price, mine.charge) == (
        MONDAY_9 + 3 * HOUR,
        Decimal("72.00"),
        Decimal("72.00"),
    )
    assert list(pool.hours.order_by("hour").values_list("hour", "booked")) == booked_before
    assert credit.credit_available(tenant=acme) == Decimal("28.00")
    assert ledger_violations() == []

    # and one hour more (24.00) still fits
    extended = extend(acme, mine, hours=1)
    assert (extended.total_price, credit.credit_available(tenant=acme)) == (
        Decimal("96.00"),
        Decimal("4.00"),
    )


def test_the_peak_in_the_database_is_the_sweep_over_the_tenants_live_reservations(pool, globex):
    # given 60 random bookings of Acme over a day (some cancelled, some held), beside Globex's
    rng = random.Random(7)
    acme = TenantFactory(name="Acme", max_gpus=10_000)
    booked = []
    for _ in range(60):
        start = MONDAY_9 + rng.randrange(24) * HOUR
        reservation = book(
            acme, booking(gpus=8 * rng.randint(1, 3), start=start, hours=rng.randint(1, 6))
        )
        if rng.random() < 0.2:
            svc.reservation_cancel(
                tenant=acme, reservation_id=reservation.pk, cancelled_by="tenant", now=NOW
            )
        booked.append(reservation)

    # then, for any window and with or without one reservation left out, the database's peak
    # is the sweep over the same live reservations
    for _ in range(40):
        start = MONDAY_9 + rng.randrange(-2, 28) * HOUR
        end = start + rng.randint(1, 12) * HOUR
        left_out = rng.choice([None, *booked])
        live = [
            (r.start, r.end, r.gpu_count)
            for r in Reservation.objects.filter(tenant=acme, status__in=Reservation.LIVE_STATUSES)
            if r != left_out and r.start < end and r.end > start
        ]
        expected = selectors.peak_of(live, start, end)
        found = selectors.peak_gpus(tenant=acme, start=start, end=end, exclude=left_out)
        assert found == expected, (start, end, left_out)
    assert selectors.peak_gpus(tenant=acme, start=MONDAY_9 - 9 * HOUR, end=MONDAY_9) == 0
