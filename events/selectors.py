"""Reads of the events app, always through one tenant: its events (in sequence order), its
webhook endpoints and their deliveries. Another tenant's id is never found here."""

from django.db.models import F, Prefetch, QuerySet

from core.errors import InvalidInput, NotFound
from events.models import Delivery, DeliveryAttempt, Event, WebhookEndpoint

EVENT_ID_MAX_LENGTH: int = Event._meta.get_field("id").max_length or 0


class InvalidCursor(InvalidInput):
    code = "invalid_cursor"
    default_detail = "`after` is not the id of one of your events."


def _is_event_id(value: str) -> bool:
    # Anything longer than an id, or holding a NUL (which PostgreSQL text refuses), is no id.
    return len(value) <= EVENT_ID_MAX_LENGTH and "\x00" not in value


def event_list(
    *, tenant_id: int, type: str | None = None, after_sequence: int | None = None
) -> QuerySet[Event]:
    """The tenant's events in sequence order (oldest first), of one type if given, after
    ``after_sequence`` if given."""
    events = Event.objects.filter(tenant_id=tenant_id)
    if type is not None:
        events = events.filter(type=type)
    if after_sequence is not None:
        events = events.filter(sequence__gt=after_sequence)
    return events.order_by("sequence")


def event_cursor_sequence(*, tenant_id: int, event_id: str) -> int:
    """The sequence of the tenant's event ``event_id``, where a page that continues after it
    starts. Raises InvalidCursor for an unknown id, another tenant's id or an event already
    pruned by the retention job."""
    sequence = None
    if _is_event_id(event_id):
        sequence = (
            Event.objects.filter(pk=event_id, tenant_id=tenant_id)
            .values_list("sequence", flat=True)
            .first()
        )
    if sequence is None:
        raise InvalidCursor(
            fields={"after": [{"code": "invalid_cursor", "message": "No such event."}]}
        )
    return sequence


def event_get(*, tenant_id: int, event_id: str) -> Event:
    """Raises NotFound for another tenant's event (a 404, never a 403)."""
    event = None
    if _is_event_id(event_id):
        event = Event.objects.filter(pk=event_id, tenant_id=tenant_id).first()
    if event is None:
        raise NotFound("No such event.")
    return event


def endpoint_list(*, tenant_id: int) -> QuerySet[WebhookEndpoint]:
    """The tenant's webhook endpoints, oldest first."""
    return WebhookEndpoint.objects.filter(tenant_id=tenant_id).order_by("created_at", "id")


def _deliveries(tenant_id: int) -> QuerySet[Delivery]:
    # The event's type, not the whole event: its data can be large and is not shown here.
    return Delivery.objects.filter(tenant_id=tenant_id).annotate(event_type=F("event__type"))


def delivery_list(
    *, tenant_id: int, endpoint_id: int, status: str | None = None
) -> QuerySet[Delivery]:
    """The deliveries to one of the tenant's endpoints, newest first, of one status if
    given."""
    deliveries = _deliveries(tenant_id).filter(endpoint_id=endpoint_id)
    if status is not None:
        deliveries = deliveries.filter(status=status)
    return deliveries.order_by("-created_at", "-id")


def numeric_id(value: object, missing: str) -> int:
    """A path id as a database key, or NotFound(``missing``) for anything that is not one: a
    malformed id is as absent as another tenant's."""
    text = str(value)
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        raise NotFound(missing)
    return int(text)


def delivery_get(*, tenant_id: int, delivery_id: object) -> Delivery:
    """One of the tenant's deliveries with its attempts (oldest first). Raises NotFound for
    another tenant's delivery or an id that is not a number."""
    delivery_id = numeric_id(delivery_id, "No such webhook delivery.")
    try:
        return (
            _deliveries(tenant_id)
            .prefetch_related(
                Prefetch(
                    "attempts_made",
                    queryset=DeliveryAttempt.objects.order_by("attempted_at", "id"),
                )
            )
            .get(pk=delivery_id)
        )
    except Delivery.DoesNotExist:
        raise NotFound("No such webhook delivery.") from None
