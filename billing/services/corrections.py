"""Usage corrections: incidents recorded after their hours were metered.

The rule
--------
A displacement (``marketplace.Displacement``) records that an incident changed a reservation's
placements for [start, end). A usage record of the reservation in that span is *stale* when
its placement is gone: no placement of the reservation on the record's pool covers the hour
with the record's GPUs any more. Each displacement is applied once:

* stale records no invoice has issued yet (unclaimed, or on a draft) are deleted, the span is
  metered again from the placements (the GPUs that stayed, those moved to other pools) up to
  where metering has reached, and the tenant's drafts are rebuilt: a draft drops the hours
  the incident took and bills the moved ones at the reservation's locked price;
* stale records on an issued invoice (finalized or paid) stay on it, since an issued invoice
  never changes: a ``correction`` credit note on that invoice gives back what they billed
  beyond what the reservation still has on that pool in that hour, rounded half up once per
  invoice and capped at what the invoice can still credit. GPUs moved to other pools are
  metered as late usage and billed on the tenant's next draft (invoicing.py). A void
  invoice has nothing to give back.

The ``UsageCorrection`` of a displacement (rows removed, credit note) is written in the same
transaction as the correction: a re-run finds nothing to do, and a run that dies half way
rolls back and is redone whole.

Locks: the metering cursor first (a metering run in flight, which may have read the
placements before the displacement, finishes before its records are checked, and none starts
until the correction commits), then the tenants, invoices and the credit-note number in the
order of billing/locks.py."""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from django.db import transaction
from django.db.models import Q, QuerySet

from billing import locks, selectors
from billing.models import CreditNote, Invoice, UsageCorrection, UsageRecord
from billing.services import invoicing
from billing.services.credit_notes import credit_note_create
from billing.services.invoicing import Progress, RunResult, _in_batches, _no_progress
from billing.services.metering import usage_meter_windows
from core.money import round_money
from core.timeutils import HOUR, utcnow
from marketplace.models import Displacement, Placement

ZERO = Decimal(0)
ISSUED = (Invoice.Status.FINALIZED, Invoice.Status.PAID)


def displacements_pending() -> QuerySet[Displacement]:
    """Displacements billing has not applied to the usage yet."""
    return Displacement.objects.filter(usage_correction__isnull=True)


def usage_corrections_apply(
    *, now: datetime | None = None, progress: Progress = _no_progress
) -> RunResult:
    """Apply every displacement not applied yet (see the module docstring), the tenants in
    batches, one transaction per batch (a failing batch is retried one tenant at a time).
    Idempotent and safe to run concurrently. ``done`` counts the displacements applied.
    When there is nothing to do it costs one query."""
    now = now or utcnow()
    tenant_ids = sorted(
        set(displacements_pending().values_list("reservation__tenant_id", flat=True).order_by())
    )
    return _in_batches(
        tenant_ids, lambda batch: _apply(tenant_ids=batch, now=now), "tenant", progress
    )


@dataclass(frozen=True)
class _Pending:
    pk: int
    incident_id: int
    reservation_id: UUID
    start: datetime
    end: datetime
    account: tuple[int, str]  # (tenant id, currency)


@dataclass(frozen=True)
class _Stale:
    """A usage record that no placement backs any more, and the displacement it is put on."""

    pk: int
    displacement: _Pending
    hour: datetime
    currency: str
    invoice_id: int | None
    invoice_status: str | None
    over: Decimal  # what it billed beyond the GPUs still on its pool in that hour


@transaction.atomic
def _apply(*, tenant_ids: Sequence[int], now: datetime) -> int:
    """Apply the pending displacements of the tenants' reservations; returns how many."""
    cursor = locks.metering_cursor_lock()
    tenants = locks.tenants_lock(tenant_ids)
    pending = [
        _Pending(pk, incident_id, reservation_id, start, end, (tenant_id, currency))
        for pk, incident_id, reservation_id, start, end, tenant_id, currency in (
            displacements_pending()
            .filter(reservation__tenant_id__in=list(tenants))
            .order_by("pk")
            .values_list(
                "pk",
                "incident_id",
                "reservation_id",
                "start",
                "end",
                "reservation__tenant_id",
                "reservation__currency",
            )
        )
    ]
    if not pending:
        return 0
    metered_until = cursor.metered_until
    stale = _stale_usage(pending) if metered_until is not None else []

    removable = [row for row in stale if row.invoice_status in (None, Invoice.Status.DRAFT)]
    UsageRecord.objects.filter(pk__in=[row.pk for row in removable]).delete()
    removed: dict[int, int] = defaultdict(int)
    for row in removable:
        removed[row.displacement.pk] += 1
    inserted = 0
    if metered_until is not None:
        inserted = usage_meter_windows(
            windows=[(d.reservation_id, d.start, min(d.end, metered_until)) for d in pending],
            created_at=now,
        )
    if removable or inserted:
        invoicing.invoices_draft_build(
            tenant_currencies=sorted({d.account for d in pending}),
            invoice_ids=sorted({row.invoice_id for row in removable if row.invoice_id}),
            now=now,
        )

    notes = _credit_issued(
        [row for row in stale if row.invoice_status in ISSUED and row.over > 0], now
    )
    UsageCorrection.objects.bulk_create(
        [
            UsageCorrection(
                displacement_id=d.pk,
                usage_removed=removed[d.pk],
                credit_note=notes.get(d.pk),
                created_at=now,
            )
            for d in pending
        ]
    )
    return len(pending)


def _stale_usage(pending: list[_Pending]) -> list[_Stale]:
    """The usage records in the displacements' spans that no placement backs any more, each
    put on the first displacement (by id) whose span covers it."""
    spans = Q()
    for d in pending:
        spans |= Q(reservation_id=d.reservation_id, hour__gte=d.start, hour__lt=d.end)
    records = list(
        UsageRecord.objects.filter(spans).values_list(
            "pk",
            "reservation_id",
            "pool_id",
            "hour",
            "gpus",
            "amount",
            "unit_price",
            "currency",
            "invoice_id",
            "invoice__status",
        )
    )
    if not records:
        return []
    placed: dict[tuple[UUID, int], list[tuple[datetime, datetime, int]]] = defaultdict(list)
    for reservation_id, pool_id, start, end, gpus in Placement.objects.filter(
        reservation_id__in={d.reservation_id for d in pending},
        start__lt=max(d.end for d in pending),
        end__gt=min(d.start for d in pending),
    ).values_list("reservation_id", "pool_id", "start", "end", "gpus"):
        placed[reservation_id, pool_id].append((start, end, gpus))
    by_reservation: dict[UUID, list[_Pending]] = defaultdict(list)
    for d in pending:
        by_reservation[d.reservation_id].append(d)

    stale = []
    for (
        pk,
        reservation_id,
        pool_id,
        hour,
        gpus,
        amount,
        unit_price,
        currency,
        invoice_id,
        status,
    ) in records:
        still = sum(g for start, end, g in placed[reservation_id, pool_id] if start <= hour < end)
        if still == gpus:
            continue
        owner = next(d for d in by_reservation[reservation_id] if d.start <= hour < d.end)
        stale.append(
            _Stale(
                pk=pk,
                displacement=owner,
                hour=hour,
                currency=currency,
                invoice_id=invoice_id,
                invoice_status=status,
                over=max(ZERO, amount - unit_price * still),
            )
        )
    return stale


def _credit_issued(rows: list[_Stale], now: datetime) -> dict[int, CreditNote]:
    """One ``correction`` credit note per displacement and issued invoice for what its stale
    records over-billed, capped at what the invoice can still credit. Returns the note of
    each displacement (the largest, should its records lie on two invoices)."""
    groups: dict[tuple[int, int], list[_Stale]] = defaultdict(list)
    for row in rows:
        if row.invoice_id is not None:  # only rows on issued invoices are credited
            groups[row.invoice_id, row.displacement.pk].append(row)
    notes: dict[int, CreditNote] = {}
    for (invoice_id, displacement_id), group in sorted(groups.items()):  # invoice lock order
        invoice = Invoice.objects.get(pk=invoice_id)
        amount = round_money(sum((row.over for row in group), ZERO), invoice.currency)
        amount = min(amount, selectors.invoice_settlement(invoice=invoice).creditable)
        if amount <= 0:
            continue
        hours = sorted({row.hour for row in group})
        note = credit_note_create(
            invoice_id=invoice_id,
            amount=amount,
            reason=CreditNote.Reason.CORRECTION,
            memo=(
                f"Incident #{group[0].displacement.incident_id} took GPUs off {len(hours)} "
                f"billed hour(s), {hours[0]:%Y-%m-%d %H:00} to "
                f"{hours[-1] + HOUR:%Y-%m-%d %H:00} UTC"
            ),
            now=now,
        )
        if displacement_id not in notes or notes[displacement_id].amount < note.amount:
            notes[displacement_id] = note
    return notes
