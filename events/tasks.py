"""Beat and nudged tasks of the events app: a few lines each around a service."""

from celery import shared_task

from events.delivery import deliveries_send_due
from events.services import events_prune


@shared_task(acks_late=True, ignore_result=True)
def deliver_webhooks() -> int:
    """Send every due webhook delivery (at most ~50 s, then the next run goes on). Scheduled
    every few seconds and nudged after commits that create deliveries; runs concurrently in
    many workers without sending anything twice (deliveries are leased)."""
    return deliveries_send_due(max_seconds=50)


@shared_task(acks_late=True, ignore_result=True)
def prune_events() -> int:
    """Daily: delete events older than EVENTS_RETENTION_DAYS."""
    return events_prune()
