"""Booking: quotes (held capacity), reservations, cancellation, extension, lifecycle.

Every function here is the one door for its state change. Capacity moves only through the
reservation's placements (``placements.py``, which claim and release on the ledger) in the
same transaction as the reservation row, so the ledger always equals what they imply.

Lock order (never reversed, so concurrent calls cannot deadlock):
tenant row -> reservation row -> pool row -> pool-hour rows ascending."""

import functools
import hashlib
import json
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast
from uuid import UUID

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import DateTimeField, ExpressionWrapper, F, QuerySet, Value

from billing.credit import credit_available
from capacity.errors import InsufficientCapacity, InvalidWindow
from capacity.models import GpuModel
from capacity.services import capacity_claim
from core.db import insert_together
from core.errors import NotFound
from core.money import round_money
from core.timeutils import HOUR, ceil_hour, floor_hour, hours_between, is_whole_hour, utcnow
from marketplace import events, pricing, selectors
from marketplace.errors import (
    CreditLimitExceeded,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    InvalidGpuCount,
    InvalidStateTransition,
    NoMatchingPool,
    QuotaExceeded,
    QuoteExpired,
    TenantSuspended,
    UnknownGpuModel,
)
from marketplace.models import (
    IdempotencyRecord,
    Placement,
    Reservation,
    Tenant,
)
from marketplace.services.placements import (
    placed_gpu_hours,
    placement_add,
    placements_release_from,
)

HUNDRED = Decimal(100)
# What a reservation's event data names (pool, region, provider, GPU model): loaded with it.
RESERVATION_DISPLAY = ("pool__region__provider", "pool__gpu_model")


@dataclass(frozen=True)
class BookingRequest:
    gpu_model: str
    gpu_count: int
    start: datetime
    end: datetime
    region: str | None = None
    provider: str | None = None
    tier: str | None = None
    pool: str | None = None
    max_unit_price: Decimal | None = None

    def __post_init__(self) -> None:
        # Hours are counted in UTC. Python subtracts and adds datetimes that share a tzinfo
        # (e.g. ZoneInfo("America/New_York")) on the wall clock, which across a DST change
        # is an hour off: the booking would be priced, and its ledger rows laid, wrongly.
        for name in ("start", "end"):
            value = getattr(self, name)
            if isinstance(value, datetime) and value.tzinfo is not None:
                object.__setattr__(self, name, value.astimezone(UTC))

    @property
    def hours(self) -> int:
        return hours_between(self.start, self.end)

    def fingerprint(self) -> str:
        canonical = {k: (str(v) if v is not None else None) for k, v in asdict(self).items()}
        return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()

    @property
    def scope(self) -> dict[str, str]:
        """What the request allowed beyond the GPU model: where an incident may move it."""
        wanted = {
            "region": self.region,
            "provider": self.provider,
            "tier": self.tier,
            "pool": self.pool,
        }
        return {name: value for name, value in wanted.items() if value}


def _field_error(field: str, code: str, message: str) -> dict[str, list[dict[str, str]]]:
    return {field: [{"code": code, "message": message}]}


def validate_window(start: datetime, end: datetime, *, now: datetime | None = None) -> None:
    """Whole UTC hours, at least one hour, not in the past, within the maximum length and the
    booking horizon. Raises InvalidWindow naming the offending field."""
    now = now or utcnow()
    for name, value in (("start", start), ("end", end)):
        if value.tzinfo is None:
            raise InvalidWindow(
                f"{name} needs a UTC offset, e.g. 2026-12-01T09:00:00Z.",
                fields=_field_error(name, "naive_datetime", "Give a UTC offset."),
            )
        # In UTC: 09:00+05:30 is 03:30Z, which would put ledger rows off the hour grid.
        if not is_whole_hour(value.astimezone(UTC)):
            raise InvalidWindow(
                f"{name} must fall on a whole hour (minutes and seconds zero).",
                fields=_field_error(name, "not_whole_hour", "Must fall on a whole hour."),
            )
    start, end = start.astimezone(UTC), end.astimezone(UTC)  # elapsed hours, not wall clock
    if end - start < HOUR:
        raise InvalidWindow(
            "A booking lasts at least one hour and ends after it starts.",
            fields=_field_error("end", "too_short", "At least one hour."),
        )
    if start < floor_hour(now):
        raise InvalidWindow(
            "The window starts in the past.",
            fields=_field_error("start", "in_past", "Must not be in the past."),
        )
    if hours_between(start, end) > settings.BOOKING_MAX_HOURS:
        raise InvalidWindow(
            f"A booking lasts at most {settings.BOOKING_MAX_HOURS} hours.",
            fields=_field_error("end", "too_long", f"At most {settings.BOOKING_MAX_HOURS} h."),
        )
    if end > now + timedelta(days=settings.BOOKING_HORIZON_DAYS):
        raise InvalidWindow(
            f"Bookings reach at most {settings.BOOKING_HORIZON_DAYS} days ahead.",
            fields=_field_error("end", "beyond_horizon", "Too far ahead."),
        )


def _lapsed(hold: Reservation, now: datetime) -> bool:
    """A held quote's hold has run out (every hold has an expiry: a CHECK constraint)."""
    return hold.hold_expires_at is not None and hold.hold_expires_at <= now


def _lock_reservation(
    tenant: Tenant, reservation_id: object, missing: str = "No such reservation."
) -> Reservation:
    try:
        return (
            Reservation.objects.select_for_update(of=("self",))
            .select_related(*RESERVATION_DISPLAY)
            .get(pk=cast(UUID, reservation_id), tenant=tenant)
        )
    except (Reservation.DoesNotExist, ValueError, ValidationError):
        raise NotFound(missing) from None


def _lock_tenant(tenant: Tenant) -> Tenant:
    locked = selectors.tenant_lock(tenant.pk)
    if locked is None:
        raise Tenant.DoesNotExist("The tenant no longer exists.")
    if not locked.is_active:
        raise TenantSuspended()
    return locked


def _check_quota(
    tenant: Tenant, gpus: int, start: datetime, end: datetime, exclude: Reservation | None = None
) -> None:
    hours = hours_between(start, end)
    if exclude is None and hours > tenant.max_reservation_hours:
        raise QuotaExceeded(
            f"Reservations are limited to {tenant.max_reservation_hours} hours for this tenant.",
            extra={"quota": "max_reservation_hours", "limit": tenant.max_reservation_hours},
        )
    peak = selectors.peak_gpus(tenant=tenant, start=start, end=end, exclude=exclude)
    if peak + gpus > tenant.max_gpus:
        raise QuotaExceeded(
            f"The tenant may hold {tenant.max_gpus} GPUs at once; it already holds {peak} in "
            f"this window and asked for {gpus} more.",
            extra={"quota": "max_gpus", "limit": tenant.max_gpus, "in_use": peak},
        )


def _check_credit(tenant: Tenant, amount: Decimal, available: Decimal | None = None) -> None:
    """``available``: the tenant's credit, if the caller read it already (under the lock)."""
    if available is None:
        available = credit_available(tenant=tenant)
    if amount > available:
        raise CreditLimitExceeded(
            f"The booking costs {amount} {tenant.currency}; {max(available, Decimal(0))} of "
            "credit is available.",
            extra={"available_credit": str(max(available, Decimal(0))), "amount": str(amount)},
        )


def _place(tenant: Tenant, request: BookingRequest, *, status: str, now: datetime) -> Reservation:
    """Put the booking on the cheapest pool that takes it (primary before backup at equal
    price), within the caller's transaction and tenant lock. Only pools with a list price in
    the tenant's currency are considered; the reservation is priced and kept in it."""
    if request.gpu_count < 1:  # zero passes every step check; the database would refuse the row
        raise InvalidGpuCount(
            "Ask for at least one GPU.",
            fields=_field_error("gpu_count", "min_value", "At least 1."),
        )
    criteria = selectors.PoolFilter(
        gpu_model=request.gpu_model,
        region=request.region,
        provider=request.provider,
        tier=request.tier,
        pool=request.pool,
    )
    # Only pools sold in the tenant's currency: every price compared and charged is in it.
    currency = tenant.currency
    pools = selectors.bookable_pools(criteria, currency=currency)
    # The model is looked up only when no pool offers it (a pool names an existing model).
    if not pools and not GpuModel.objects.filter(slug=request.gpu_model).exists():
        raise UnknownGpuModel(
            f"Unknown GPU model {request.gpu_model!r}.",
            fields=_field_error("gpu_model", "unknown", "Unknown GPU model."),
        )
    _check_quota(tenant, request.gpu_count, request.start, request.end)
    if not pools:
        raise NoMatchingPool(
            f"No active pool priced in {currency} matches the requested model and location."
        )
    fitting = [pool for pool in pools if request.gpu_count % pool.booking_step == 0]
    if not fitting:
        steps = sorted({pool.booking_step for pool in pools})
        raise InvalidGpuCount(
            f"These pools sell whole nodes: ask for a multiple of {steps[0]} GPUs.",
            fields=_field_error("gpu_count", "not_whole_nodes", f"Multiple of {steps[0]}."),
        )
    hours = request.hours
    terms = pricing.booking_terms(hours)
    commitment = terms.commitment_percent
    priced = []
    for pool in fitting:
        unit = pricing.unit_price(pool=pool, tenant=tenant, hours=hours, commitment=commitment)
        if request.max_unit_price is None or unit <= request.max_unit_price:
            priced.append((unit, pool.tier != pool.Tier.PRIMARY, pool.slug, pool))
    priced.sort(key=lambda row: row[:3])

    # Read before the ledger rows are locked, to hold them for less time (the tenant lock
    # keeps it as it is): the credit is checked once a pool has taken the booking.
    credit = credit_available(tenant=tenant) if priced else Decimal(0)
    best_available = 0
    for index, (unit, _, _, pool) in enumerate(priced):
        try:
            # A refused claim changes nothing, but may leave the pool's ledger rows locked.
            # Another pool is tried next in price order, not lock order: a savepoint gives the
            # rows back first. The last pool needs none (a refusal ends the transaction).
            with transaction.atomic() if index < len(priced) - 1 else nullcontext():
                capacity_claim(
                    pool_id=pool.pk, start=request.start, end=request.end, gpus=request.gpu_count
                )
        except InsufficientCapacity as exc:
            best_available = max(best_available, exc.extra.get("available_gpus", 0))
            continue
        total = pricing.total_price(
            unit=unit, gpus=request.gpu_count, hours=hours, currency=currency
        )
        _check_credit(tenant, total, credit)
        reservation = Reservation(
            tenant=tenant,
            pool=pool,
            gpu_count=request.gpu_count,
            start=request.start,
            end=request.end,
            capacity_until=request.end,
            status=status,
            currency=currency,
            # Priced in the currency: candidate pools carry the price (unit_price needed it).
            list_price_per_gpu_hour=cast(Decimal, pricing.list_price(pool=pool, currency=currency)),
            unit_price=unit,
            total_price=total,
            charge=total,
            hold_expires_at=(
                # never past the start: a quote cannot be confirmed once it has begun
                min(now + timedelta(minutes=settings.QUOTE_HOLD_MINUTES), request.start)
                if status == Reservation.Status.HELD
                else None
            ),
            confirmed_at=now if status == Reservation.Status.CONFIRMED else None,
            scope=request.scope,
            commitment_percent=commitment,
            cancellation_terms=terms.cancellation_terms,
        )
        placement = Placement(
            reservation=reservation,
            pool=pool,
            start=request.start,
            end=request.end,
            gpus=request.gpu_count,
        )
        # The ledger is claimed already: the two rows (and the reservation's audit-trail row)
        # go in in one round trip.
        insert_together(reservation, placement)
        events.reservation_loaded(reservation, placements=[placement])
        return reservation
    raise InsufficientCapacity(
        f"No pool has {request.gpu_count} GPUs free for the whole window"
        + (" at or under the price limit." if request.max_unit_price is not None else "."),
        extra={"available_gpus": best_available},
    )


class Idempotent(tuple[Reservation, bool]):
    """What an idempotent write returns: ``(reservation, replayed)``, plus ``key_expires_at``,
    when the Idempotency-Key stops being remembered (``None`` without a key)."""

    key_expires_at: datetime | None

    def __new__(
        cls, reservation: Reservation, replayed: bool, key_expires_at: datetime | None = None
    ) -> "Idempotent":
        outcome = super().__new__(cls, (reservation, replayed))
        outcome.key_expires_at = key_expires_at
        return outcome


def idempotency_key_ttl() -> timedelta:
    return timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS)


def _claim_key(tenant: Tenant, scope: str, key: str) -> None:
    """Claim the key for this transaction without waiting: a PostgreSQL transaction-level
    advisory lock on a 64-bit hash of (tenant, scope, key). Taken by another transaction means
    the first request with this key is still running: ``IdempotencyKeyInUse``. The lock goes
    with the transaction (commit, rollback, or a dropped connection), so a crashed request
    never leaves the key stuck. A hash collision only costs a spurious 409 (retry-safe).
    Elsewhere (SQLite, one writer at a time) the tenant lock serialises the retry instead."""
    if connection.vendor != "postgresql":
        return
    digest = hashlib.sha256(f"idempotency-key:{tenant.pk}:{scope}:{key}".encode()).digest()
    lock_id = int.from_bytes(digest[:8], "big", signed=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [lock_id])
        (claimed,) = cursor.fetchone()
    if not claimed:
        raise IdempotencyKeyInUse()


def _replay(tenant: Tenant, scope: str, key: str | None, fingerprint: str) -> Idempotent | None:
    """The outcome of the earlier request with this key, if it is still remembered. A record
    past IDEMPOTENCY_KEY_TTL_HOURS is deleted here (the caller holds the key and the tenant
    lock) and the key counts as new."""
    if not key:
        return None
    record = selectors.idempotency_record(tenant_id=tenant.pk, scope=scope, key=key)
    if record is None:
        return None
    expires_at = record.created_at + idempotency_key_ttl()
    if expires_at <= utcnow():
        record.delete()
        return None
    if record.fingerprint != fingerprint:
        raise IdempotencyKeyReused()
    return Idempotent(Reservation.objects.get(pk=record.reservation_id), True, expires_at)


def _remember(
    tenant: Tenant, scope: str, key: str | None, fingerprint: str, reservation: Reservation
) -> datetime | None:
    """Record the outcome under the key; returns when the key expires (``None`` without one)."""
    if not key:
        return None
    record = IdempotencyRecord(
        tenant=tenant, scope=scope, key=key, fingerprint=fingerprint, reservation=reservation
    )
    insert_together(record)
    return record.created_at + idempotency_key_ttl()


def _run_once(
    operation: Callable[..., Reservation],
    scope: str,
    *,
    tenant: Tenant,
    idempotency_key: str | None,
    fingerprint: str,
    **kwargs: Any,
) -> Idempotent:
    """Run ``operation`` under the tenant's lock unless this Idempotency-Key already ran it:
    a replay with the same request returns the reservation as it is now, the same key with
    another request is refused (``IdempotencyKeyReused``). Returns ``(reservation, replayed)``.

    In flight (as draft-ietf-httpapi-idempotency-key-header asks): the key is claimed first,
    without waiting, by an advisory lock held until the transaction ends (``_claim_key``), and
    only then is the tenant locked. So a retry that arrives while the first request still runs
    gets ``IdempotencyKeyInUse`` (409) at once instead of queueing behind it; once the first
    has committed, the retry claims the key, finds its record and replays it. The record is
    written in the same transaction as the reservation, so a rolled-back or crashed first
    request leaves neither a record nor a held key: the retry simply runs.

    Expiry: a record is honoured for IDEMPOTENCY_KEY_TTL_HOURS after its first request (see
    ``_replay``); ``idempotency_records_prune`` deletes older ones."""
    try:
        with transaction.atomic():
            if idempotency_key:
                _claim_key(tenant, scope, idempotency_key)
            locked = _lock_tenant(tenant)
            replay = _replay(locked, scope, idempotency_key, fingerprint)
            if replay is not None:
                return replay
            reservation = operation(tenant=locked, **kwargs)
            expires_at = _remember(locked, scope, idempotency_key, fingerprint, reservation)
            return Idempotent(reservation, False, expires_at)
    except IntegrityError:
        # Another request with the same key won the race (only possible without the advisory
        # lock, i.e. not on PostgreSQL): answer with its outcome.
        with transaction.atomic():
            replay = _replay(tenant, scope, idempotency_key, fingerprint)
        if replay is None:
            raise
        return replay


def _idempotent(scope: str):
    """Make a tenant-scoped write idempotent per Idempotency-Key (see ``_run_once``). The
    wrapped service takes ``tenant``, ``fingerprint`` and an optional ``idempotency_key`` and
    returns ``(reservation, replayed)`` (an ``Idempotent``, which also says when the key
    expires); what that means for HTTP is the view's business."""

    def decorator(operation):
        @functools.wraps(operation)
        def run(
            *, tenant: Tenant, idempotency_key: str | None = None, fingerprint: str, **kwargs: Any
        ) -> Idempotent:
            return _run_once(
                operation,
                scope,
                tenant=tenant,
                idempotency_key=idempotency_key,
                fingerprint=fingerprint,
                **kwargs,
            )

        return run

    return decorator


def idempotency_records_prune(*, now: datetime | None = None, batch_size: int = 5000) -> int:
    """Delete the Idempotency-Key records older than IDEMPOTENCY_KEY_TTL_HOURS, one DELETE of
    at most ``batch_size`` rows per transaction (nothing refers to a record, so no row is
    loaded). Returns how many went."""
    cutoff = (now or utcnow()) - idempotency_key_ttl()
    expired = IdempotencyRecord.objects.filter(created_at__lte=cutoff)
    removed = 0
    while True:
        with transaction.atomic():
            batch = expired.order_by("created_at").values("pk")[:batch_size]
            deleted, _ = IdempotencyRecord.objects.filter(pk__in=batch).delete()
        removed += deleted
        if deleted < batch_size:
            return removed


@_idempotent("quote.create")
def quote_create(
    *, tenant: Tenant, request: BookingRequest, now: datetime | None = None
) -> Reservation:
    """Hold capacity for the booking on the cheapest fitting pool for QUOTE_HOLD_MINUTES, or
    until the window starts if that comes first. Confirming the quote before it expires
    cannot fail for lack of capacity.

    Only a window that starts after ``now`` is quoted: the hour in progress is booked
    directly (``reservation_create``). Raises InvalidWindow (``start``: ``already_started``)
    otherwise."""
    now = now or utcnow()
    validate_window(request.start, request.end, now=now)
    if request.start <= now:
        raise InvalidWindow(
            "A quote is for a window that starts later: this one has already started. Book "
            "the hour in progress directly with POST /api/v1/reservations/.",
            fields=_field_error(
                "start", "already_started", "Must be after now to quote; book it directly."
            ),
        )
    quote = _place(tenant, request, status=Reservation.Status.HELD, now=now)
    events.reservation_event("quote.created", quote, now=now)
    events.balance_check(tenant, now=now)
    return quote


@_idempotent("reservation.create")
def reservation_create(
    *, tenant: Tenant, request: BookingRequest, now: datetime | None = None
) -> Reservation:
    """Book the request on the cheapest fitting pool and confirm it at once."""
    now = now or utcnow()
    validate_window(request.start, request.end, now=now)
    reservation = _place(tenant, request, status=Reservation.Status.CONFIRMED, now=now)
    events.reservation_event("reservation.confirmed", reservation, now=now)
    events.balance_check(tenant, now=now)
    return reservation


@_idempotent("reservation.create")
def _quote_confirm(*, tenant: Tenant, quote_id: object, now: datetime) -> Reservation:
    quote = _lock_reservation(tenant, quote_id, "No such quote.")
    # A hold never outlasts the start of its window (older holds may say later: the start
    # still ends them).
    expires_at = min(quote.hold_expires_at or quote.start, quote.start)
    lapsed = quote.status == Reservation.Status.HELD and expires_at <= now
    if lapsed or quote.status == Reservation.Status.EXPIRED:
        raise QuoteExpired(extra={"expired_at": expires_at.isoformat()})
    if quote.status != Reservation.Status.HELD:
        raise InvalidStateTransition(
            f"The quote is already {quote.status}.", extra={"status": quote.status}
        )
    quote.status = Reservation.Status.CONFIRMED
    quote.confirmed_at = now
    quote.hold_expires_at = None
    quote.save(update_fields=["status", "confirmed_at", "hold_expires_at", "updated_at"])
    events.reservation_event("reservation.confirmed", quote, now=now)
    return quote


def quote_confirm(
    *,
    tenant: Tenant,
    quote_id: object,
    fingerprint: str,
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> tuple[Reservation, bool]:
    """Turn a held quote into a confirmed reservation (no capacity moves: it is already held).
    Returns ``(reservation, replayed)`` like the other idempotent writes.

    Raises QuoteExpired once the hold has lapsed (at ``hold_expires_at``, never later than the
    window's start: a quote is not confirmed once its window has begun), after releasing it
    if the sweeper has not."""
    now = now or utcnow()
    try:
        return _quote_confirm(
            tenant=tenant,
            quote_id=quote_id,
            fingerprint=fingerprint,
            idempotency_key=idempotency_key,
            now=now,
        )
    except QuoteExpired:
        hold_release_lapsed(tenant=tenant, reservation_id=quote_id, now=now)
        raise


@transaction.atomic
def hold_release_lapsed(*, tenant: Tenant, reservation_id: object, now: datetime) -> None:
    """Expire one hold now if its time is up (the sweeper would within a minute)."""
    hold = _lock_reservation(tenant, reservation_id)
    if hold.status == Reservation.Status.HELD and _lapsed(hold, now):
        _expire(hold)
        events.reservation_event("quote.expired", hold, now=now)


def _expire(reservation: Reservation) -> None:
    """Release a lapsed hold. The reservation row must be locked by the caller, who records
    ``quote.expired`` after every ledger change of its transaction (the event counter is the
    last lock a transaction takes)."""
    placements_release_from(reservation=reservation, moment=reservation.start)
    reservation.status = Reservation.Status.EXPIRED
    reservation.capacity_until = reservation.start
    reservation.charge = Decimal("0.00")
    reservation.save(update_fields=["status", "capacity_until", "charge", "updated_at"])


def cancellation_fee_percent(terms: list[dict[str, Any]], notice_hours: int) -> Decimal:
    """The fee percent of the term with the largest notice that ``notice_hours`` meets (none:
    free)."""
    met = [term for term in terms if int(term["min_notice_hours"]) <= notice_hours]
    if not met:
        return Decimal(0)
    return Decimal(str(max(met, key=lambda term: int(term["min_notice_hours"]))["fee_percent"]))


def cancellation_terms(
    reservation: Reservation, now: datetime
) -> tuple[datetime, Decimal, Decimal]:
    """``(release_from, delivered_amount, fee)`` for cancelling at ``now``.

    Hours already begun are delivered and charged in full (the GPU-hours placed: hours an
    incident took away are not); the GPU-hours given back cost the fee of the reservation's
    own cancellation schedule (``Reservation.cancellation_terms``, copied at booking: a rule
    edited later does not change it) with the largest notice the cancellation meets (none:
    free)."""
    release_from = min(max(reservation.start, ceil_hour(now)), reservation.end)
    delivered = round_money(
        reservation.unit_price * placed_gpu_hours(reservation, end=release_from),
        reservation.currency,
    )
    if reservation.status == Reservation.Status.HELD:
        return reservation.start, Decimal("0.00"), Decimal("0.00")
    notice_hours = max(0, int((reservation.start - now).total_seconds() // 3600))
    percent = cancellation_fee_percent(reservation.cancellation_terms, notice_hours)
    fee = round_money(
        reservation.unit_price
        * placed_gpu_hours(reservation, start=release_from)
        * percent
        / HUNDRED,
        reservation.currency,
    )
    return release_from, delivered, fee


@transaction.atomic
def reservation_cancel(
    *,
    tenant: Tenant,
    reservation_id: object,
    cancelled_by: str,
    reason: str = "",
    now: datetime | None = None,
) -> Reservation:
    """Cancel and release the capacity from the next whole hour at once. Cancelling an
    already cancelled reservation returns it unchanged (idempotent); cancelling a quote whose
    hold has lapsed releases it and returns it as expired."""
    now = now or utcnow()
    reservation = _lock_reservation(tenant, reservation_id)
    if reservation.status == Reservation.Status.CANCELLED:
        return reservation
    if reservation.status == Reservation.Status.HELD and _lapsed(reservation, now):
        _expire(reservation)
        events.reservation_event("quote.expired", reservation, now=now)
        return reservation
    if reservation.status not in Reservation.LIVE_STATUSES or reservation.end <= now:
        raise InvalidStateTransition(
            f"A {reservation.status} reservation cannot be cancelled.",
            extra={"status": reservation.status},
        )
    release_from, delivered, fee = cancellation_terms(reservation, now)
    placements_release_from(reservation=reservation, moment=release_from)
    reservation.status = Reservation.Status.CANCELLED
    reservation.capacity_until = release_from
    reservation.cancellation_fee = fee
    reservation.charge = delivered + fee
    reservation.cancelled_at = now
    reservation.cancelled_by = cancelled_by[:200]
    reservation.cancellation_reason = reason[:500]
    reservation.save()
    events.reservation_event("reservation.cancelled", reservation, now=now)
    events.balance_check(tenant, now=now)
    return reservation


@_idempotent("reservation.extend")
def reservation_extend(
    *, tenant: Tenant, reservation_id: object, new_end: datetime, now: datetime | None = None
) -> Reservation:
    """Move ``end`` later on the same pool at the locked unit price, or raise
    InsufficientCapacity (nothing changes). Quotas and credit apply to the added hours."""
    now = now or utcnow()
    reservation = _lock_reservation(tenant, reservation_id)
    if reservation.status not in (Reservation.Status.CONFIRMED, Reservation.Status.ACTIVE) or (
        reservation.end <= now
    ):
        raise InvalidStateTransition(
            f"A {reservation.status} reservation cannot be extended.",
            extra={"status": reservation.status},
        )
    if reservation.pool.status != reservation.pool.Status.ACTIVE:
        raise InvalidStateTransition(
            f"The pool is {reservation.pool.status}: no more hours are sold on it.",
            extra={"pool_status": reservation.pool.status},
        )
    if new_end.tzinfo is None or not is_whole_hour(new_end.astimezone(UTC)):
        raise InvalidWindow(
            "end must be a whole UTC hour.",
            fields=_field_error("end", "not_whole_hour", "Whole UTC hour."),
        )
    new_end = new_end.astimezone(UTC)
    if new_end <= reservation.end:
        raise InvalidWindow(
            "The new end must be after the current end.",
            fields=_field_error("end", "not_later", "Must be after the end."),
        )
    if hours_between(reservation.start, new_end) > settings.BOOKING_MAX_HOURS:
        raise InvalidWindow(
            f"A booking lasts at most {settings.BOOKING_MAX_HOURS} hours.",
            fields=_field_error("end", "too_long", f"At most {settings.BOOKING_MAX_HOURS} h."),
        )
    if new_end > now + timedelta(days=settings.BOOKING_HORIZON_DAYS):
        raise InvalidWindow(
            f"Bookings reach at most {settings.BOOKING_HORIZON_DAYS} days ahead.",
            fields=_field_error("end", "beyond_horizon", "Too far ahead."),
        )
    if hours_between(reservation.start, new_end) > tenant.max_reservation_hours:
        raise QuotaExceeded(
            f"Reservations are limited to {tenant.max_reservation_hours} hours for this tenant.",
            extra={"quota": "max_reservation_hours", "limit": tenant.max_reservation_hours},
        )
    _check_quota(tenant, reservation.gpu_count, reservation.end, new_end, exclude=reservation)
    total = pricing.total_price(
        unit=reservation.unit_price,
        gpus=reservation.gpu_count,
        hours=hours_between(reservation.start, new_end),
        currency=reservation.currency,
    )
    credit = credit_available(tenant=tenant)  # before the ledger rows are locked
    placement_add(
        reservation=reservation,
        pool_id=reservation.pool_id,
        start=reservation.end,
        end=new_end,
        gpus=reservation.gpu_count,
    )
    added = total - reservation.total_price
    _check_credit(tenant, added, credit)
    reservation.end = new_end
    reservation.capacity_until = new_end
    reservation.total_price = total
    reservation.charge += added  # hours an incident took away stay uncharged
    reservation.save(update_fields=["end", "capacity_until", "total_price", "charge", "updated_at"])
    events.reservation_event("reservation.extended", reservation, now=now)
    events.balance_check(tenant, now=now)
    return reservation


def holds_expire(*, now: datetime | None = None, batch_size: int = 500) -> int:
    """Release every hold whose expiry has passed. Safe to run twice at once: each hold is
    claimed with SKIP LOCKED and re-checked under its lock."""
    now = now or utcnow()
    expired = 0
    while True:
        with transaction.atomic():
            # Releasing holds in (pool, start) order takes every ledger row in ascending
            # (pool, hour) order, as bookings do: any hour a later hold adds lies above all the
            # hours already locked in its pool. In primary-key order, two sweepers (or a
            # sweeper and a booking) could each hold the hours the other waits for: deadlock.
            batch = list(
                Reservation.objects.select_for_update(of=("self",), skip_locked=True)
                .select_related(*RESERVATION_DISPLAY)
                .filter(status=Reservation.Status.HELD, hold_expires_at__lte=now)
                .order_by("pool_id", "start", "pk")[:batch_size]
            )
            for reservation in batch:
                _expire(reservation)
            events.reservations_event("quote.expired", batch, now=now)
        expired += len(batch)
        if len(batch) < batch_size:
            return expired


def _advance(
    due: QuerySet[Reservation],
    changes: dict[str, object],
    event_type: str,
    now: datetime,
    batch_size: int,
) -> int:
    """Apply ``changes`` to the ``due`` reservations and record ``event_type`` for each, a batch
    per transaction. Rows are claimed with SKIP LOCKED, so two runs (or a booking holding a
    row) never wait for each other, and ``due`` is re-read under the lock: a reservation
    another run already moved is no longer due (compare-and-set)."""
    moved = 0
    while True:
        with transaction.atomic():
            batch = list(
                due.select_for_update(of=("self",), skip_locked=True)
                .select_related(*RESERVATION_DISPLAY)
                .prefetch_related(*selectors.reservation_prefetch())
                .order_by("pk")[:batch_size]
            )
            if not batch:
                return moved
            Reservation.objects.filter(pk__in=[r.pk for r in batch]).update(**changes)
            for reservation in batch:
                for field, value in changes.items():
                    setattr(reservation, field, value)
            events.reservations_event(event_type, batch, now=now)
        moved += len(batch)
        if len(batch) < batch_size:
            return moved


def reservations_advance(*, now: datetime | None = None, batch_size: int = 500) -> dict[str, int]:
    """Lifecycle: confirmed -> active at start, active (or confirmed) -> completed at end,
    lapsed holds -> expired, and ``reservation.ending_soon`` within each tenant's lead time;
    each with its event. Compare-and-set under row locks: running it twice, or two runs at
    once, changes nothing more and records no event twice."""
    now = now or utcnow()
    expired = holds_expire(now=now)
    completed = _advance(
        Reservation.objects.filter(
            status__in=[Reservation.Status.CONFIRMED, Reservation.Status.ACTIVE], end__lte=now
        ),
        {"status": Reservation.Status.COMPLETED, "updated_at": now},
        "reservation.ended",
        now,
        batch_size,
    )
    activated = _advance(
        Reservation.objects.filter(
            status=Reservation.Status.CONFIRMED, start__lte=now, end__gt=now
        ),
        {"status": Reservation.Status.ACTIVE, "updated_at": now},
        "reservation.started",
        now,
        batch_size,
    )
    # Told once, within each tenant's lead time before the end.
    ending_soon = _advance(
        Reservation.objects.filter(
            status__in=[Reservation.Status.CONFIRMED, Reservation.Status.ACTIVE],
            ending_soon_notified_at__isnull=True,
            end__gt=now,
            end__lte=ExpressionWrapper(
                Value(now) + F("tenant__ending_soon_lead"), output_field=DateTimeField()
            ),
        ),
        {"ending_soon_notified_at": now},
        "reservation.ending_soon",
        now,
        batch_size,
    )
    return {
        "activated": activated,
        "completed": completed,
        "ending_soon": ending_soon,
        "expired": expired,
    }
