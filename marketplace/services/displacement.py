"""Incidents meet reservations: record an incident, tell the tenants a recall is coming, and
move the reservations that no longer fit to other capacity — or shrink them for those hours.

The capacity side records the incident and marks what no longer fits as ``excess`` on the
ledger (capacity knows nothing of reservations). Here the displacement policy
(``DisplacementRule`` rows) picks which reservations lose GPUs, and each one is dealt with in
its own transaction, in the house lock order (tenant -> reservation -> pool-hour rows of every
pool it touches, ascending -> event counter):

* for the affected hours only, the GPUs it loses on the incident's pool are re-placed on
  other active pools of the same GPU model and currency that its original request allowed —
  same region first, then same country, then anywhere; primary before backup; then the
  cheapest for us — at its locked unit price (the tenant never pays more);
* what finds no room is lost for those hours (``gpus_lost``): not delivered, not billed, and
  credited by the SLA policy when the month closes. Hours before the one in progress cannot
  be re-placed (a failure found late): they are lost.

A recall gives notice: recorded ahead of its start it sends ``reservation.recall_notice`` to
the reservations it will take GPUs from, and displaces them when it starts
(``incidents_displace_due``, every minute). Every step is idempotent: a reservation is
re-read under its lock and only what is still in excess is taken, so a run that dies half
way is finished by the next one."""

import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from django.db import transaction
from django.db.models import Case, F, IntegerField, Q, QuerySet, Value, When
from django.db.models.functions import Coalesce

from capacity import selectors as capacity_selectors
from capacity import services as capacity_services
from capacity.models import CapacityPool, Incident, PoolHour
from core.money import round_money
from core.timeutils import HOUR, floor_hour, hour_range, utcnow
from marketplace import events
from marketplace.models import (
    Displacement,
    DisplacementRule,
    Placement,
    Reservation,
    Tenant,
)
from marketplace.services.booking import RESERVATION_DISPLAY
from marketplace.services.placements import placed_gpu_hours, placements_move

logger = logging.getLogger(__name__)

# Attempts per reservation when another transaction took the room a move was planned on.
ATTEMPTS = 3

_ORDERINGS = {
    DisplacementRule.Order.RECALLABLE_FIRST: [
        Case(
            When(pool__tier=CapacityPool.Tier.BACKUP, then=Value(0)),
            default=Value(1),
            output_field=IntegerField(),
        ).asc()
    ],
    DisplacementRule.Order.LATEST_CONFIRMED_FIRST: [Coalesce("confirmed_at", "created_at").desc()],
    DisplacementRule.Order.EARLIEST_CONFIRMED_FIRST: [Coalesce("confirmed_at", "created_at").asc()],
    DisplacementRule.Order.SMALLEST_FIRST: [F("gpu_count").asc()],
    DisplacementRule.Order.LARGEST_FIRST: [F("gpu_count").desc()],
}


@dataclass
class DisplacementResult:
    incident_id: int
    reservations: int = 0
    gpu_hours_moved: int = 0
    gpu_hours_lost: int = 0
    remaining_excess: int = 0


@dataclass
class _Segment:
    """Consecutive hours in which the reservation loses the same GPUs and they go to the same
    pools: one Displacement row, and one placement per target pool."""

    start: datetime
    end: datetime
    take: int
    moves: tuple[tuple[CapacityPool, int], ...] = ()

    @property
    def moved(self) -> int:
        return sum(gpus for _, gpus in self.moves)

    @property
    def lost(self) -> int:
        return self.take - self.moved


# --- recording ---------------------------------------------------------------------------------


def incident_record(
    *,
    pool: CapacityPool,
    kind: str,
    gpus: int,
    start: datetime,
    end: datetime | None = None,
    reason: str = "",
    recorded_by: str = "",
    now: datetime | None = None,
    time_budget: float | None = None,
) -> Incident:
    """Record an incident and deal with the reservations it hits: a recall that starts later
    sends its notices now (displacement follows at its start); anything else displaces at
    once — for at most ``time_budget`` seconds when given (a screen waiting on it), the rest
    left to the displacement job, which is woken at once. Never fails because GPUs are booked
    (see ``capacity.services.incident_open``)."""
    now = now or utcnow()
    with transaction.atomic():
        incident = capacity_services.incident_open(
            pool=pool,
            kind=kind,
            gpus=gpus,
            start=start,
            end=end,
            reason=reason,
            recorded_by=recorded_by,
            now=now,
        )
        if not _due(incident, now):
            _send_recall_notices(incident, now)
    if _due(incident, now):
        result = incident_displace(incident=incident, now=now, time_budget=time_budget)
        if result.remaining_excess:
            _wake_displacement_job()
    return incident


def _wake_displacement_job() -> None:
    """Ask a worker to finish a displacement now rather than at the next scheduled run (every
    minute). Losing the message (broker down) costs only that minute."""
    from marketplace.tasks import displace_incidents  # the task module imports this one

    try:
        displace_incidents.apply_async(retry=False)
    except Exception:  # the broker being down must not fail what was recorded
        logger.warning("Could not wake the displacement job; the schedule will run it.")


def incident_close(
    *, incident: Incident, end: datetime | None = None, now: datetime | None = None
) -> Incident:
    """The incident's GPUs are back from ``end`` (default: the next whole hour). Reservations
    already moved stay where they are; the capacity is for sale again."""
    return capacity_services.incident_close(incident=incident, end=end, now=now)


def _due(incident: Incident, now: datetime) -> bool:
    """A recall displaces when it starts; every other incident at once."""
    return incident.kind != Incident.Kind.RECALL or incident.start <= now


# --- who loses GPUs ----------------------------------------------------------------------------


def policy_order() -> list:
    """The ``order_by`` terms of the displacement policy, ending in a stable tie-break."""
    terms: list = []
    for order in DisplacementRule.objects.values_list("order", flat=True):
        terms += _ORDERINGS.get(DisplacementRule.Order(order), [])
    return [*terms, F("created_at").desc(), F("pk").asc()]


def _candidates(pool_id: int, start: datetime, end: datetime | None) -> QuerySet[Reservation]:
    """Reservations with GPUs placed on the pool in [start, end), in policy order."""
    placed = Placement.objects.filter(pool_id=pool_id, end__gt=start)
    if end is not None:
        placed = placed.filter(start__lt=end)
    return Reservation.objects.filter(pk__in=placed.values("reservation_id")).order_by(
        *policy_order()
    )


def _on_pool_by_hour(reservation: Reservation, pool_id: int, hours: Iterable[datetime]) -> dict:
    """GPUs the reservation holds on the pool in each of ``hours``."""
    hours = sorted(hours)
    if not hours:
        return {}
    spans = list(
        Placement.objects.filter(
            reservation=reservation,
            pool_id=pool_id,
            start__lte=hours[-1],
            end__gt=hours[0],
        ).values_list("start", "end", "gpus")
    )
    return {hour: sum(gpus for start, end, gpus in spans if start <= hour < end) for hour in hours}


def _takes(on_pool: dict, excess: dict, step: int) -> dict:
    """GPUs to take from a reservation per hour: what it holds there, at most the excess
    rounded up to whole nodes of the pool (a node is lost whole)."""
    takes = {}
    for hour, holding in on_pool.items():
        over = excess.get(hour, 0)
        if holding and over > 0:
            takes[hour] = min(holding, -(-over // step) * step)
    return takes


def affected_reservations(incident: Incident) -> list[tuple[Reservation, int]]:
    """Who the incident will take GPUs from, in policy order, and the most GPUs each loses in
    an hour: the displacement played forward on the current ledger, without changing it."""
    pool = incident.pool
    excess = dict(
        capacity_selectors.excess_hours(pool.pk, incident.start, incident.end).values_list(
            "hour", "excess"
        )
    )
    return _simulate(pool, excess, incident.start, incident.end)


def displacement_preview(
    *, pool: CapacityPool, gpus: int, start: datetime, end: datetime | None
) -> list[tuple[Reservation, int]]:
    """Who an incident of ``gpus`` on the pool for [start, end) would take GPUs from, before it
    is recorded (the admin asks for confirmation with this)."""
    query = PoolHour.objects.filter(pool=pool, booked__gt=0, hour__gte=start)
    if end is not None:
        query = query.filter(hour__lt=end)
    rows = list(query)
    capacity = capacity_selectors.capacity_for_hours(pool, [row.hour for row in rows])
    excess = {
        row.hour: row.booked - max(0, capacity[row.hour] - gpus)
        for row in rows
        if row.booked > max(0, capacity[row.hour] - gpus)
    }
    return _simulate(pool, excess, start, end)


def _simulate(
    pool: CapacityPool, excess: dict, start: datetime, end: datetime | None
) -> list[tuple[Reservation, int]]:
    excess = dict(excess)
    hit = []
    for reservation in _candidates(pool.pk, start, end).select_related(*RESERVATION_DISPLAY):
        if not any(value > 0 for value in excess.values()):
            break
        takes = _takes(_on_pool_by_hour(reservation, pool.pk, excess), excess, pool.booking_step)
        if not takes:
            continue
        for hour, take in takes.items():
            excess[hour] = max(0, excess[hour] - take)
        hit.append((reservation, max(takes.values())))
    return hit


def _send_recall_notices(incident: Incident, now: datetime) -> None:
    for reservation, gpus in affected_reservations(incident):
        events.reservation_recall_notice(reservation, incident, gpus, now=now)


# --- displacement ------------------------------------------------------------------------------


def incident_displace(
    *, incident: Incident, now: datetime | None = None, time_budget: float | None = None
) -> DisplacementResult:
    """Take the GPUs the incident left in excess from the reservations the policy picks, one
    reservation per transaction, until nothing on the pool is in excess within the incident's
    hours (or ``time_budget`` seconds have passed: the next run goes on). Marks the incident
    displaced once done. Safe to re-run and to run twice at once."""
    now = now or utcnow()
    deadline = None if time_budget is None else time.monotonic() + time_budget
    incident = Incident.objects.select_related("pool").get(pk=incident.pk)
    result = DisplacementResult(incident_id=incident.pk)
    pending = capacity_selectors.excess_hours(incident.pool_id, incident.start, incident.end)
    targets_cache: dict = {}
    for reservation_id in list(
        _candidates(incident.pool_id, incident.start, incident.end).values_list("pk", flat=True)
    ):
        if (deadline is not None and time.monotonic() > deadline) or not pending.exists():
            break
        for attempt in range(1, ATTEMPTS + 1):
            try:
                moved, lost = _displace_one(
                    incident, reservation_id, now, targets_cache, settle=attempt == ATTEMPTS
                )
            except _RoomTaken:
                continue
            if moved or lost:
                result.reservations += 1
                result.gpu_hours_moved += moved
                result.gpu_hours_lost += lost
            break
    result.remaining_excess = sum(pending.values_list("excess", flat=True))
    if result.remaining_excess == 0:
        capacity_services.incidents_mark_displaced(incident_ids=[incident.pk], now=now)
    else:  # out of time, or reservations locked by someone else: the next run finishes it
        logger.info("Incident %s: %s GPU-hours still in excess", incident.pk, result)
    return result


def incidents_displace_due(*, now: datetime | None = None) -> list[DisplacementResult]:
    """Every minute: displace the incidents that are due and not done yet (recalls reaching
    their start, runs that died half way)."""
    now = now or utcnow()
    due = Incident.objects.filter(displaced_at__isnull=True).filter(
        ~Q(kind=Incident.Kind.RECALL) | Q(start__lte=now)
    )
    return [incident_displace(incident=incident, now=now) for incident in due.order_by("pk")]


class _RoomTaken(Exception):
    """A pool chosen for a move filled up before its rows were locked: plan again."""


def _plan(
    takes: dict, open_from: datetime, pools: list[CapacityPool], free: dict
) -> list[_Segment]:
    """Where the GPUs taken in each hour go, then the hours grouped into segments.

    Hour by hour, the GPUs taken are offered to the pools in order, in whole nodes of each
    pool, the pool used the hour before first (a job moved once stays put). Hours before
    ``open_from`` (already past) cannot move. ``free`` maps (pool id, hour) to free GPUs and
    is used up as moves are planned."""
    plan: dict[datetime, tuple] = {}
    previous: tuple = ()
    for hour in sorted(takes):
        remaining, moves = takes[hour], []
        if hour >= open_from:
            sticky = [pool for pool, _ in previous]
            for pool in sticky + [pool for pool in pools if pool not in sticky]:
                if remaining == 0:
                    break
                step = pool.booking_step
                gpus = min(remaining, free.get((pool.pk, hour), 0)) // step * step
                if gpus > 0:
                    moves.append((pool, gpus))
                    free[pool.pk, hour] -= gpus
                    remaining -= gpus
        previous = plan[hour] = tuple(sorted(moves, key=lambda move: move[0].pk))
    segments: list[_Segment] = []
    for hour in sorted(plan):
        last = segments[-1] if segments else None
        if last and last.end == hour and (last.take, last.moves) == (takes[hour], plan[hour]):
            last.end = hour + HOUR
        else:
            segments.append(_Segment(hour, hour + HOUR, takes[hour], plan[hour]))
    return segments


def target_pools(reservation: Reservation, lost_from: CapacityPool) -> list[CapacityPool]:
    """Pools a reservation's GPUs may move to from ``lost_from``, best first: same GPU model and
    currency, active, within what the tenant's request allowed; same region, then same
    country, then anywhere; primary before backup; then the cheapest for us."""
    scope = reservation.scope or {}
    pools = (
        CapacityPool.objects.select_related("region")
        .filter(
            gpu_model_id=lost_from.gpu_model_id,
            prices__currency=reservation.currency,  # sold in the reservation's currency
            status=CapacityPool.Status.ACTIVE,
        )
        .exclude(pk=lost_from.pk)
    )
    if scope.get("region"):
        pools = pools.filter(region__code=scope["region"])
    if scope.get("provider"):
        pools = pools.filter(region__provider__slug=scope["provider"])
    if scope.get("tier"):
        pools = pools.filter(tier=scope["tier"])
    if scope.get("pool"):
        pools = pools.filter(slug=scope["pool"])
    near = Case(
        When(region_id=lost_from.region_id, then=Value(0)),
        When(region__country=lost_from.region.country, then=Value(1)),
        default=Value(2),
        output_field=IntegerField(),
    )
    backup = Case(
        When(tier=CapacityPool.Tier.BACKUP, then=Value(1)),
        default=Value(0),
        output_field=IntegerField(),
    )
    return list(pools.order_by(near, backup, "cost_per_gpu_hour", "slug"))


def _free_snapshot(pools: list[CapacityPool], start: datetime, end: datetime) -> dict:
    """Free GPUs of each pool in each hour of [start, end), read without locks."""
    free = {}
    for pool in pools:
        for i, value in enumerate(capacity_selectors.free_by_hour(pool, start, end)):
            free[pool.pk, start + i * HOUR] = value
    return free


def _displace_one(
    incident: Incident, reservation_id: UUID, now: datetime, targets_cache: dict, *, settle: bool
) -> tuple[int, int]:
    """Deal with one reservation in one transaction; returns GPU-hours (moved, lost).
    Raises _RoomTaken when a planned target filled up meanwhile, unless ``settle`` (then what
    is left finds no room and is lost)."""
    pool = incident.pool
    open_from = floor_hour(now)
    with transaction.atomic():
        tenant_id = Reservation.objects.values_list("tenant_id", flat=True).get(pk=reservation_id)
        Tenant.objects.select_for_update(of=("self",)).get(pk=tenant_id)
        reservation = (
            Reservation.objects.select_for_update(of=("self",))
            .select_related(*RESERVATION_DISPLAY)
            .get(pk=reservation_id)
        )
        placed = Placement.objects.filter(
            reservation=reservation, pool=pool, end__gt=incident.start
        )
        if incident.end is not None:
            placed = placed.filter(start__lt=incident.end)
        own = list(placed.values_list("start", "end"))
        if not own:
            return 0, 0
        lo = max(incident.start, min(start for start, _ in own))
        hi = max(end for _, end in own)
        if incident.end is not None:
            hi = min(hi, incident.end)
        excess = dict(
            capacity_selectors.excess_hours(pool.pk, lo, hi).values_list("hour", "excess")
        )
        takes = _takes(_on_pool_by_hour(reservation, pool.pk, excess), excess, pool.booking_step)
        if not takes:
            return 0, 0
        first, last = min(takes), max(takes) + HOUR
        targets = []
        if last > open_from:
            key = (reservation.currency, tuple(sorted((reservation.scope or {}).items())))
            if key not in targets_cache:
                targets_cache[key] = target_pools(reservation, pool)
            targets = targets_cache[key]
        # Plan on a snapshot, lock every ledger row involved (ascending), then plan again on
        # what the locked rows say: the moves are then certain to fit.
        segments = _plan(takes, open_from, targets, _free_snapshot(targets, first, last))
        chosen = {target.pk: target for segment in segments for target, _ in segment.moves}
        planned = sum(_moved(segment) for segment in segments)
        locked = capacity_services.ledger_lock(
            [(pool.pk, first, last)] + [(pk, first, last) for pk in chosen]
        )
        excess = {row.hour: row.excess for row in locked if row.pool_id == pool.pk}
        takes = _takes(_on_pool_by_hour(reservation, pool.pk, excess), excess, pool.booking_step)
        free = {
            (row.pool_id, row.hour): max(0, row.capacity - row.booked)
            for row in locked
            if row.pool_id in chosen
        }
        segments = _plan(takes, open_from, [t for t in targets if t.pk in chosen], free)
        if sum(_moved(segment) for segment in segments) < planned and not settle:
            raise _RoomTaken()
        return _apply(incident, reservation, segments, now)


def _moved(segment: _Segment) -> int:
    return sum(gpus for _, gpus in segment.moves) * int((segment.end - segment.start) / HOUR)


def _apply(
    incident: Incident, reservation: Reservation, segments: list[_Segment], now: datetime
) -> tuple[int, int]:
    """Move, log and tell; the ledger rows are already locked and the moves checked."""
    taken: dict = {}
    added: dict = defaultdict(int)
    moves, losses = [], []
    moved_hours = lost_hours = 0
    for segment in segments:
        hours = hour_range(segment.start, segment.end)
        moved = sum(gpus for _, gpus in segment.moves)
        for hour in hours:
            taken[incident.pool_id, hour] = segment.take
            for target, gpus in segment.moves:
                added[(target.pk, incident.pk), hour] += gpus
        moves += [(target, segment.start, segment.end, gpus) for target, gpus in segment.moves]
        moved_hours += moved * len(hours)
        lost_hours += (segment.take - moved) * len(hours)
        if segment.take > moved:
            losses.append((segment.start, segment.end, segment.take - moved))
    placements_move(reservation=reservation, taken=taken, added=dict(added))
    Displacement.objects.bulk_create(
        Displacement(
            incident=incident,
            reservation=reservation,
            start=segment.start,
            end=segment.end,
            gpus_taken=segment.take,
            gpus_moved=sum(gpus for _, gpus in segment.moves),
            gpus_lost=segment.take - sum(gpus for _, gpus in segment.moves),
            created_at=now,
        )
        for segment in segments
    )
    if lost_hours:
        # The charge follows what will be delivered: hours taken away are never billed.
        reservation.charge = (
            round_money(
                reservation.unit_price * placed_gpu_hours(reservation), reservation.currency
            )
            + reservation.cancellation_fee
        )
        # What a finalized invoice already charged beyond it comes back as a credit note.
        reservation.invoiced_amount = min(reservation.invoiced_amount, reservation.charge)
        reservation.save(update_fields=["charge", "invoiced_amount", "updated_at"])
    if moves:
        events.reservation_moved(reservation, incident, moves, now=now)
    if losses:
        events.reservation_interrupted(reservation, incident, losses, now=now)
    return moved_hours, lost_hours
