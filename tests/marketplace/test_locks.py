"""The row locks the booking guarantees rest on, each shown to be taken and to matter.

Once an hour has a ledger row, booking it takes no pool lock: only the ledger rows' locks keep
two bookings of the same hour apart, and only the tenant row's lock keeps two bookings of the
same tenant from spending the same credit. These tests lay the ledger rows first, so nothing
else serialises the bookings, and then show each lock at work: deterministically (a booking
waits while another transaction holds the lock, then sees what it committed) and by racing
many clients."""

from datetime import datetime
from decimal import Decimal

import pytest
from django.db import transaction

from billing import credit
from billing import locks as billing_locks
from billing.models import LedgerEntry
from billing.services import accounts
from capacity import locks as capacity_locks
from capacity.errors import InsufficientCapacity
from capacity.models import CapacityPool, PoolHour
from capacity.selectors import capacity_for_hours
from core.timeutils import HOUR, hour_range
from marketplace.errors import CreditLimitExceeded
from marketplace.models import Reservation, Tenant
from marketplace.services import booking as svc
from tests.factories import CapacityPoolFactory, TenantFactory
from tests.locking import Worker, wait_until_blocked
from tests.marketplace.conftest import MONDAY_9, NOW, booking
from tests.marketplace.test_concurrency import CLIENTS, ledger_violations, race, tally

pytestmark = pytest.mark.django_db(transaction=True)

BOOKED, NO_ROOM, NO_CREDIT = "booked", "insufficient_capacity", "credit_limit_exceeded"


def lay_ledger(pool: CapacityPool, start: datetime, hours: int) -> None:
    """Create the pool's ledger rows for the hours, as an earlier booking would have."""
    window = hour_range(start, start + hours * HOUR)
    capacity = capacity_for_hours(pool, window)
    PoolHour.objects.bulk_create(
        [PoolHour(pool=pool, hour=hour, capacity=capacity[hour]) for hour in window]
    )


def attempt(tenant: Tenant, request: svc.BookingRequest) -> str:
    try:
        svc.reservation_create(
            tenant=tenant, request=request, fingerprint=request.fingerprint(), now=NOW
        )
    except InsufficientCapacity:
        return NO_ROOM
    except CreditLimitExceeded:
        return NO_CREDIT
    return BOOKED


def test_a_booking_waits_for_the_ledger_rows_another_booking_holds():
    # given a 32-GPU pool whose ledger rows exist, and Globex booking all 32 GPUs 09-13 in a
    # transaction that has not committed yet
    pool = CapacityPoolFactory(gpus_per_node=8, node_count=4)
    lay_ledger(pool, MONDAY_9, 4)
    acme, globex = TenantFactory(), TenantFactory()
    with transaction.atomic():
        assert attempt(globex, booking(gpus=32, hours=4)) == BOOKED

        # when Acme asks for 8 of those GPUs meanwhile
        acme_booking = Worker(lambda: attempt(acme, booking(gpus=8, hours=4)), "Acme's booking")
        wait_until_blocked(acme_booking)
    # (Globex commits here)

    # then Acme's booking waited for the rows, saw them full and was refused cleanly
    assert acme_booking.join() == NO_ROOM
    assert list(PoolHour.objects.filter(pool=pool).values_list("booked", flat=True)) == [32] * 4


def test_a_booking_waits_for_the_tenant_lock_and_sees_the_credit_spent_meanwhile():
    # given Acme with 100.00 of credit, two pools whose ledger rows exist, and Acme booking
    # 96.00 on the first pool in a transaction that has not committed yet
    first = CapacityPoolFactory(slug="first", gpus_per_node=8, node_count=4)
    second = CapacityPoolFactory(slug="second", gpus_per_node=8, node_count=4)
    for pool in (first, second):
        lay_ledger(pool, MONDAY_9, 4)
    acme = TenantFactory(credit_limit=Decimal("100.00"))
    with transaction.atomic():
        assert attempt(acme, booking(gpus=8, hours=4, pool="first")) == BOOKED

        # when a second booking of Acme's, on the other pool, arrives meanwhile
        second_booking = Worker(
            lambda: attempt(acme, booking(gpus=8, hours=4, pool="second")), "second booking"
        )
        wait_until_blocked(second_booking)

    # then it waited for the tenant, saw the credit spent and was refused
    assert second_booking.join() == NO_CREDIT
    assert Reservation.objects.get().pool == first
    assert credit.credit_available(tenant=acme) == Decimal("4.00")


def test_a_booking_waits_for_billing_posting_an_invoice_to_the_tenant():
    # given Acme with 100.00 of credit and a pool whose ledger rows exist, and the billing run
    # posting a 50.00 invoice to Acme under the tenant's lock
    pool = CapacityPoolFactory(gpus_per_node=8, node_count=4)
    lay_ledger(pool, MONDAY_9, 4)
    acme = TenantFactory(credit_limit=Decimal("100.00"))
    with transaction.atomic():
        billing_locks.tenant_lock(acme.pk)
        accounts.ledger_post(
            tenant=acme,
            kind=LedgerEntry.Kind.INVOICE,
            amount=Decimal("-50.00"),
            currency="USD",
            reference="INV-2026-000001",
        )

        # when Acme books 96.00 meanwhile
        acme_booking = Worker(lambda: attempt(acme, booking(gpus=8, hours=4)), "Acme's booking")
        wait_until_blocked(acme_booking)

    # then the booking waited for billing and was refused: 50.00 of credit was left
    assert acme_booking.join() == NO_CREDIT
    assert not Reservation.objects.exists()
    assert list(PoolHour.objects.filter(pool=pool).values_list("booked", flat=True)) == [0] * 4


@pytest.mark.parametrize("mode", ["one tenant each", "one tenant"])
def test_32_clients_racing_for_existing_ledger_rows_fill_the_pool_exactly(mode):
    # given a 64-GPU pool whose ledger rows for the contested 12 hours already exist (so no
    # booking takes the pool lock), and 32 clients who each want 8 GPUs for those hours
    pool = CapacityPoolFactory(gpus_per_node=8, node_count=8)
    lay_ledger(pool, MONDAY_9, 12)
    tenants = (
        [TenantFactory()] * CLIENTS
        if mode == "one tenant"
        else [TenantFactory() for _ in range(CLIENTS)]
    )
    request = booking(gpus=8, hours=12)

    # when they all book at once
    outcomes = race(CLIENTS, lambda i: [attempt(tenants[i], request)])

    # then exactly 8 got GPUs, 24 were refused, and every hour is full, not over
    assert tally(outcomes) == {BOOKED: 8, NO_ROOM: 24}
    assert list(PoolHour.objects.filter(pool=pool).values_list("booked", flat=True)) == [64] * 12
    assert ledger_violations() == []


def test_16_bookings_of_one_tenant_racing_for_its_last_credit_on_16_pools_book_once():
    # given 16 pools whose ledger rows exist (no booking takes a pool lock or waits for another
    # booking's rows), and a tenant whose credit pays for exactly one booking of 96.00
    for n in range(16):
        lay_ledger(CapacityPoolFactory(slug=f"pool-{n:02}", node_count=1), MONDAY_9, 4)
    acme = TenantFactory(credit_limit=Decimal("150.00"))

    # when 16 of its clients book at once, each on its own pool
    outcomes = race(16, lambda i: [attempt(acme, booking(gpus=8, hours=4, pool=f"pool-{i:02}"))])

    # then one booking passed the credit check and 15 were refused
    assert tally(outcomes) == {BOOKED: 1, NO_CREDIT: 15}
    assert Reservation.objects.count() == 1
    assert credit.credit_available(tenant=acme) == Decimal("54.00")


def test_a_booking_of_hours_that_have_ledger_rows_does_not_wait_for_the_pool_lock():
    # given a pool whose ledger rows exist, held by an operator's change in progress
    pool = CapacityPoolFactory(gpus_per_node=8, node_count=4)
    lay_ledger(pool, MONDAY_9, 4)
    acme = TenantFactory()
    with transaction.atomic():
        capacity_locks.pool_lock(pool.pk)

        # when a tenant books those hours meanwhile
        acme_booking = Worker(lambda: attempt(acme, booking(gpus=8, hours=4)), "Acme's booking")

        # then it completes without waiting for the operator
        assert acme_booking.join() == BOOKED
