"""What the demand side tells tenants: events recorded in the transaction that makes the change
(the events app's outbox), with ``data`` as the API shows the resource at that moment."""

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from django.db.models import prefetch_related_objects
from rest_framework.fields import DateTimeField

from billing.credit import credit_available
from events.services import NewEvent, events_record
from marketplace import selectors
from marketplace.models import Displacement, Placement, Reservation, Tenant


def _reservation_data(reservation: Reservation) -> dict:
    from marketplace.api.serializers import reservation_data  # the API's own shape

    return reservation_data(reservation)


def reservation_loaded(
    reservation: Reservation,
    *,
    placements: Iterable[Placement],
    displacements: Iterable[Displacement] = (),
) -> None:
    """Tell the reservation what its placements and displacements are (a booking has just
    made them, with their pools loaded), so that its event data is rendered from them without
    reading them back."""
    cache = reservation.__dict__.setdefault("_prefetched_objects_cache", {})
    for name, rows in (("placements", placements), ("displacements", displacements)):
        cache.pop(name, None)
        queryset = getattr(reservation, name).all()
        queryset._result_cache = list(rows)
        queryset._prefetch_done = True
        cache[name] = queryset


def reservations_event(
    type_: str, reservations: Iterable[Reservation], *, now: datetime | None = None
) -> None:
    """Record ``type_`` for each reservation (their pools' region, provider and GPU model
    should be loaded: the data names them; their placements and interruptions are loaded
    here unless they were)."""
    reservations = list(reservations)
    prefetch_related_objects(reservations, *selectors.reservation_prefetch())
    events_record(
        events=[
            NewEvent(reservation.tenant_id, type_, _reservation_data(reservation))
            for reservation in reservations
        ],
        now=now,
    )


def reservation_event(type_: str, reservation: Reservation, *, now: datetime | None = None) -> None:
    reservations_event(type_, [reservation], now=now)


def _time(moment: datetime | None) -> str | None:
    """A time as the API writes it (UTC, ``Z``)."""
    return DateTimeField().to_representation(moment) if moment is not None else None


def _incident_data(incident) -> dict:
    return {
        "id": incident.pk,
        "kind": incident.kind,
        "pool": incident.pool.slug,
        "start": _time(incident.start),
        "end": _time(incident.end),
    }


def _with(reservation: Reservation, **extra: object) -> dict:
    prefetch_related_objects([reservation], *selectors.reservation_prefetch())
    return {**_reservation_data(reservation), **extra}


def reservation_recall_notice(
    reservation: Reservation, incident, gpus: int, *, now: datetime | None = None
) -> None:
    """The tenant's backup GPUs will be recalled at ``incident.start``: up to ``gpus`` of
    them in an hour."""
    recall = {
        **_incident_data(incident),
        "gpus": gpus,
        "short_notice": incident.short_notice,
    }
    events_record(
        events=[
            NewEvent(
                reservation.tenant_id,
                "reservation.recall_notice",
                _with(reservation, recall=recall),
            )
        ],
        now=now,
    )


def reservation_moved(
    reservation: Reservation, incident, moves: list, *, now: datetime | None = None
) -> None:
    """``moves``: (pool, start, end, gpus) re-placed at the reservation's own unit price."""
    moved = [
        {"pool": pool.slug, "start": _time(start), "end": _time(end), "gpus": gpus}
        for pool, start, end, gpus in moves
    ]
    data = _with(reservation, incident=_incident_data(incident), moved=moved)
    events_record(events=[NewEvent(reservation.tenant_id, "reservation.moved", data)], now=now)


def reservation_interrupted(
    reservation: Reservation, incident, losses: list, *, now: datetime | None = None
) -> None:
    """``losses``: (start, end, gpus) the reservation does not get; not billed, and credited by
    the SLA policy when the month closes."""
    lost = [
        {
            "start": _time(start),
            "end": _time(end),
            "gpus": gpus,
            "gpu_hours": gpus * int((end - start).total_seconds() // 3600),
        }
        for start, end, gpus in losses
    ]
    data = _with(
        reservation, incident=_incident_data(incident), lost=lost, sla_credit="at_month_close"
    )
    events_record(
        events=[NewEvent(reservation.tenant_id, "reservation.interrupted", data)], now=now
    )


def tenant_suspended(tenant: Tenant, *, now: datetime | None = None) -> None:
    events_record(
        events=[
            NewEvent(
                tenant.pk,
                "tenant.suspended",
                {"name": tenant.name, "slug": tenant.slug, "status": tenant.status},
            )
        ],
        now=now,
    )


def balance_check(tenant: Tenant, *, now: datetime | None = None) -> None:
    """Send ``balance.low`` when the tenant's available credit has fallen below its threshold
    since the last alert; re-arm the alert once credit is back at or above it. The tenant row
    must be locked by the caller (booking and billing both hold it)."""
    threshold = tenant.low_balance_threshold
    if threshold is None:
        return
    available = credit_available(tenant=tenant)
    low = available < threshold
    if low == tenant.low_balance_alerted:
        return
    Tenant.objects.filter(pk=tenant.pk).update(low_balance_alerted=low)
    tenant.low_balance_alerted = low
    if low:
        events_record(
            events=[
                NewEvent(
                    tenant.pk,
                    "balance.low",
                    {
                        "currency": tenant.currency,
                        "credit_available": str(available),
                        "low_balance_threshold": str(threshold.quantize(Decimal("0.01"))),
                        "credit_limit": str(tenant.credit_limit),
                    },
                )
            ],
            now=now,
        )
