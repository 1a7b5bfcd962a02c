"""What the demand side tells tenants: events recorded in the transaction that makes the change
(the events app's outbox), with ``data`` as the API shows the resource at that moment."""

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from events.services import NewEvent, events_record
from marketplace import selectors
from marketplace.models import Reservation, Tenant


def _reservation_data(reservation: Reservation) -> dict:
    from marketplace.api.serializers import ReservationSerializer  # the API's own shape

    return dict(ReservationSerializer(reservation).data)


def reservations_event(
    type_: str, reservations: Iterable[Reservation], *, now: datetime | None = None
) -> None:
    """Record ``type_`` for each reservation (their pools' region, provider and GPU model
    should be loaded: the data names them)."""
    events_record(
        events=[
            NewEvent(reservation.tenant_id, type_, _reservation_data(reservation))
            for reservation in reservations
        ],
        now=now,
    )


def reservation_event(type_: str, reservation: Reservation, *, now: datetime | None = None) -> None:
    reservations_event(type_, [reservation], now=now)


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
    available = selectors.credit_available(tenant=tenant)
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
