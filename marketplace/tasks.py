from celery import shared_task

from marketplace.services.booking import idempotency_records_prune, reservations_advance
from marketplace.services.displacement import incidents_displace_due


@shared_task(acks_late=True)
def advance_reservations() -> dict[str, int]:
    """Every minute: start, complete and expire reservations. Idempotent (compare-and-set)."""
    return reservations_advance()


@shared_task(acks_late=True)
def displace_incidents() -> dict[str, int]:
    """Every minute: move the reservations of incidents that are due and not done yet (recalls
    reaching their start, runs that stopped half way). Idempotent: only what is still in
    excess on the ledger is taken, each reservation under its own lock."""
    results = incidents_displace_due()
    return {
        "incidents": len(results),
        "done": sum(1 for result in results if result.remaining_excess == 0),
        "reservations": sum(result.reservations for result in results),
        "gpu_hours_moved": sum(result.gpu_hours_moved for result in results),
        "gpu_hours_lost": sum(result.gpu_hours_lost for result in results),
        "gpu_hours_left": sum(result.remaining_excess for result in results),
    }


@shared_task(acks_late=True, ignore_result=True)
def prune_idempotency_records() -> int:
    """Hourly: delete the Idempotency-Key records older than IDEMPOTENCY_KEY_TTL_HOURS (set-based,
    in batches). Idempotent: a second run finds nothing left to delete."""
    return idempotency_records_prune()
