from celery import shared_task

from marketplace.services.booking import reservations_advance


@shared_task(acks_late=True)
def advance_reservations() -> dict[str, int]:
    """Every minute: start, complete and expire reservations. Idempotent (compare-and-set)."""
    return reservations_advance()
