"""Events are kept EVENTS_RETENTION_DAYS, then pruned with their deliveries and attempts by a
daily beat job; the delivery job runs every 10 seconds. Both schedules are editable rows."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import transaction
from django_celery_beat.models import PeriodicTask

from events.models import Delivery, DeliveryAttempt, Event
from events.services import endpoint_create, event_record, events_prune
from events.tasks import prune_events

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 1, 8, tzinfo=UTC)


def record_at(moment: datetime, tenant_id: int = 1) -> Event:
    with time_machine.travel(moment, tick=False), transaction.atomic():
        return event_record(tenant_id=tenant_id, type="quote.created", data={"at": str(moment)})


def test_events_older_than_the_retention_go_with_their_deliveries_and_attempts(settings):
    # given a 30-day retention, an endpoint, and events 31, 30 and 29 days old
    settings.EVENTS_RETENTION_DAYS = 30
    endpoint_create(tenant_id=1, url="http://127.0.0.1:9/hook")
    old = record_at(NOW - timedelta(days=31))
    edge = record_at(NOW - timedelta(days=30))
    young = record_at(NOW - timedelta(days=29), tenant_id=2)
    DeliveryAttempt.objects.create(
        delivery=Delivery.objects.get(event=old), attempted_at=NOW, status_code=200, duration_ms=5
    )

    # when the retention job runs, twice
    removed = events_prune(now=NOW, batch_size=1)
    again = events_prune(now=NOW)

    # then only the event past 30 days went, with what hung on it
    assert (removed, again) == (1, 0)
    assert set(Event.objects.values_list("id", flat=True)) == {edge.id, young.id}
    assert set(Delivery.objects.values_list("event_id", flat=True)) == {edge.id}
    assert not DeliveryAttempt.objects.exists()


def test_the_task_prunes_by_the_clock(settings):
    settings.EVENTS_RETENTION_DAYS = 30
    record_at(NOW - timedelta(days=40))

    with time_machine.travel(NOW, tick=False):
        assert prune_events() == 1

    assert not Event.objects.exists()


def test_delivery_and_retention_are_scheduled_and_editable():
    schedules = {
        task.task: task
        for task in PeriodicTask.objects.filter(task__startswith="events.").select_related(
            "interval", "crontab"
        )
    }

    delivery, prune = (
        schedules["events.tasks.deliver_webhooks"],
        schedules["events.tasks.prune_events"],
    )
    assert (delivery.enabled, delivery.interval.every, delivery.interval.period) == (
        True,
        10,
        "seconds",
    )
    assert (prune.enabled, prune.crontab.hour, prune.crontab.minute) == (True, "2", "30")
