"""Writes of the events app: recording events (the outbox) and managing webhook endpoints.

``event_record`` is called by capacity, marketplace and billing inside the transaction that
makes the change: the event, its per-tenant sequence number and one pending delivery per
subscribed endpoint commit or roll back with it. Delivery is the workers' job
(events/delivery.py); a commit only nudges them."""

import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from ulid import ULID

from core.errors import Conflict, InvalidInput, NotFound
from core.timeutils import utcnow
from events import signing
from events.addresses import url_check
from events.models import Delivery, Event, EventSequence, WebhookEndpoint
from events.selectors import numeric_id
from events.types import EVENT_TYPES

DESCRIPTION_MAX_LENGTH = 500


class DisabledByOperator(Conflict):
    code = "endpoint_disabled_by_operator"
    default_detail = "An operator disabled this endpoint; contact support to enable it again."


class UnknownEventType(InvalidInput):
    code = "unknown_event_type"
    default_detail = "Unknown event type."


def event_id_new(moment: datetime) -> str:
    """``evt_`` + a ULID: sortable by creation time, unique without coordination."""
    return f"evt_{ULID.from_datetime(moment)}"


@dataclass(frozen=True)
class NewEvent:
    tenant_id: int
    type: str
    data: dict[str, Any]


def _check_types(types: Iterable[str]) -> None:
    unknown = sorted(set(types) - EVENT_TYPES.keys())
    if unknown:
        raise UnknownEventType(
            f"Unknown event type {unknown[0]!r}.", extra={"valid_types": sorted(EVENT_TYPES)}
        )


def _sequences(tenant_id: int, count: int) -> range:
    """The next ``count`` sequence numbers of the tenant's events. The counter row stays locked
    until the caller's transaction ends, so numbers follow commit order without gaps."""
    table = connection.ops.quote_name(EventSequence._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (tenant_id, last_sequence) VALUES (%s, %s) "  # noqa: S608
            f"ON CONFLICT (tenant_id) DO UPDATE "
            f"SET last_sequence = {table}.last_sequence + EXCLUDED.last_sequence "
            f"RETURNING last_sequence",
            [tenant_id, count],
        )
        last = cursor.fetchone()[0]
    return range(last - count + 1, last + 1)


def events_record(*, events: Sequence[NewEvent], now: datetime | None = None) -> list[Event]:
    """Record events inside the caller's transaction, with one pending delivery per enabled
    endpoint of the tenant that subscribes to the type. Returns the events, in order."""
    if not events:
        return []
    if not connection.in_atomic_block:
        raise RuntimeError("Record events inside the transaction that makes the change.")
    _check_types(event.type for event in events)
    now = now or utcnow()
    by_tenant: dict[int, list[NewEvent]] = defaultdict(list)
    for event in events:
        by_tenant[event.tenant_id].append(event)
    if connection.vendor == "postgresql":
        return _events_record_at_once(by_tenant, now)
    rows = []
    for tenant_id in sorted(by_tenant):  # counters locked in one order: no deadlock
        tenant_events = by_tenant[tenant_id]
        for event, sequence in zip(
            tenant_events, _sequences(tenant_id, len(tenant_events)), strict=True
        ):
            rows.append(
                Event(
                    id=event_id_new(now),
                    tenant_id=tenant_id,
                    sequence=sequence,
                    type=event.type,
                    data=event.data,
                    created_at=now,
                )
            )
    Event.objects.bulk_create(rows, batch_size=1000)
    endpoints = defaultdict(list)
    for endpoint_id, tenant_id, types in WebhookEndpoint.objects.filter(
        tenant_id__in=list(by_tenant), enabled=True
    ).values_list("id", "tenant_id", "event_types"):
        endpoints[tenant_id].append((endpoint_id, set(types)))
    deliveries = [
        Delivery(
            event_id=event.id,
            endpoint_id=endpoint_id,
            tenant_id=event.tenant_id,
            next_attempt_at=now,
            created_at=now,
        )
        for event in rows
        for endpoint_id, types in endpoints[event.tenant_id]
        if not types or event.type in types
    ]
    if deliveries:
        Delivery.objects.bulk_create(deliveries, batch_size=1000)
        transaction.on_commit(_nudge_workers)
    return rows


# ``events_record`` on PostgreSQL in one statement: the tenants' counters are moved on in
# ascending tenant order (the lock order), the events numbered from them in the order given,
# and one pending delivery made per enabled endpoint of the tenant that subscribes to the type
# (an empty list subscribes to every type). It returns each event's id and number.
_RECORD_SQL = """
WITH counter AS (
    INSERT INTO {sequences} (tenant_id, last_sequence)
    SELECT tenant_id, count(*) FROM unnest(%(tenants)s::bigint[]) AS given(tenant_id)
    GROUP BY tenant_id ORDER BY tenant_id
    ON CONFLICT (tenant_id) DO UPDATE
    SET last_sequence = {sequences}.last_sequence + EXCLUDED.last_sequence
    RETURNING tenant_id, last_sequence
), numbered AS (
    SELECT given.id, given.tenant_id, given.type, given.data::jsonb AS data,
           counter.last_sequence - count(*) OVER tenant_events
               + row_number() OVER (tenant_events ORDER BY given.position) AS sequence
    FROM unnest(%(ids)s::text[], %(tenants)s::bigint[], %(types)s::text[], %(data)s::text[])
         WITH ORDINALITY AS given(id, tenant_id, type, data, position)
    JOIN counter USING (tenant_id)
    WINDOW tenant_events AS (PARTITION BY given.tenant_id)
), recorded AS (
    INSERT INTO {events} (id, tenant_id, sequence, type, data, created_at)
    SELECT id, tenant_id, sequence, type, data, %(now)s FROM numbered
    RETURNING id, tenant_id, type
), queued AS (
    INSERT INTO {deliveries} (event_id, endpoint_id, tenant_id, status, attempts,
                              next_attempt_at, last_error, created_at)
    SELECT recorded.id, endpoint.id, recorded.tenant_id, %(pending)s, 0, %(now)s, '', %(now)s
    FROM recorded JOIN {endpoints} AS endpoint
      ON endpoint.tenant_id = recorded.tenant_id AND endpoint.enabled
    WHERE jsonb_array_length(endpoint.event_types) = 0 OR endpoint.event_types ? recorded.type
    RETURNING 1
)
SELECT id, sequence, (SELECT count(*) FROM queued) FROM numbered
"""


def _events_record_at_once(by_tenant: dict[int, list[NewEvent]], now: datetime) -> list[Event]:
    """``events_record`` in one round trip (``_RECORD_SQL``); the same rows and order."""
    given = [
        (event_id_new(now), event)
        for tenant_id in sorted(by_tenant)
        for event in by_tenant[tenant_id]
    ]
    quote = connection.ops.quote_name
    sql = _RECORD_SQL.format(
        sequences=quote(EventSequence._meta.db_table),
        events=quote(Event._meta.db_table),
        deliveries=quote(Delivery._meta.db_table),
        endpoints=quote(WebhookEndpoint._meta.db_table),
    )
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            {
                "ids": [event_id for event_id, _ in given],
                "tenants": [event.tenant_id for _, event in given],
                "types": [event.type for _, event in given],
                "data": [json.dumps(event.data) for _, event in given],
                "now": now,
                "pending": Delivery.Status.PENDING.value,
            },
        )
        numbered = cursor.fetchall()
    sequences = {event_id: sequence for event_id, sequence, _ in numbered}
    if numbered and numbered[0][2]:
        transaction.on_commit(_nudge_workers)
    recorded = []
    for event_id, event in given:
        row = Event(
            id=event_id,
            tenant_id=event.tenant_id,
            sequence=sequences[event_id],
            type=event.type,
            data=event.data,
            created_at=now,
        )
        row._state.adding, row._state.db = False, connection.alias  # as stored
        recorded.append(row)
    return recorded


def event_record(
    *, tenant_id: int, type: str, data: dict[str, Any], now: datetime | None = None
) -> Event:
    """Record one event in the caller's transaction (see ``events_record``)."""
    return events_record(events=[NewEvent(tenant_id, type, data)], now=now)[0]


# --- waking the delivery workers -----------------------------------------------------------

# When the latest nudge runs, on this process's monotonic clock (in the future while a
# deferred one waits).
_nudge_at = float("-inf")
_nudge_lock = threading.Lock()


def _nudge_workers() -> None:
    """After a commit that created deliveries, ask a worker to send them now rather than at the
    next scheduled run. At most one message per process every WEBHOOK_NUDGE_SECONDS: a worker
    drains every due delivery, so under load many commits share one message. A commit within
    that time of the last nudge sends one that waits out the rest of it (a countdown), unless
    such a message is already waiting: the worker may have drained before this commit, and
    every commit must be followed by a run. Losing a nudge (broker down) costs only latency:
    the beat schedule sends what is due."""
    global _nudge_at
    with _nudge_lock:
        moment = time.monotonic()
        if _nudge_at >= moment:
            return  # a waiting message runs after this commit
        previous = _nudge_at
        _nudge_at = max(moment, previous + settings.WEBHOOK_NUDGE_SECONDS)
        countdown = _nudge_at - moment
    from events.tasks import deliver_webhooks  # the task module imports the services

    try:
        deliver_webhooks.apply_async(countdown=countdown or None, retry=False)
    except Exception:  # the broker being down must not fail a committed request
        with _nudge_lock:
            _nudge_at = previous


# --- webhook endpoints -----------------------------------------------------------------------


def _validate_endpoint(url: str, event_types: list[str], description: str) -> None:
    url_check(url)
    _check_types(event_types)
    if len(description) > DESCRIPTION_MAX_LENGTH:
        raise InvalidInput(
            f"The description is at most {DESCRIPTION_MAX_LENGTH} characters.",
            fields={"description": [{"code": "max_length", "message": "Too long."}]},
        )


def endpoint_get(*, tenant_id: int, endpoint_id: object) -> WebhookEndpoint:
    """Raises NotFound for another tenant's endpoint (a 404, never a 403)."""
    pk = numeric_id(endpoint_id, "No such webhook endpoint.")
    try:
        return WebhookEndpoint.objects.get(pk=pk, tenant_id=tenant_id)
    except WebhookEndpoint.DoesNotExist:
        raise NotFound("No such webhook endpoint.") from None


@transaction.atomic
def endpoint_create(
    *, tenant_id: int, url: str, event_types: list[str] | None = None, description: str = ""
) -> WebhookEndpoint:
    """A new endpoint with a fresh secret (shown to the tenant once, in the response)."""
    event_types = sorted(set(event_types or []))
    _validate_endpoint(url, event_types, description)
    return WebhookEndpoint.objects.create(
        tenant_id=tenant_id,
        url=url,
        event_types=event_types,
        description=description,
        secret=signing.secret_new(),
    )


@transaction.atomic
def endpoint_update(
    *, tenant_id: int, endpoint_id: object, by_operator: bool = False, **changes: Any
) -> WebhookEndpoint:
    """Change ``url``, ``event_types``, ``description`` or ``enabled``. A tenant cannot enable
    an endpoint an operator disabled (DisabledByOperator). Enabling an endpoint
    clears why it was disabled and its failure streak."""
    endpoint = endpoint_get(tenant_id=tenant_id, endpoint_id=endpoint_id)
    endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    if "event_types" in changes:
        changes["event_types"] = sorted(set(changes["event_types"] or []))
    _validate_endpoint(
        changes.get("url", endpoint.url),
        changes.get("event_types", endpoint.event_types),
        changes.get("description", endpoint.description),
    )
    for field in ("url", "event_types", "description"):
        if field in changes:
            setattr(endpoint, field, changes[field])
    if "enabled" in changes and changes["enabled"] != endpoint.enabled:
        if (
            changes["enabled"]
            and not by_operator
            and (endpoint.disabled_reason == WebhookEndpoint.DisabledReason.BY_OPERATOR)
        ):
            raise DisabledByOperator()
        endpoint.enabled = changes["enabled"]
        if endpoint.enabled:
            endpoint.disabled_reason, endpoint.disabled_at = "", None
            endpoint.failing_since = None
        else:
            endpoint.disabled_reason = WebhookEndpoint.DisabledReason.BY_TENANT
            endpoint.disabled_at = utcnow()
    endpoint.save()
    return endpoint


@transaction.atomic
def endpoint_set_enabled_by_operator(
    *, tenant_id: int, endpoint_id: object, enabled: bool, now: datetime | None = None
) -> bool:
    """An operator turns a tenant's endpoint off (``disabled_reason`` ``by_operator``: its
    deliveries wait, pending) or back on (as ``endpoint_update`` enables). Returns whether
    anything changed: an endpoint already in that state is left as it is."""
    endpoint = endpoint_get(tenant_id=tenant_id, endpoint_id=endpoint_id)
    endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    if endpoint.enabled == enabled:
        return False
    if enabled:
        endpoint_update(
            tenant_id=tenant_id, endpoint_id=endpoint.pk, enabled=True, by_operator=True
        )
        return True
    endpoint.enabled = False
    endpoint.disabled_reason = WebhookEndpoint.DisabledReason.BY_OPERATOR
    endpoint.disabled_at = now or utcnow()
    endpoint.save(update_fields=["enabled", "disabled_reason", "disabled_at", "updated_at"])
    return True


@transaction.atomic
def endpoint_delete(*, tenant_id: int, endpoint_id: object) -> None:
    endpoint_get(tenant_id=tenant_id, endpoint_id=endpoint_id).delete()


@transaction.atomic
def endpoint_rotate_secret(
    *, tenant_id: int, endpoint_id: object, now: datetime | None = None
) -> WebhookEndpoint:
    """A new secret signs from now on; the old one keeps signing beside it for
    WEBHOOK_SECRET_OVERLAP_HOURS so receivers can switch without losing a message."""
    now = now or utcnow()
    endpoint = endpoint_get(tenant_id=tenant_id, endpoint_id=endpoint_id)
    endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_expires_at = now + timedelta(
        hours=settings.WEBHOOK_SECRET_OVERLAP_HOURS
    )
    endpoint.secret = signing.secret_new()
    endpoint.save()
    return endpoint


def endpoint_signing_secrets(endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    """The secrets that sign a delivery sent at ``now``: the current one, and the previous one
    during the overlap after a rotation."""
    secrets_ = [endpoint.secret]
    if (
        endpoint.previous_secret
        and endpoint.previous_secret_expires_at
        and (now < endpoint.previous_secret_expires_at)
    ):
        secrets_.append(endpoint.previous_secret)
    return secrets_


@transaction.atomic
def delivery_resend(*, delivery_ids: Iterable[int], now: datetime | None = None) -> int:
    """Send deliveries again (an operator's action): back to pending, due now, and a worker is
    woken. A delivery that had used up the retry schedule gets one more attempt."""
    now = now or utcnow()
    resent = Delivery.objects.filter(pk__in=list(delivery_ids)).update(
        status=Delivery.Status.PENDING, next_attempt_at=now
    )
    if resent:
        transaction.on_commit(_nudge_workers)
    return resent


def events_prune(*, now: datetime | None = None, batch_size: int = 5000) -> int:
    """Delete events older than EVENTS_RETENTION_DAYS (with their deliveries and attempts), a
    batch per transaction. Returns how many events went."""
    cutoff = (now or utcnow()) - timedelta(days=settings.EVENTS_RETENTION_DAYS)
    removed = 0
    while True:
        with transaction.atomic():
            ids = list(
                Event.objects.filter(created_at__lt=cutoff)
                .order_by("created_at")
                .values_list("pk", flat=True)[:batch_size]
            )
            if not ids:
                return removed
            Event.objects.filter(pk__in=ids).delete()
        removed += len(ids)
