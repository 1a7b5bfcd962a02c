"""Many clients at once through the real booking service, each on its own database connection.

Whatever the interleaving, afterwards every hour's booked GPUs stay within capacity, the ledger
equals what the reservations imply, and every request ended in a booking or a clean
``insufficient_capacity`` — never a deadlock, a serialization failure or any other error."""

import random
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial

import pytest
from django.db.models import IntegerField, OuterRef, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from capacity.errors import InsufficientCapacity
from capacity.models import CapacityPool, Incident, PoolHour
from capacity.selectors import capacity_for_hours
from core.timeutils import HOUR, hours_between
from marketplace.errors import IdempotencyKeyInUse
from marketplace.models import Displacement, Placement, Reservation, Tenant
from marketplace.services import booking as svc
from marketplace.services.displacement import (
    incident_close,
    incident_record,
    incidents_displace_due,
)
from tests.db_helpers import run_concurrently
from tests.factories import CapacityPoolFactory, TenantFactory
from tests.marketplace.conftest import MONDAY_9, NOW, booking

# Real transactions: every thread commits on its own connection, so the test database is
# flushed after each test instead of rolled back.
pytestmark = pytest.mark.django_db(transaction=True)

CLIENTS = 32
SPAN_START = MONDAY_9  # the contested 12 hours: Monday 09:00-21:00 UTC
SPAN_HOURS = 12
BOOKED = "booked"
REFUSED = "insufficient_capacity"
IN_USE = "idempotency_key_in_use"


# --- the invariant, shared with the other booking tests ------------------------------------


def ledger_violations(since: datetime | None = None) -> list[str]:
    """Every way the ledger disagrees with the placements or with the pools, as sentences.

    For every pool-hour row: 0 <= booked <= capacity + excess; excess == max(0, booked -
    capacity); booked == the sum of ``gpus`` of the pool's placements covering the hour;
    capacity == what ``capacity_for_hours`` computes from the pool and its incidents. Every
    hour a placement holds has a ledger row (otherwise nothing would guard it), and a live
    reservation's placements never hold more GPUs in an hour than it booked.

    With ``since``, capacity is compared only for rows from that hour on: a pool edit leaves
    earlier rows as history, with the capacity their hour had."""
    implied = (
        Placement.objects.filter(
            pool=OuterRef("pool"), start__lte=OuterRef("hour"), end__gt=OuterRef("hour")
        )
        .order_by()
        .values("pool")
        .annotate(gpus=Sum("gpus"))
        .values("gpus")
    )
    rows = PoolHour.objects.annotate(
        implied=Coalesce(Subquery(implied), Value(0), output_field=IntegerField())
    ).order_by("pool_id", "hour")
    problems = []
    by_pool: dict[int, list[PoolHour]] = {}
    for row in rows:
        by_pool.setdefault(row.pool_id, []).append(row)
        where = f"pool {row.pool_id} at {row.hour:%Y-%m-%dT%H:%M}Z"
        if not 0 <= row.booked <= row.capacity + row.excess:
            problems.append(f"{where}: booked {row.booked} outside 0..{row.capacity}+{row.excess}")
        if row.excess != max(0, row.booked - row.capacity):
            problems.append(f"{where}: excess {row.excess} for {row.booked}/{row.capacity}")
        if row.booked != row.implied:
            problems.append(f"{where}: ledger says {row.booked}, placements imply {row.implied}")
    for pool in CapacityPool.objects.filter(pk__in=by_pool):
        hours = [row for row in by_pool[pool.pk] if since is None or row.hour >= since]
        expected = capacity_for_hours(pool, [row.hour for row in hours])
        problems += [
            f"pool {pool.pk} at {row.hour:%Y-%m-%dT%H}Z: capacity {row.capacity}, "
            f"pool and incidents say {expected[row.hour]}"
            for row in hours
            if row.capacity != expected[row.hour]
        ]
    ledger_hours = {(row.pool_id, row.hour) for rows_ in by_pool.values() for row in rows_}
    held: dict[tuple, int] = {}
    for placement in Placement.objects.select_related("reservation"):
        for i in range(hours_between(placement.start, placement.end)):
            hour = placement.start + i * HOUR
            if (placement.pool_id, hour) not in ledger_hours:
                problems.append(f"placement {placement.pk} holds {hour} with no ledger row")
            key = (placement.reservation_id, hour)
            held[key] = held.get(key, 0) + placement.gpus
            if held[key] > placement.reservation.gpu_count:
                problems.append(f"reservation {placement.reservation_id} over-placed at {hour}")
            if not placement.reservation.start <= hour < placement.reservation.capacity_until:
                problems.append(f"placement {placement.pk} outside its reservation at {hour}")
    return problems


# --- helpers --------------------------------------------------------------------------------


def race(clients: int, work: Callable[[int], list[str]]) -> list[list[str]]:
    """Run ``work(i)`` in ``clients`` threads, each on its own connection, released together by
    a barrier. Returns each client's list of outcomes; fails the test with the traceback of
    any exception a client did not turn into an expected outcome, and within 120 s, naming the
    clients still running, if any hangs."""
    return run_concurrently(*(partial(work, i) for i in range(clients)), timeout=120)


def tally(outcomes: list[list[str]]) -> Counter:
    return Counter(outcome for client in outcomes for outcome in client)


def clients_tenants(mode: str, clients: int = CLIENTS) -> list[Tenant]:
    if mode == "one tenant":
        return [TenantFactory()] * clients
    return [TenantFactory() for _ in range(clients)]


def book(tenant: Tenant, request: svc.BookingRequest, **kwargs) -> str:
    try:
        svc.reservation_create(
            tenant=tenant, request=request, fingerprint=request.fingerprint(), now=NOW, **kwargs
        )
    except InsufficientCapacity:
        return REFUSED
    return BOOKED


def random_request(rng: random.Random, gpus: tuple[int, ...] = (8, 16, 24)) -> svc.BookingRequest:
    start_offset = rng.randrange(SPAN_HOURS)
    hours = rng.randint(1, SPAN_HOURS - start_offset)
    return booking(gpus=rng.choice(gpus), start=SPAN_START + start_offset * HOUR, hours=hours)


def free_in(pool: CapacityPool, start: datetime, end: datetime) -> int:
    rows = PoolHour.objects.filter(pool=pool, hour__gte=start, hour__lt=end)
    return min(row.free for row in rows)


def booked_by_hour(pool: CapacityPool) -> list[tuple[int, int]]:
    return list(PoolHour.objects.filter(pool=pool).values_list("booked", "capacity"))


TENANT_MODES = ["one tenant each", "one tenant"]


# --- the races ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", TENANT_MODES)
def test_32_clients_racing_for_one_window_fill_the_pool_exactly(mode):
    # given a 64-GPU pool and 32 clients who each want 8 GPUs for the same 12 hours
    pool = CapacityPoolFactory(gpus_per_node=8, node_count=8)
    tenants = clients_tenants(mode)
    request = booking(gpus=8, start=SPAN_START, hours=SPAN_HOURS)

    # when they all book at once
    outcomes = race(CLIENTS, lambda i: [book(tenants[i], request)])

    # then exactly 8 got their GPUs, the other 24 were told insufficient_capacity, and the pool
    # is full to the last GPU in every hour
    assert tally(outcomes) == {BOOKED: 8, REFUSED: 24}
    assert Reservation.objects.filter(status=Reservation.Status.CONFIRMED).count() == 8
    assert booked_by_hour(pool) == [(64, 64)] * SPAN_HOURS
    assert ledger_violations() == []


@pytest.mark.parametrize("mode", TENANT_MODES)
def test_32_clients_booking_random_overlapping_windows_never_overbook(mode):
    # given a 64-GPU pool and 32 clients who each try 6 random windows inside the same 12 hours
    # (demand is about ten times the supply)
    pool = CapacityPoolFactory(gpus_per_node=8, node_count=8)
    tenants = clients_tenants(mode)
    requests = [[random_request(random.Random(i * 100 + n)) for n in range(6)] for i in range(32)]

    # when they all book at once
    outcomes = race(CLIENTS, lambda i: [book(tenants[i], r) for r in requests[i]])

    # then every request ended in a booking or insufficient_capacity, none overbooked an hour
    counts = tally(outcomes)
    assert set(counts) == {BOOKED, REFUSED}
    assert counts[BOOKED] == Reservation.objects.count()
    assert ledger_violations() == []
    # and every refusal was justified: bookings only add, so an hour of the refused window
    # still has fewer free GPUs than were asked for
    for client, results in zip(requests, outcomes, strict=True):
        for request, result in zip(client, results, strict=True):
            if result == REFUSED:
                assert free_in(pool, request.start, request.end) < request.gpu_count


@pytest.mark.parametrize("mode", TENANT_MODES)
def test_32_clients_mixing_quotes_confirms_cancels_and_extensions_never_overbook(mode):
    # given a cheap 64-GPU pool, a dearer 32-GPU pool for the overflow, and 32 clients who each
    # run 8 random operations on their own reservations
    CapacityPoolFactory(slug="cheap", gpus_per_node=8, node_count=8)
    CapacityPoolFactory(slug="dear", gpus_per_node=8, node_count=4, price_per_gpu_hour=4)
    tenants = clients_tenants(mode)

    def work(i: int) -> list[str]:
        rng = random.Random(1000 + i)
        tenant, mine, results = tenants[i], [], []
        for _ in range(8):
            operation = rng.choice(["book", "quote", "quote", "cancel", "extend", "extend"])
            request = random_request(rng)
            try:
                if operation == "book":
                    reservation, _ = svc.reservation_create(
                        tenant=tenant, request=request, fingerprint=request.fingerprint(), now=NOW
                    )
                    mine.append(reservation.pk)
                elif operation == "quote":
                    quote, _ = svc.quote_create(
                        tenant=tenant, request=request, fingerprint=request.fingerprint(), now=NOW
                    )
                    if rng.random() < 0.7:  # the rest stay held
                        svc.quote_confirm(
                            tenant=tenant, quote_id=quote.pk, fingerprint=str(quote.pk), now=NOW
                        )
                    mine.append(quote.pk)
                elif operation == "cancel" and mine:
                    svc.reservation_cancel(
                        tenant=tenant,
                        reservation_id=mine.pop(rng.randrange(len(mine))),
                        cancelled_by="client",
                        now=NOW,
                    )
                elif operation == "extend" and mine:
                    reservation = Reservation.objects.get(pk=rng.choice(mine))
                    if reservation.status != Reservation.Status.CONFIRMED:
                        continue
                    svc.reservation_extend(
                        tenant=tenant,
                        reservation_id=reservation.pk,
                        new_end=reservation.end + rng.randint(1, 3) * HOUR,
                        fingerprint=f"{reservation.pk}-{reservation.end}",
                        now=NOW,
                    )
                else:
                    continue
                results.append(BOOKED)
            except InsufficientCapacity:
                results.append(REFUSED)
        return results

    # when they all run at once
    counts = tally(race(CLIENTS, work))

    # then each operation ended in success or insufficient_capacity, and the ledger of both
    # pools equals what the reservations imply, within capacity
    assert set(counts) <= {BOOKED, REFUSED}
    assert counts[BOOKED] > 0
    assert counts[REFUSED] > 0
    assert ledger_violations() == []


def test_16_retries_with_one_idempotency_key_make_one_reservation():
    # given a tenant whose client sends the same booking with the same Idempotency-Key 16 times
    CapacityPoolFactory(gpus_per_node=8, node_count=8)
    tenant = TenantFactory()
    request = booking(gpus=8, start=SPAN_START, hours=4)
    answers: list[tuple[str, bool] | str] = [""] * 16

    def work(i: int) -> list[str]:
        try:
            reservation, replayed = svc.reservation_create(
                tenant=tenant,
                request=request,
                idempotency_key="retry-me",
                fingerprint=request.fingerprint(),
                now=NOW,
            )
        except IdempotencyKeyInUse:
            answers[i] = IN_USE
        else:
            answers[i] = (str(reservation.pk), replayed)
        return [BOOKED]

    # when all 16 arrive at once
    race(16, work)

    # then one reservation exists and one request made it; each other one got it as a replay
    # or was told the key is still in use (idempotency_key_in_use: retry later)
    assert Reservation.objects.count() == 1
    only = str(Reservation.objects.get().pk)
    outcomes = [answer for answer in answers if answer != IN_USE]
    assert {pk for pk, _ in outcomes} == {only}
    assert sorted(replayed for _, replayed in outcomes) == [False] + [True] * (len(outcomes) - 1)
    assert list(PoolHour.objects.values_list("booked", flat=True)) == [8] * 4
    assert ledger_violations() == []


def hold_many(count: int) -> set[str]:
    tenant = TenantFactory()
    held = set()
    for n in range(count):
        request = random_request(random.Random(n), gpus=(8,))
        quote, _ = svc.quote_create(
            tenant=tenant, request=request, fingerprint=request.fingerprint(), now=NOW
        )
        held.add(str(quote.pk))
    return held


def test_two_sweepers_at_once_release_each_lapsed_hold_exactly_once():
    # given 60 holds over overlapping windows, all lapsed by NOW + 11 minutes
    CapacityPoolFactory(gpus_per_node=8, node_count=64)
    held = hold_many(60)
    lapsed = NOW + timedelta(minutes=11)
    released = [0, 0]

    def sweep(i: int) -> list[str]:
        # small batches so both sweepers hold ledger rows of several holds at the same time
        released[i] = svc.holds_expire(now=lapsed, batch_size=3)
        return []

    # when two sweepers run at the same moment
    race(2, sweep)

    # then between them they released each hold once, and nothing is booked any more
    assert sum(released) == 60
    assert set(map(str, Reservation.objects.values_list("pk", flat=True))) == held
    assert set(Reservation.objects.values_list("status", flat=True)) == {"expired"}
    assert set(PoolHour.objects.values_list("booked", flat=True)) == {0}
    assert ledger_violations() == []


def test_sweeping_holds_while_clients_book_neither_deadlocks_nor_overbooks():
    # given 40 lapsed holds, 2 sweepers and 30 clients booking the same pool's hours
    CapacityPoolFactory(gpus_per_node=8, node_count=16)
    hold_many(40)
    lapsed = NOW + timedelta(minutes=11)
    tenants = clients_tenants("one tenant each", 30)

    def work(i: int) -> list[str]:
        if i < 2:
            svc.holds_expire(now=lapsed, batch_size=3)
            return []
        rng = random.Random(5000 + i)
        results = []
        for _ in range(4):
            request = random_request(rng)
            try:
                svc.reservation_create(
                    tenant=tenants[i - 2],
                    request=request,
                    fingerprint=request.fingerprint(),
                    now=lapsed,
                )
                results.append(BOOKED)
            except InsufficientCapacity:
                results.append(REFUSED)
        return results

    # when they all run at once
    counts = tally(race(CLIENTS, work))

    # then no client failed, every hold is gone and the ledger matches the bookings
    assert set(counts) <= {BOOKED, REFUSED}
    assert not Reservation.objects.filter(status=Reservation.Status.HELD).exists()
    assert ledger_violations() == []


def test_incidents_racing_16_booking_clients_never_overbook_nor_deadlock():
    # given two 64-GPU pools of one model, 16 clients booking random windows and 4 operators
    # recording outages of 8-32 GPUs over the same hours (some closed again at once)
    pool = CapacityPoolFactory(gpus_per_node=8, node_count=8)
    CapacityPoolFactory(gpus_per_node=8, node_count=8, gpu_model=pool.gpu_model)
    operators, bookers = 4, 16
    tenants = clients_tenants("one tenant each", operators + bookers)

    def work(i: int) -> list[str]:
        rng = random.Random(9000 + i)
        results = []
        for _ in range(6):
            if i < operators:
                start = SPAN_START + rng.randrange(SPAN_HOURS) * HOUR
                incident = incident_record(
                    pool=pool,
                    kind=Incident.Kind.OUTAGE,
                    start=start,
                    end=start + rng.randint(1, 4) * HOUR,
                    gpus=rng.choice([8, 16, 32]),
                    now=NOW,
                )
                results.append("incident recorded")
                if rng.random() < 0.3:
                    incident_close(incident=incident, now=NOW)
                    results.append("incident closed")
            else:
                results.append(book(tenants[i], random_request(rng)))
        return results

    # when they all run at once
    counts = tally(race(operators + bookers, work))

    # then every operation ended in one of its expected outcomes; once the displacement job
    # has run, nothing is left in excess and the ledger equals the placements on both pools
    assert set(counts) <= {BOOKED, REFUSED, "incident recorded", "incident closed"}
    assert counts[BOOKED] > 0
    assert counts["incident recorded"] == operators * 6
    incidents_displace_due(now=NOW)
    assert Displacement.objects.filter(gpus_moved__gt=0).exists()  # the race moved bookings
    assert not PoolHour.objects.filter(excess__gt=0).exists()
    assert ledger_violations() == []
