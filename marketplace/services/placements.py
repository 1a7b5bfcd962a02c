"""Where a reservation's GPUs are: its placements, which the capacity ledger sums.

Every change of a placement goes with the matching ``capacity_claim`` / ``capacity_release``
in the caller's transaction (reservation row locked), so on every pool the ledger's ``booked``
equals the sum of the placements covering each hour."""

from collections import defaultdict
from datetime import datetime

from capacity.services import capacity_claim, capacity_release, ledger_shift
from core.timeutils import HOUR, hour_range
from marketplace.models import Placement, Reservation


def placement_add(
    *,
    reservation: Reservation,
    pool_id: int,
    start: datetime,
    end: datetime,
    gpus: int,
    incident_id: int | None = None,
) -> Placement:
    """Claim ``gpus`` on the pool for [start, end) and record the placement; one that ends at
    ``start`` with the same pool, GPUs and cause is lengthened instead (an extension). A new
    booking claims and inserts its first placement itself (``booking._place``)."""
    capacity_claim(pool_id=pool_id, start=start, end=end, gpus=gpus)
    adjacent = Placement.objects.filter(
        reservation=reservation,
        pool_id=pool_id,
        end=start,
        gpus=gpus,
        incident__isnull=incident_id is None,
    )
    if incident_id is not None:
        adjacent = adjacent.filter(incident_id=incident_id)
    before = adjacent.first()
    if before is not None:
        before.end = end
        before.save(update_fields=["end"])
        return before
    placement = Placement(
        reservation=reservation,
        pool_id=pool_id,
        start=start,
        end=end,
        gpus=gpus,
        incident_id=incident_id,
    )
    if pool_id == reservation.pool_id and Reservation.pool.is_cached(reservation):
        placement.pool = reservation.pool  # what the event names, without reading it back
    placement.save(force_insert=True)
    return placement


def placements_release_from(*, reservation: Reservation, moment: datetime) -> None:
    """Give back every GPU the reservation holds from ``moment`` on (cancellation, expiry).
    Pools are released in ascending id and hour order, the ledger's lock order."""
    for placement in Placement.objects.filter(reservation=reservation, end__gt=moment).order_by(
        "pool_id", "start"
    ):
        capacity_release(
            pool_id=placement.pool_id,
            start=max(placement.start, moment),
            end=placement.end,
            gpus=placement.gpus,
        )
        if placement.start >= moment:
            placement.delete()
        else:
            placement.end = moment
            placement.save(update_fields=["end"])


Key = tuple[int, int | None]  # (pool id, incident id): what a placement is, besides its hours


def placements_move(
    *,
    reservation: Reservation,
    taken: dict[tuple[int, datetime], int],
    added: dict[tuple[Key, datetime], int],
) -> None:
    """Take ``taken[(pool id, hour)]`` GPUs off the reservation's placements and place
    ``added[((pool id, incident id), hour)]`` GPUs, hour by hour; the ledger follows in the
    same statements' transaction. The ledger rows involved must be locked (``ledger_lock``)
    and the added GPUs checked for room. The placements are rewritten from the resulting
    hour-by-hour profile, consecutive hours with the same pool, cause and GPUs merged, so
    they never overlap on one pool."""
    profile: dict[Key, dict[datetime, int]] = defaultdict(dict)
    for pool_id, incident_id, start, end, gpus in Placement.objects.filter(
        reservation=reservation
    ).values_list("pool_id", "incident_id", "start", "end", "gpus"):
        for hour in hour_range(start, end):
            profile[pool_id, incident_id][hour] = gpus
    for (pool_id, hour), gpus in taken.items():
        # Taken from whatever placements the reservation has on the pool in that hour, the
        # booking's own first (moved-in GPUs are the last to go).
        keys = sorted((key for key in profile if key[0] == pool_id), key=lambda k: k[1] or 0)
        for key in keys:
            held = profile[key].get(hour, 0)
            take = min(held, gpus)
            if take:
                profile[key][hour] = held - take
                gpus -= take
        if gpus:
            raise ValueError(f"{reservation.pk} holds too few GPUs on pool {pool_id} at {hour}.")
    for (key, hour), gpus in added.items():
        profile[key][hour] = profile[key].get(hour, 0) + gpus
    deltas: dict[tuple[int, datetime], int] = defaultdict(int)
    for (pool_id, hour), gpus in taken.items():
        deltas[pool_id, hour] -= gpus
    for ((pool_id, _), hour), gpus in added.items():
        deltas[pool_id, hour] += gpus
    ledger_shift(dict(deltas))
    rows: list[Placement] = []
    for (placed_pool, cause), hours in profile.items():
        run: Placement | None = None  # the placement being built
        for hour in sorted(hours):
            held = hours[hour]
            if run is not None and run.end == hour and run.gpus == held:
                run.end = hour + HOUR
                continue
            run = None
            if held:
                run = Placement(
                    reservation=reservation,
                    pool_id=placed_pool,
                    incident_id=cause,
                    start=hour,
                    end=hour + HOUR,
                    gpus=held,
                )
                rows.append(run)
    Placement.objects.filter(reservation=reservation).delete()
    Placement.objects.bulk_create(sorted(rows, key=lambda placement: placement.start))


def placed_gpu_hours(
    reservation: Reservation, start: datetime | None = None, end: datetime | None = None
) -> int:
    """GPU-hours the reservation's placements hold within [start, end) (default: all)."""
    total = 0
    placements = Placement.objects.filter(reservation=reservation)
    for p_start, p_end, gpus in placements.values_list("start", "end", "gpus"):
        lo = p_start if start is None else max(p_start, start)
        hi = p_end if end is None else min(p_end, end)
        if hi > lo:
            total += gpus * int((hi - lo) / HOUR)
    return total
