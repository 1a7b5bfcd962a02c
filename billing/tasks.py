"""Beat tasks: thin wrappers around the billing services. All are idempotent (unique keys,
compare-and-set on invoice status under a tenant lock, one usage correction per displacement,
one SLA credit per reservation and month, suspending only active tenants), so ``acks_late``
is safe: a worker that dies mid-task has its message redelivered and the re-run finishes the
job."""

from datetime import UTC, datetime

from celery import shared_task

from billing.services.corrections import usage_corrections_apply
from billing.services.invoicing import invoices_draft, invoices_finalize_due
from billing.services.metering import meter_usage
from billing.services.settlement import tenants_suspend_overdue
from billing.services.sla import sla_credits_issue


def _moment(value: str | None) -> datetime | None:
    """An ISO 8601 argument (UTC when it has no offset), or None for now."""
    if not value:
        return None
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@shared_task(acks_late=True)
def meter_usage_task(until: str | None = None) -> dict[str, object]:
    """Hourly: record the delivered hours up to now (back-fills anything missed), then apply
    the incidents recorded after their hours were metered (usage corrections)."""
    moment = _moment(until)
    result = meter_usage(until=moment)
    corrected = usage_corrections_apply(now=moment)
    return {
        "until": result.until.isoformat(),
        "usage_created": result.usage_created,
        "charges_created": result.charges_created,
        "displacements_corrected": corrected.done,
        "failed": corrected.failed,
    }


@shared_task(acks_late=True)
def draft_invoices_task(now: str | None = None) -> dict[str, object]:
    """Hourly: put new usage on draft invoices."""
    result = invoices_draft(now=_moment(now))
    return {"drafts_built": result.done, "failed": result.failed}


@shared_task(acks_late=True)
def finalize_invoices_task(now: str | None = None) -> dict[str, object]:
    """Daily: issue the drafts whose month ended more than BILLING_GRACE_DAYS ago, then the SLA
    credit notes of the months they close."""
    moment = _moment(now)
    result = invoices_finalize_due(now=moment)
    credited = sla_credits_issue(now=moment)
    return {
        "finalized": result.done,
        "sla_credit_notes": credited.done,
        "failed": result.failed + credited.failed,
    }


@shared_task(acks_late=True)
def suspend_overdue_tenants_task(now: str | None = None) -> dict[str, object]:
    """Daily: suspend the tenants with an invoice overdue by more than
    BILLING_SUSPEND_OVERDUE_DAYS days (does nothing while the setting is empty)."""
    suspended = tenants_suspend_overdue(now=_moment(now))
    return {"suspended": len(suspended), "tenants": suspended}
