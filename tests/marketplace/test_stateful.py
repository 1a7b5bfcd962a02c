"""Random sequences of everything that moves capacity, against PostgreSQL.

A Hypothesis state machine books, quotes, confirms, cancels, extends, lets time pass, sweeps
lapsed holds, runs the lifecycle, records outages (some open-ended, some reaching into the
past) and closes them, and resizes pools, on three small pools over one day. After every step
the ledger must equal what the placements imply, stay within 0..capacity plus what an incident
left in excess, and capacity must equal what the pool and its incidents give (from the hour of
the operator's last pool edit on: earlier hours are history); and once the displacement job
has run, no hour is left with GPUs in excess. Each example runs inside a savepoint that is
rolled back afterwards, so examples never see each other's rows."""

from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from capacity.errors import CapacityInUse, InsufficientCapacity, InvalidIncident, InvalidWindow
from capacity.models import CapacityPool, Incident, PoolHour
from capacity.services import pool_update
from core.errors import ApplicationError
from core.timeutils import HOUR, floor_hour
from marketplace.errors import (
    CreditLimitExceeded,
    InvalidGpuCount,
    InvalidStateTransition,
    NoMatchingPool,
    QuotaExceeded,
    QuoteExpired,
)
from marketplace.models import Displacement, Reservation, Tenant
from marketplace.services import booking as svc
from marketplace.services.displacement import (
    incident_close,
    incident_record,
    incidents_displace_due,
)
from tests.factories import CapacityPoolFactory, TenantFactory
from tests.marketplace.test_concurrency import ledger_violations

pytestmark = pytest.mark.django_db

DAY = datetime(2026, 12, 7, tzinfo=UTC)  # windows fall on this day's 24 UTC hours
FIRST_NOW = DAY + timedelta(minutes=30)

# What each operation may legitimately answer besides success. Anything else fails the test.
BOOKING_REFUSALS = (
    InsufficientCapacity,
    InvalidWindow,  # the window slipped into the past as time moved on
    InvalidGpuCount,  # an odd count on whole-node pools
    QuotaExceeded,
    CreditLimitExceeded,
    NoMatchingPool,  # the only matching pool is draining
)
BOOKINGS = st.fixed_dictionaries(
    {
        "tenant": st.integers(0, 2),
        "gpus": st.sampled_from([2, 8, 16, 24]),
        "start_hour": st.integers(0, 23),
        "hours": st.integers(1, 12),
        "pool": st.none() | st.integers(0, 2),
    }
)
# Every outcome seen over the whole run, to check that the run explored something.
OUTCOMES: Counter = Counter()


def attempt(name: str, operation, *refusals: type[ApplicationError]):
    """Run ``operation``; return ``(result, None)`` or ``(None, code)`` for an allowed refusal."""
    try:
        result = operation()
    except refusals as error:
        OUTCOMES[f"{name}: {error.code}"] += 1
        return None, error.code
    OUTCOMES[f"{name}: ok"] += 1
    return result, None


class BookingMachine(RuleBasedStateMachine):
    reservations = Bundle("reservations")
    incidents = Bundle("incidents")

    def __init__(self) -> None:
        super().__init__()
        # The test runs inside pytest-django's transaction; every example gets a savepoint of
        # its own and gives it back in teardown().
        self.savepoint = transaction.savepoint()
        assert not Reservation.objects.exists(), "a previous example leaked rows"
        assert not PoolHour.objects.exists(), "a previous example leaked rows"
        self.now = FIRST_NOW
        # Pool edits leave the hours before the one in progress as history, so after one only
        # rows from that hour on must match the pool and its incidents. (Incidents apply to
        # every hour they cover, past ones too, and leave no history behind.)
        self.history_until: datetime | None = None
        self.pools = [
            # 32 GPUs in whole nodes; 16 GPUs sold singly and cheaper; 24 GPUs as backup
            CapacityPoolFactory(slug="whole", gpus_per_node=8, node_count=4),
            CapacityPoolFactory(
                slug="single",
                gpus_per_node=8,
                node_count=2,
                allow_partial_nodes=True,
                price_per_gpu_hour=Decimal("2.5000"),
            ),
            CapacityPoolFactory(
                slug="backup", gpus_per_node=8, node_count=3, tier=CapacityPool.Tier.BACKUP
            ),
        ]
        self.tenants = [
            TenantFactory(),
            TenantFactory(max_gpus=24, max_reservation_hours=6),
            TenantFactory(credit_limit=Decimal("300.00")),
        ]

    def teardown(self) -> None:
        transaction.savepoint_rollback(self.savepoint)

    def request(self, gpus: int, start_hour: int, hours: int, pool: int | None):
        return svc.BookingRequest(
            gpu_model="h100-sxm-80gb",
            gpu_count=gpus,
            start=DAY + start_hour * HOUR,
            end=DAY + min(start_hour + hours, 24) * HOUR,
            pool=None if pool is None else self.pools[pool].slug,
        )

    def tenant_of(self, reservation_id) -> Tenant:
        return Reservation.objects.get(pk=reservation_id).tenant

    # --- bookings --------------------------------------------------------------------------

    def create(self, service, tenant, gpus, start_hour, hours, pool):
        request = self.request(gpus, start_hour, hours, pool)

        def call():
            reservation, _ = service(
                tenant=self.tenants[tenant],
                request=request,
                fingerprint=request.fingerprint(),
                now=self.now,
            )
            return reservation.pk

        created, _ = attempt(service.__name__, call, *BOOKING_REFUSALS)
        return created

    @initialize(target=reservations, bookings=st.lists(BOOKINGS, max_size=6))
    def some_gpus_are_already_booked(self, bookings):
        created = [self.create(svc.reservation_create, **booking) for booking in bookings]
        return multiple(*[pk for pk in created if pk is not None])

    @rule(target=reservations, booking=BOOKINGS)
    def book(self, booking):
        created = self.create(svc.reservation_create, **booking)
        return multiple() if created is None else created

    @rule(target=reservations, booking=BOOKINGS)
    def quote(self, booking):
        created = self.create(svc.quote_create, **booking)
        return multiple() if created is None else created

    @rule(reservation=reservations)
    def confirm(self, reservation):
        tenant = self.tenant_of(reservation)

        def call():
            return svc.quote_confirm(
                tenant=tenant, quote_id=reservation, fingerprint=str(reservation), now=self.now
            )

        # A quote confirmed in time never fails for capacity: no capacity refusal is allowed.
        attempt("quote_confirm", call, QuoteExpired, InvalidStateTransition)

    @rule(reservation=reservations)
    def cancel(self, reservation):
        tenant = self.tenant_of(reservation)

        def call():
            return svc.reservation_cancel(
                tenant=tenant, reservation_id=reservation, cancelled_by="machine", now=self.now
            )

        attempt("reservation_cancel", call, InvalidStateTransition)

    @rule(reservation=reservations, hours=st.integers(1, 4))
    def extend(self, reservation, hours):
        current = Reservation.objects.get(pk=reservation)
        new_end = min(current.end + hours * HOUR, DAY + 24 * HOUR + 4 * HOUR)

        def call():
            return svc.reservation_extend(
                tenant=current.tenant,
                reservation_id=reservation,
                new_end=new_end,
                fingerprint=f"{reservation}:{new_end.isoformat()}",
                now=self.now,
            )

        attempt(
            "reservation_extend",
            call,
            InsufficientCapacity,
            InvalidStateTransition,
            InvalidWindow,
            QuotaExceeded,
            CreditLimitExceeded,
        )

    # --- time ------------------------------------------------------------------------------

    @rule(minutes=st.sampled_from([1, 9, 11, 45, 90, 240, 720]))
    def time_passes(self, minutes):
        self.now += timedelta(minutes=minutes)

    @rule()
    def sweep_holds(self):
        OUTCOMES["holds_expire: released"] += svc.holds_expire(now=self.now)

    @rule()
    def advance_lifecycle(self):
        counts = svc.reservations_advance(now=self.now)
        OUTCOMES.update({f"reservations_advance: {k}": v for k, v in counts.items()})

    # --- the operator ----------------------------------------------------------------------

    @rule(
        target=incidents,
        pool=st.integers(0, 2),
        start_hour=st.integers(0, 23),
        hours=st.none() | st.integers(1, 6),  # None: open until closed
        gpus=st.sampled_from([4, 8, 16, 40]),
    )
    def record_outage(self, pool, start_hour, hours, gpus):
        # The start may lie in the past (a failure found late): those hours are lost.
        def call():
            return incident_record(
                pool=self.pools[pool],
                kind=Incident.Kind.OUTAGE,
                start=DAY + start_hour * HOUR,
                end=None if hours is None else DAY + (start_hour + hours) * HOUR,
                gpus=gpus,
                now=self.now,
            ).pk

        # 40 GPUs are more than a pool of up to 4 nodes has; never refused for booked GPUs.
        incident, _ = attempt("incident_record", call, InvalidIncident)
        if incident is None:
            return multiple()
        moved = Displacement.objects.filter(incident_id=incident)
        OUTCOMES["incident_record: displaced"] += moved.count()
        return incident

    @rule(incident=incidents, end_hour=st.none() | st.integers(0, 30))
    def close_incident(self, incident, end_hour):
        # Closed again, it is returned unchanged; an end before the hour in progress is refused.
        def call():
            return incident_close(
                incident=Incident.objects.get(pk=incident),
                end=None if end_hour is None else DAY + end_hour * HOUR,
                now=self.now,
            )

        before = Incident.objects.values_list("end", "closed_at").get(pk=incident)
        closed, _ = attempt("incident_close", call, InvalidWindow)
        if closed is not None and before[1] is not None:
            assert (closed.end, closed.closed_at) == before

    @rule(
        pool=st.integers(0, 2),
        node_count=st.integers(1, 5),
        status=st.sampled_from(["active"] * 3 + ["draining"]),
    )
    def resize_pool(self, pool, node_count, status):
        def call():
            return pool_update(
                pool=self.pools[pool], node_count=node_count, status=status, now=self.now
            )

        self.history_until = floor_hour(self.now)
        attempt("pool_update", call, CapacityInUse)

    # --- the invariant ---------------------------------------------------------------------

    @invariant()
    def ledger_equals_what_the_placements_imply(self):
        OUTCOMES["invariant checked"] += 1
        assert ledger_violations(since=self.history_until) == []

    @invariant()
    def nothing_is_left_in_excess_once_the_displacement_job_has_run(self):
        # Outages displace as they are recorded: whatever excess is left belongs to an
        # incident not yet marked displaced, and the job (every minute) clears it.
        pending = Incident.objects.filter(displaced_at__isnull=True)
        for row in PoolHour.objects.filter(excess__gt=0):
            assert any(incident.covers(row.hour) for incident in pending.filter(pool=row.pool_id))
        if incidents_displace_due(now=self.now):  # it moved or shrank something: check again
            assert ledger_violations(since=self.history_until) == []
        assert not PoolHour.objects.filter(excess__gt=0).exists()
        assert not Incident.objects.filter(displaced_at__isnull=True).exists()


def test_any_sequence_of_operations_keeps_the_ledger_equal_to_the_reservations():
    # given the state machine's pools and tenants, and random sequences of operations
    OUTCOMES.clear()

    # when Hypothesis runs them (shrinking any failure to a minimal sequence)
    run_state_machine_as_test(
        BookingMachine,
        # How many examples and steps, and whether they are derandomized, come from the
        # Hypothesis profile loaded in tests/conftest.py (``ci``: 40 examples of 20 steps).
        settings=settings(
            settings.default,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )

    # then the invariants held after every step, and the runs really booked, were refused for
    # capacity, cancelled, extended, took GPUs out over reservations and gave them back
    assert OUTCOMES["invariant checked"] >= 200
    explored = {
        "booked": OUTCOMES["reservation_create: ok"] + OUTCOMES["quote_create: ok"],
        "refused": OUTCOMES["reservation_create: insufficient_capacity"]
        + OUTCOMES["quote_create: insufficient_capacity"],
        "cancelled": OUTCOMES["reservation_cancel: ok"],
        "extended": OUTCOMES["reservation_extend: ok"],
        "incidents": OUTCOMES["incident_record: ok"],
        "displaced": OUTCOMES["incident_record: displaced"],
        "closed": OUTCOMES["incident_close: ok"],
    }
    assert all(explored.values()), explored
