"""The overdue policy: a finalized invoice with something still due after its ``due_at``
(finalization + the tenant's payment terms, net 30 by default) is overdue. With
``BILLING_SUSPEND_OVERDUE_DAYS`` set, the daily job suspends every active tenant with an
invoice overdue by more than that many days, through the marketplace's suspend service (which
records ``tenant.suspended``). Settling the invoice does not reactivate the tenant (an
operator does); a tenant an operator reactivates while still overdue is suspended again by the
next run.

How payments settle invoices (transfers, and top-ups applied oldest due first) is in
``billing/services/payments.py``."""

from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from billing import selectors
from core.timeutils import utcnow
from marketplace.models import Tenant
from marketplace.services import tenants as tenant_services


def suspend_overdue_days() -> int | None:
    """``BILLING_SUSPEND_OVERDUE_DAYS``; None (the default, or empty) turns the policy off."""
    days = getattr(settings, "BILLING_SUSPEND_OVERDUE_DAYS", None)
    if days is None or days == "":
        return None
    if int(days) < 0:
        raise ImproperlyConfigured("BILLING_SUSPEND_OVERDUE_DAYS must be 0 or more (or empty).")
    return int(days)


@transaction.atomic
def tenants_suspend_overdue(*, now: datetime | None = None) -> list[int]:
    """Suspend every active tenant with an invoice overdue by more than
    ``BILLING_SUSPEND_OVERDUE_DAYS`` days at ``now`` (its ``due_at`` before now - N days, and
    something still due); nothing when the setting is off. Returns the ids of the tenants
    suspended, ascending. Idempotent: a suspended tenant is not suspended, nor told, again.

    The candidates are locked (ascending pk, as the suspend service locks them) and checked
    again under the lock, so a top-up or payment that settled the invoice meanwhile wins."""
    days = suspend_overdue_days()
    if days is None:
        return []
    now = now or utcnow()
    overdue_since = now - timedelta(days=days)
    candidates = list(
        selectors.tenants_overdue(overdue_since=overdue_since).values_list("pk", flat=True)
    )
    if not candidates:
        return []
    locked = Tenant.objects.filter(pk__in=candidates).order_by("pk").select_for_update(of=("self",))
    list(locked.values_list("pk", flat=True))
    overdue = list(
        selectors.tenants_overdue(overdue_since=overdue_since)
        .filter(pk__in=candidates)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    if overdue:
        tenant_services.tenant_set_status(
            tenants=Tenant.objects.filter(pk__in=overdue), status=Tenant.Status.SUSPENDED
        )
    return overdue
