"""Sending webhook deliveries, at least once, as Standard Webhooks specify.

A worker claims up to ``WEBHOOK_BATCH_SIZE`` due deliveries with ``FOR UPDATE SKIP LOCKED``
(workers never wait for each other) and leases them by moving ``next_attempt_at`` forward
``WEBHOOK_LEASE_SECONDS``; that commit is short. It then sends the batch concurrently through
one pooled HTTP client (``WEBHOOK_TIMEOUT_SECONDS`` each) and records every attempt and
outcome in one more short transaction. A worker that dies mid-batch leaves its deliveries
pending: they are due again when the lease ends and are sent with the same ``webhook-id``. A
slow worker does not start a request after its lease ended, and records the outcome of one it
started only if it still holds the lease (compare-and-set), so it never undoes what the worker
that took the delivery over recorded.

Outcomes: 2xx succeeds. 410 Gone disables the endpoint. Anything else (an error status, a
timeout, a refused connection, an address that is not allowed) is retried on the schedule
below with ±10 % jitter, later if the endpoint sent ``Retry-After`` (on 429 and 5xx); after the
last retry the delivery fails. An endpoint whose deliveries have all failed for
``WEBHOOK_DISABLE_AFTER_DAYS`` is disabled, saying why."""

import json
import random
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import cache, partial

import httpcore
import httpx
from django.conf import settings
from django.db import connection, transaction
from django.db.models.functions import Coalesce

from core.timeutils import utcnow
from events.addresses import PublicOnlyBackend, UrlNotAllowed, url_check
from events.models import Delivery, DeliveryAttempt, Event, WebhookEndpoint
from events.services import endpoint_signing_secrets
from events.signing import signature_header

# Seconds to wait after the 1st, 2nd, ... failed attempt: 9 attempts over about 37 hours.
RETRY_SCHEDULE = (5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600, 10 * 3600)
MAX_RETRY_AFTER = timedelta(hours=24)
RESPONSE_EXCERPT = 500  # characters kept of a response body (DeliveryAttempt.response_body)
ERROR_LENGTH = 300  # DeliveryAttempt.error


@dataclass(frozen=True)
class Outcome:
    delivery_id: int
    attempted_at: datetime
    status_code: int | None
    duration_ms: int
    body: str = ""
    error: str = ""
    retry_after: timedelta | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def payload(event: Event) -> bytes:
    """The body: ``{"type", "timestamp", "data"}``, as compact JSON."""
    return json.dumps(
        {
            "type": event.type,
            "timestamp": event.created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "data": event.data,
        },
        separators=(",", ":"),
    ).encode()


def retry_delay(attempts: int, retry_after: timedelta | None = None) -> timedelta | None:
    """How long to wait after the ``attempts``-th failed attempt, or None when it was the
    last one."""
    if attempts > len(RETRY_SCHEDULE):
        return None
    delay = timedelta(seconds=RETRY_SCHEDULE[attempts - 1] * random.uniform(0.9, 1.1))
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return delay


def _retry_after(response: httpx.Response, now: datetime) -> timedelta | None:
    """What ``Retry-After`` asks for (seconds or an HTTP date), at most MAX_RETRY_AFTER; None
    if absent or unreadable. Whatever the endpoint sends must not break the batch."""
    if response.status_code != 429 and response.status_code < 500:
        return None
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return timedelta(seconds=min(int(value), MAX_RETRY_AFTER.total_seconds()))
    try:
        return min(max(parsedate_to_datetime(value) - now, timedelta(0)), MAX_RETRY_AFTER)
    except (TypeError, ValueError, OverflowError):
        return None


@cache
def _ssl_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()  # loading the CA bundle takes ~15 ms: once per process


class _Transport(httpx.HTTPTransport):
    """httpx's transport, with connections opened by PublicOnlyBackend (httpx takes no network
    backend; its connection pool does)."""

    def __init__(self, limits: httpx.Limits) -> None:
        # Not HTTPTransport.__init__: all it does is build the pool built here.
        self._pool = httpcore.ConnectionPool(
            ssl_context=_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=PublicOnlyBackend(),
        )


def _client(transport: httpx.BaseTransport | None = None) -> httpx.Client:
    # One pooled client per run of deliveries_send_due; redirects are not followed (a redirect
    # could point the request at an address we would refuse).
    return httpx.Client(
        timeout=settings.WEBHOOK_TIMEOUT_SECONDS,
        follow_redirects=False,
        # No proxy from the environment: a proxy would connect on our behalf and bypass the
        # public-address check of PublicOnlyBackend.
        trust_env=False,
        transport=transport
        or _Transport(httpx.Limits(max_connections=settings.WEBHOOK_CONCURRENCY * 2)),
        headers={"User-Agent": "gpu-marketplace-webhooks/1"},
    )


def _send(
    client: httpx.Client, delivery: Delivery, *, send_before: float, now: datetime | None = None
) -> Outcome | None:
    """One attempt, or None when the lease ended before it could start."""
    if time.monotonic() >= send_before:
        return None
    now = now or utcnow()
    started = time.monotonic()

    def outcome(**fields) -> Outcome:
        duration = int((time.monotonic() - started) * 1000)
        return Outcome(delivery_id=delivery.pk, attempted_at=now, duration_ms=duration, **fields)

    endpoint, event = delivery.endpoint, delivery.event
    body = payload(event)
    timestamp = int(now.timestamp())
    headers = {
        "content-type": "application/json",
        "webhook-id": event.id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(
            endpoint_signing_secrets(endpoint, now), event.id, timestamp, body
        ),
    }
    try:
        # The scheme again; the addresses are checked as the connection is made (DNS changes).
        url_check(endpoint.url, resolve=False)
        with client.stream("POST", endpoint.url, content=body, headers=headers) as response:
            excerpt = _excerpt(response)
    except UrlNotAllowed as exc:
        return outcome(status_code=None, error=_text(exc.detail, ERROR_LENGTH))
    except httpx.HTTPError as exc:
        return outcome(status_code=None, error=_text(f"{type(exc).__name__}: {exc}", ERROR_LENGTH))
    return outcome(
        status_code=response.status_code, body=excerpt, retry_after=_retry_after(response, now)
    )


def _excerpt(response: httpx.Response) -> str:
    """The first RESPONSE_EXCERPT bytes of the body, read no further: a large or endless body
    must not fill the worker's memory or hold it."""
    read = b""
    for chunk in response.iter_bytes():
        read += chunk
        if len(read) >= RESPONSE_EXCERPT:
            break
    return _text(read[:RESPONSE_EXCERPT].decode(errors="replace"), RESPONSE_EXCERPT)


def _text(text: str, length: int) -> str:
    # PostgreSQL text cannot hold NUL: one in a response would fail the whole batch's record.
    return text[:length].replace("\x00", "\ufffd")


def _claim(now: datetime, batch_size: int) -> tuple[list[Delivery], datetime]:
    """Lease a batch of due deliveries of enabled endpoints (short transaction). Returns them
    and the end of their lease."""
    lease_until = now + timedelta(seconds=settings.WEBHOOK_LEASE_SECONDS)
    with transaction.atomic():
        ids = list(
            Delivery.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(
                status=Delivery.Status.PENDING,
                next_attempt_at__lte=now,
                endpoint__enabled=True,
            )
            .order_by("next_attempt_at")
            .values_list("pk", flat=True)[:batch_size]
        )
        if not ids:
            return [], lease_until
        Delivery.objects.filter(pk__in=ids).update(next_attempt_at=lease_until)
    deliveries = list(
        Delivery.objects.filter(pk__in=ids).select_related("event", "endpoint").order_by("pk")
    )
    return deliveries, lease_until


# Every delivery of a batch moved on in one statement (a bulk_update's CASE per column costs
# more than the HTTP requests); a delivery whose lease ran out is left alone (compare-and-set).
_DELIVERIES_UPDATE = f"""
    UPDATE {Delivery._meta.db_table} AS d
    SET status = v.status, attempts = v.attempts, next_attempt_at = v.next_attempt_at,
        last_status_code = v.last_status_code, last_error = v.last_error,
        delivered_at = v.delivered_at
    FROM unnest(%s::bigint[], %s::varchar[], %s::integer[], %s::timestamptz[], %s::integer[],
                %s::varchar[], %s::timestamptz[])
        AS v(id, status, attempts, next_attempt_at, last_status_code, last_error, delivered_at)
    WHERE d.id = v.id AND d.status = 'pending' AND d.next_attempt_at = %s
"""  # noqa: S608 - a table name, not input


def _deliveries_update(rows: list[tuple], lease_until: datetime) -> None:
    """Write each delivery's new state unless its lease ran out (``rows`` as built in
    ``_record``). One statement on PostgreSQL; a row at a time elsewhere (SQLite, where
    ``make run`` sends a handful of deliveries)."""
    if connection.vendor == "postgresql":
        columns = [list(column) for column in zip(*rows, strict=True)]
        with connection.cursor() as cursor:
            cursor.execute(_DELIVERIES_UPDATE, [*columns, lease_until])
        return
    fields = ("status", "attempts", "next_attempt_at", "last_status_code", "last_error")
    for pk, *values, delivered_at in rows:
        Delivery.objects.filter(
            pk=pk, status=Delivery.Status.PENDING, next_attempt_at=lease_until
        ).update(**dict(zip(fields, values, strict=True)), delivered_at=delivered_at)


def _record(
    deliveries: list[Delivery],
    outcomes: list[Outcome],
    lease_until: datetime,
    now: datetime | None = None,
) -> None:
    """Store the attempts and move each delivery and endpoint on (short transaction).

    A delivery whose lease ran out before its outcome is recorded may have been claimed, sent
    and recorded by another worker since: its attempt is stored, but the delivery is left as
    that worker put it."""
    now = now or utcnow()
    by_id = {delivery.pk: delivery for delivery in deliveries}
    rows: list[tuple] = []
    ok_endpoints, failing_endpoints, gone_endpoints = set(), set(), set()
    for outcome in outcomes:
        delivery = by_id[outcome.delivery_id]
        attempts = delivery.attempts + 1
        status, next_attempt_at, delivered_at = Delivery.Status.PENDING, lease_until, None
        if outcome.succeeded:
            ok_endpoints.add(delivery.endpoint_id)
            status, delivered_at = Delivery.Status.SUCCEEDED, outcome.attempted_at
        else:
            if outcome.status_code == 410:
                gone_endpoints.add(delivery.endpoint_id)
            else:
                failing_endpoints.add(delivery.endpoint_id)
            delay = retry_delay(attempts, outcome.retry_after)
            if delay is None:
                status = Delivery.Status.FAILED
            else:
                next_attempt_at = outcome.attempted_at + delay
        rows.append(
            (
                delivery.pk,
                status,
                attempts,
                next_attempt_at,
                outcome.status_code,
                outcome.error,
                delivered_at,
            )
        )
    with transaction.atomic():
        DeliveryAttempt.objects.bulk_create(
            [
                DeliveryAttempt(
                    delivery_id=outcome.delivery_id,
                    attempted_at=outcome.attempted_at,
                    status_code=outcome.status_code,
                    duration_ms=outcome.duration_ms,
                    response_body=outcome.body,
                    error=outcome.error,
                )
                for outcome in outcomes
            ]
        )
        if rows:
            _deliveries_update(rows, lease_until)
        WebhookEndpoint.objects.filter(pk__in=ok_endpoints).update(
            last_success_at=now, failing_since=None
        )
        WebhookEndpoint.objects.filter(pk__in=failing_endpoints - ok_endpoints).update(
            failing_since=Coalesce("failing_since", now)
        )
        _disable(gone_endpoints, WebhookEndpoint.DisabledReason.GONE, now)
        give_up = now - timedelta(days=settings.WEBHOOK_DISABLE_AFTER_DAYS)
        _disable(
            set(
                WebhookEndpoint.objects.filter(
                    pk__in=failing_endpoints - ok_endpoints, failing_since__lte=give_up
                ).values_list("pk", flat=True)
            ),
            WebhookEndpoint.DisabledReason.FAILING,
            now,
        )


def _disable(endpoint_ids: set[int], reason: str, now: datetime) -> None:
    """Disable dead endpoints (410, or failing for days) and cancel what was still waiting for
    them, so the claim query never wades through it; an operator can resend deliveries."""
    if endpoint_ids:
        WebhookEndpoint.objects.filter(pk__in=endpoint_ids, enabled=True).update(
            enabled=False, disabled_reason=reason, disabled_at=now
        )
        Delivery.objects.filter(
            endpoint_id__in=endpoint_ids, status=Delivery.Status.PENDING
        ).update(status=Delivery.Status.CANCELLED, next_attempt_at=None)


def deliveries_send_due(
    *,
    max_seconds: float | None = None,
    batch_size: int | None = None,
    now: datetime | None = None,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """Send every due delivery, batch after batch, until none is due (or ``max_seconds`` have
    passed). Safe to run in many workers at once. Returns how many attempts were made.

    ``now`` runs the worker as of that moment (what is due, when attempts are recorded: the
    demo seed replays past days with it); ``transport`` replaces the HTTP transport."""
    batch_size = batch_size or settings.WEBHOOK_BATCH_SIZE
    started = time.monotonic()
    attempts = 0
    with ExitStack() as stack:
        client = pool = None  # made once there is something to send: most runs find nothing
        while max_seconds is None or time.monotonic() - started < max_seconds:
            # A request not started before the lease ends is left for the next claim: another
            # worker may be sending it by then.
            send_before = time.monotonic() + settings.WEBHOOK_LEASE_SECONDS
            deliveries, lease_until = _claim(now or utcnow(), batch_size)
            if not deliveries:
                break
            if client is None:
                client = stack.enter_context(_client(transport))
                pool = stack.enter_context(ThreadPoolExecutor(settings.WEBHOOK_CONCURRENCY))
            sent = pool.map(partial(_send, client, send_before=send_before, now=now), deliveries)
            outcomes = [outcome for outcome in sent if outcome is not None]
            _record(deliveries, outcomes, lease_until, now)
            attempts += len(outcomes)
    return attempts
