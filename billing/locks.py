"""Row locks for billing, always taken in this order so concurrent transactions cannot deadlock:

1. the ``Tenant`` row (FOR NO KEY UPDATE): one lock per tenant around every change to its
   invoices, credit notes and payments. It conflicts with the booking service's tenant lock
   (FOR UPDATE), so a booking's credit check never interleaves with an invoice posting, but not
   with the KEY SHARE locks that inserting usage rows takes, so metering is never blocked;
2. ``Invoice`` rows, ascending pk;
3. a ``DocumentSequence`` row (taken last and held only until commit: it serialises numbering).

Metering takes only the ``MeteringCursor`` row and never any of the above. The usage
corrections run takes the cursor first and then the above in their order: nothing takes the
cursor after any of them, so the two orders cannot cross."""

from collections.abc import Iterable

from billing.models import DocumentSequence, Invoice, MeteringCursor
from marketplace.models import Tenant


def tenant_lock(tenant_id: int) -> Tenant:
    return Tenant.objects.select_for_update(no_key=True, of=("self",)).get(pk=tenant_id)


def tenants_lock(tenant_ids: Iterable[int]) -> dict[int, Tenant]:
    """A batch run's tenants, locked in ascending pk order."""
    locked = (
        Tenant.objects.filter(pk__in=list(tenant_ids))
        .order_by("pk")
        .select_for_update(no_key=True, of=("self",))
    )
    return {tenant.pk: tenant for tenant in locked}


def invoice_lock(invoice_id: int) -> Invoice:
    return Invoice.objects.select_for_update(of=("self",)).get(pk=invoice_id)


def invoices_lock(invoice_ids: Iterable[int]) -> list[Invoice]:
    return list(
        Invoice.objects.filter(pk__in=list(invoice_ids))
        .order_by("pk")
        .select_for_update(of=("self",))
    )


def sequence_lock(series: str, year: int) -> DocumentSequence:
    # Create the row if this is the year's first number. ON CONFLICT DO NOTHING waits for a
    # concurrent creator to commit instead of failing, so exactly one row exists afterwards.
    DocumentSequence.objects.bulk_create(
        [DocumentSequence(series=series, year=year, last_number=0)], ignore_conflicts=True
    )
    return DocumentSequence.objects.select_for_update().get(series=series, year=year)


def metering_cursor_lock() -> MeteringCursor:
    MeteringCursor.objects.bulk_create([MeteringCursor(pk=1)], ignore_conflicts=True)
    return MeteringCursor.objects.select_for_update().get(pk=1)
