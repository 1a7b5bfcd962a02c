"""The outbox: an event exists if and only if the transaction that recorded it committed, with
one pending delivery per enabled endpoint that subscribes to its type, a per-tenant sequence
without gaps, and an id that sorts by creation. Events never change afterwards."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection, transaction

from events.models import Delivery, Event, EventSequence
from events.services import (
    NewEvent,
    UnknownEventType,
    endpoint_create,
    endpoint_update,
    event_record,
    events_record,
)
from tests.db_helpers import raises_restrict_violation, run_concurrently

MOMENT = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


class Abandoned(Exception):
    """The change that recorded the event failed after recording it."""


@transaction.atomic
def record_then_fail(*, tenant_id: int) -> None:
    event_record(tenant_id=tenant_id, type="quote.created", data={"id": "q_1"})
    raise Abandoned


@pytest.mark.django_db
def test_an_event_recorded_in_a_transaction_that_rolls_back_leaves_nothing():
    # given a tenant with an endpoint
    endpoint_create(tenant_id=7, url="https://hooks.example.com/a")

    # when the transaction that records an event fails afterwards
    with pytest.raises(Abandoned):
        record_then_fail(tenant_id=7)

    # then no event, no delivery, and the sequence number was not used up
    assert Event.objects.count() == 0
    assert Delivery.objects.count() == 0
    with transaction.atomic():
        event = event_record(tenant_id=7, type="quote.created", data={"id": "q_2"})
    assert event.sequence == 1


@pytest.mark.django_db
def test_a_committed_event_gets_one_delivery_per_enabled_subscribed_endpoint():
    # given endpoints of tenant 7 for every type, for quotes, for invoices, a disabled one,
    # and one of another tenant
    every_type = endpoint_create(tenant_id=7, url="https://hooks.example.com/all")
    quotes = endpoint_create(
        tenant_id=7,
        url="https://hooks.example.com/quotes",
        event_types=["quote.created", "quote.expired"],
    )
    endpoint_create(tenant_id=7, url="https://hooks.example.com/inv", event_types=["invoice.paid"])
    disabled = endpoint_create(tenant_id=7, url="https://hooks.example.com/off")
    endpoint_update(tenant_id=7, endpoint_id=disabled.pk, enabled=False)
    endpoint_create(tenant_id=8, url="https://hooks.example.com/other")

    # when a quote.created event of tenant 7 is recorded
    with time_machine.travel(MOMENT, tick=False), transaction.atomic():
        event = event_record(tenant_id=7, type="quote.created", data={"id": "q_1", "gpus": 8})

    # then there is exactly that event, with one pending delivery due now per subscriber
    stored = Event.objects.get()
    assert (stored.id, stored.tenant_id, stored.sequence, stored.type, stored.data) == (
        event.id,
        7,
        1,
        "quote.created",
        {"id": "q_1", "gpus": 8},
    )
    assert stored.created_at == MOMENT
    deliveries = Delivery.objects.order_by("endpoint_id").values_list(
        "event_id", "endpoint_id", "tenant_id", "status", "attempts", "next_attempt_at"
    )
    assert list(deliveries) == [
        (event.id, every_type.pk, 7, "pending", 0, MOMENT),
        (event.id, quotes.pk, 7, "pending", 0, MOMENT),
    ]


@pytest.mark.django_db
def test_sequences_strictly_increase_per_tenant_and_independently_between_tenants():
    # given two tenants recording interleaved events, one transaction each
    recorded = []
    for tenant_id in (1, 2, 1, 1, 2):
        with transaction.atomic():
            event = event_record(tenant_id=tenant_id, type="balance.low", data={})
        recorded.append((event.tenant_id, event.sequence))

    # then each tenant counts 1, 2, 3 on its own
    assert recorded == [(1, 1), (2, 1), (1, 2), (1, 3), (2, 2)]
    assert list(Event.objects.values_list("tenant_id", "sequence")) == [
        (1, 1),
        (1, 2),
        (1, 3),
        (2, 1),
        (2, 2),
    ]
    assert dict(EventSequence.objects.values_list("tenant_id", "last_sequence")) == {1: 3, 2: 2}


@pytest.mark.django_db
def test_a_batch_for_several_tenants_is_numbered_per_tenant_in_the_order_given():
    # when one call records events of two tenants
    with transaction.atomic():
        events = events_record(
            events=[
                NewEvent(5, "reservation.started", {"n": 1}),
                NewEvent(4, "reservation.started", {"n": 2}),
                NewEvent(5, "reservation.ended", {"n": 3}),
            ]
        )

    # then each tenant's events are numbered in the order they were given
    assert [(e.tenant_id, e.sequence, e.data["n"]) for e in events] == [
        (4, 1, 2),
        (5, 1, 1),
        (5, 2, 3),
    ]


@pytest.mark.django_db
def test_event_ids_start_with_evt_and_sort_by_creation():
    # given events recorded one by one, a millisecond apart and within one millisecond, and a
    # batch recorded at one moment
    created = []
    with time_machine.travel(MOMENT, tick=False) as clock, transaction.atomic():
        for _ in range(3):
            created.append(event_record(tenant_id=1, type="quote.created", data={}).id)
            clock.shift(timedelta(milliseconds=1))
        for _ in range(3):
            created.append(event_record(tenant_id=1, type="quote.created", data={}).id)
        batch = events_record(events=[NewEvent(2, "quote.expired", {}) for _ in range(50)])
        created.extend(event.id for event in batch)

    # then every id is evt_ and a 26-character ULID, and they sort in creation order
    assert {(event_id[:4], len(event_id)) for event_id in created} == {("evt_", 30)}
    assert sorted(created) == created
    assert len(set(created)) == 56


@pytest.mark.django_db(transaction=True)
def test_recording_outside_a_transaction_is_refused():
    # when an event is recorded in autocommit mode
    with pytest.raises(RuntimeError) as error:
        event_record(tenant_id=1, type="quote.created", data={})

    # then it says why, and nothing was written
    assert str(error.value) == "Record events inside the transaction that makes the change."
    assert Event.objects.count() == 0
    assert EventSequence.objects.count() == 0


@pytest.mark.django_db
def test_an_unknown_event_type_is_refused():
    # when an event of a type that does not exist is recorded
    with pytest.raises(UnknownEventType) as error, transaction.atomic():
        event_record(tenant_id=1, type="quote.invented", data={})

    # then the error names it and lists the valid types, and nothing was written
    assert (error.value.code, error.value.detail) == (
        "unknown_event_type",
        "Unknown event type 'quote.invented'.",
    )
    assert "quote.created" in error.value.extra["valid_types"]
    assert Event.objects.count() == 0


@pytest.mark.django_db
def test_an_endpoint_cannot_subscribe_to_an_unknown_type():
    with pytest.raises(UnknownEventType):
        endpoint_create(tenant_id=1, url="https://hooks.example.com/a", event_types=["nope"])


@pytest.mark.django_db
def test_an_event_cannot_be_changed_through_the_orm():
    # given a recorded event
    with transaction.atomic():
        event = event_record(tenant_id=1, type="quote.created", data={"id": "q_1"})

    # when it is saved again with other data
    event.data = {"id": "q_2"}
    with pytest.raises(ValueError, match=r"^Events are immutable\.$"):
        event.save()

    # then it is refused and the stored event is unchanged
    assert Event.objects.get().data == {"id": "q_1"}


@pytest.mark.django_db
def test_postgresql_refuses_to_update_an_event():
    # given a recorded event
    with transaction.atomic():
        event = event_record(tenant_id=1, type="quote.created", data={"id": "q_1"})
    refusal = f"events are immutable (event {event.id})"

    # when a raw UPDATE or a queryset update changes it, then the trigger refuses (23001)
    with raises_restrict_violation(refusal), connection.cursor() as cursor:
        cursor.execute("UPDATE events_event SET type = 'invoice.paid' WHERE id = %s", [event.id])
    with raises_restrict_violation(refusal):
        Event.objects.filter(pk=event.pk).update(data={"id": "q_2"})
    assert Event.objects.values_list("type", "data").get() == ("quote.created", {"id": "q_1"})


THREADS = 8
EVENTS_PER_THREAD = 5


@pytest.mark.django_db(transaction=True)
def test_concurrent_recording_for_one_tenant_numbers_without_gaps_or_duplicates():
    # given 8 threads, each recording 5 events of tenant 3 in a transaction of their own
    def record() -> list[int]:
        sequences = []
        for _ in range(EVENTS_PER_THREAD):
            with transaction.atomic():
                event = event_record(tenant_id=3, type="reservation.started", data={})
            sequences.append(event.sequence)
        return sequences

    # when they run at once
    results = run_concurrently(*[record] * THREADS)

    # then the 40 events are numbered 1..40, each thread's in increasing order
    assert sorted(n for sequences in results for n in sequences) == list(
        range(1, THREADS * EVENTS_PER_THREAD + 1)
    )
    assert all(sequences == sorted(sequences) for sequences in results)
    assert list(Event.objects.values_list("sequence", flat=True)) == list(range(1, 41))
    assert EventSequence.objects.get(tenant_id=3).last_sequence == 40
