"""SLA credits, issued when a month closes.

The SLA policy
--------------
A reservation is *displaced* in a month when a displacement overlapping the month took GPUs
from it that were not re-placed (``gpus_lost`` > 0), or when a recall recorded inside the
pool's notice (``Incident.short_notice``) displaced it at all. For each such reservation on a
tenant's issued invoice (finalized or paid) of that month:

* promised GPU-hours = the GPU-hours its placements hold in the month + the GPU-hours lost:
  each displacement's ``gpus_lost`` x its hours, clipped to the month and to the reservation's
  [start, capacity_until); delivered = the placed GPU-hours (hours re-placed on another pool
  count as delivered);
* the credit percent is that of the ``availability`` rule with the lowest ``below_percent``
  that delivered / promised x 100 is strictly below (none: 0), raised to the
  ``short_notice_recall`` rule's percent when a short-notice recall displaced it that month;
* the credit = the month's charge for it x percent / 100, rounded half up to the minor unit
  (``core.money.round_money``); the charge is its usage line on that invoice, less what
  ``correction`` credit notes already gave back of it (an incident recorded after the invoice
  was issued: corrections.py), so a late incident credits what a timely one would have.

Each invoice gets one ``sla`` credit note for the sum of its reservations' credits (none when
that is zero), capped at what the invoice can still credit (the cap is taken off the last
reservations first); its memo names the incidents. Each assessed reservation gets one
``SlaCredit`` row for the month (its figures, the incident that cost it the most GPU-hours, the
note), unique per reservation and month: closing a month twice credits nothing twice, and an
invoice's credits are written in one transaction, so a crash leaves none of them."""

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from django.db import DatabaseError, transaction
from django.db.models import Q, Sum

from billing import locks, selectors
from billing.models import (
    CreditNote,
    Invoice,
    InvoiceLine,
    SlaCredit,
    SlaCreditRule,
    UsageCorrection,
)
from billing.services.credit_notes import credit_note_create
from billing.services.invoicing import RunResult, month_start, months_between, next_month
from capacity.models import Incident
from core.errors import ApplicationError
from core.money import round_money
from core.timeutils import HOUR, utcnow
from marketplace.models import Displacement, Placement, Reservation

logger = logging.getLogger(__name__)

ZERO = Decimal(0)
HUNDRED = Decimal(100)
ISSUED = (Invoice.Status.FINALIZED, Invoice.Status.PAID)


@dataclass(frozen=True)
class _Hit:
    """One displacement of a reservation, as the SLA sees it."""

    incident_id: int
    start: datetime
    end: datetime
    gpus_lost: int
    short_notice_recall: bool


def _displacements(period_start: datetime | None):
    """Displacements that can earn a credit: GPUs lost, or a short-notice recall."""
    displacements = Displacement.objects.filter(
        Q(gpus_lost__gt=0) | Q(incident__kind=Incident.Kind.RECALL, incident__short_notice=True)
    )
    if period_start is not None:
        displacements = displacements.filter(
            start__lt=next_month(period_start), end__gt=period_start
        )
    return displacements


def sla_credits_issue(
    *, period_start: datetime | None = None, now: datetime | None = None
) -> RunResult:
    """Issue the SLA credits of closed months (see the module docstring): of the month
    starting ``period_start``, or of every month that ended by ``now`` (default now). Only
    issued invoices are credited; a reservation whose month's invoice is still a draft is
    credited by a later run. Idempotent; each invoice in its own transaction (a failing one
    is logged and reported, the others go on). ``done`` counts the credit notes issued."""
    now = now or utcnow()
    period_start = None if period_start is None else month_start(period_start)
    # (reservation, month) pairs that may earn a credit and have not been assessed.
    wanted: dict[tuple[UUID, datetime], tuple[int, str]] = {}
    rows = _displacements(period_start).values_list(
        "reservation_id", "reservation__tenant_id", "reservation__currency", "start", "end"
    )
    for reservation_id, tenant_id, currency, start, end in rows:
        for month in months_between(start, end):
            if next_month(month) <= now and period_start in (None, month):
                wanted[reservation_id, month] = (tenant_id, currency)
    if not wanted:
        return RunResult()
    assessed = set(
        SlaCredit.objects.filter(
            reservation_id__in={reservation_id for reservation_id, _ in wanted}
        ).values_list("reservation_id", "period_start")
    )
    for key in assessed & set(wanted):
        del wanted[key]
    invoices = {
        (tenant_id, currency, month): pk
        for pk, tenant_id, currency, month in Invoice.objects.filter(
            status__in=ISSUED,
            tenant_id__in={tenant_id for tenant_id, _ in wanted.values()},
            period_start__in={month for _, month in wanted},
        ).values_list("pk", "tenant_id", "currency", "period_start")
    }
    by_invoice: dict[int, list[UUID]] = defaultdict(list)
    for (reservation_id, month), (tenant_id, currency) in wanted.items():
        invoice_id = invoices.get((tenant_id, currency, month))
        if invoice_id is not None:  # not issued yet: a later run credits it
            by_invoice[invoice_id].append(reservation_id)

    result = RunResult()
    for invoice_id, reservation_ids in sorted(by_invoice.items()):
        try:
            if invoice_sla_credit(invoice_id=invoice_id, reservation_ids=reservation_ids, now=now):
                result.done += 1
        except (ApplicationError, DatabaseError):
            logger.exception("SLA credit failed for invoice %s", invoice_id)
            result.failed.append(f"invoice {invoice_id}")
    return result


@dataclass(frozen=True)
class _Assessment:
    reservation_id: UUID
    promised: int
    delivered: int
    percent: Decimal
    amount: Decimal
    incident_id: int
    incident_ids: frozenset[int]


@transaction.atomic
def invoice_sla_credit(
    *, invoice_id: int, reservation_ids: list[UUID], now: datetime | None = None
) -> CreditNote | None:
    """Assess the SLA of ``reservation_ids`` for the month of the issued invoice and credit
    it (see the module docstring), under the tenant's lock. Reservations already assessed for
    the month, or not displaced in it, are skipped. Returns the credit note, or None when
    nothing is credited (also when the invoice is not issued: a draft or void)."""
    now = now or utcnow()
    tenant_id = Invoice.objects.filter(pk=invoice_id).values_list("tenant_id", flat=True).get()
    locks.tenant_lock(tenant_id)
    invoice = locks.invoice_lock(invoice_id)
    if invoice.status not in ISSUED:
        return None
    month, month_end = invoice.period_start, invoice.period_end
    done = set(
        SlaCredit.objects.filter(
            reservation_id__in=reservation_ids, period_start=month
        ).values_list("reservation_id", flat=True)
    )
    todo = sorted(set(reservation_ids) - done)
    assessments = _assess(todo, month, month_end, invoice)
    if not assessments:
        return None

    # Cap at what the invoice can still credit, taken off the last reservations first.
    room = selectors.invoice_settlement(invoice=invoice).creditable
    amounts = []
    for assessment in assessments:
        amount = max(ZERO, min(assessment.amount, room))
        room -= amount
        amounts.append(amount)
    total = sum(amounts, ZERO)
    note = None
    if total > 0:
        credited = [a for a, amount in zip(assessments, amounts, strict=True) if amount]
        incident_ids = sorted(set().union(*(a.incident_ids for a in credited)))
        note = credit_note_create(
            invoice_id=invoice.pk,
            amount=total,
            reason=CreditNote.Reason.SLA,
            memo=(
                f"SLA credit for {month:%B %Y}: incident(s) "
                + ", ".join(f"#{pk}" for pk in incident_ids)
            ),
            now=now,
        )
    SlaCredit.objects.bulk_create(
        [
            SlaCredit(
                reservation_id=assessment.reservation_id,
                tenant_id=invoice.tenant_id,
                period_start=month,
                incident_id=assessment.incident_id,
                promised_gpu_hours=assessment.promised,
                delivered_gpu_hours=assessment.delivered,
                credit_percent=assessment.percent,
                amount=amount,
                currency=invoice.currency,
                credit_note=note if amount else None,
                created_at=now,
            )
            for assessment, amount in zip(assessments, amounts, strict=True)
        ]
    )
    return note


def _hours(start: datetime, end: datetime) -> int:
    return max(0, int((end - start) / HOUR))


def _assess(
    reservation_ids: list[UUID], month: datetime, month_end: datetime, invoice: Invoice
) -> list[_Assessment]:
    """The SLA figures of each reservation displaced in the month (others are left out)."""
    if not reservation_ids:
        return []
    spans = {
        pk: (start, until)
        for pk, start, until in Reservation.objects.filter(pk__in=reservation_ids).values_list(
            "pk", "start", "capacity_until"
        )
    }
    hits: dict[UUID, list[_Hit]] = defaultdict(list)
    for (
        reservation_id,
        incident_id,
        start,
        end,
        lost,
        kind,
        short_notice,
    ) in Displacement.objects.filter(
        reservation_id__in=reservation_ids, start__lt=month_end, end__gt=month
    ).values_list(
        "reservation_id",
        "incident_id",
        "start",
        "end",
        "gpus_lost",
        "incident__kind",
        "incident__short_notice",
    ):
        lo = max(start, month, spans[reservation_id][0])
        hi = min(end, month_end, spans[reservation_id][1])
        hits[reservation_id].append(
            _Hit(
                incident_id,
                lo,
                max(lo, hi),
                lost,
                kind == Incident.Kind.RECALL and short_notice,
            )
        )
    placed: dict[UUID, int] = defaultdict(int)
    for reservation_id, start, end, gpus in Placement.objects.filter(
        reservation_id__in=reservation_ids, start__lt=month_end, end__gt=month
    ).values_list("reservation_id", "start", "end", "gpus"):
        placed[reservation_id] += gpus * _hours(max(start, month), min(end, month_end))
    lines = dict(
        InvoiceLine.objects.filter(
            invoice=invoice, kind=InvoiceLine.Kind.USAGE, reservation_id__in=reservation_ids
        ).values_list("reservation_id", "amount")
    )
    corrected = dict(
        UsageCorrection.objects.filter(
            credit_note__invoice=invoice, displacement__reservation_id__in=reservation_ids
        )
        .values("displacement__reservation_id")
        .annotate(total=Sum("credit_note__amount"))
        .values_list("displacement__reservation_id", "total")
        .order_by()
    )
    rules = list(SlaCreditRule.objects.all())
    availability = sorted(
        (rule for rule in rules if rule.kind == SlaCreditRule.Kind.AVAILABILITY),
        key=lambda rule: rule.below_percent or ZERO,
    )
    recall_percent = max(
        (
            rule.credit_percent
            for rule in rules
            if rule.kind == SlaCreditRule.Kind.SHORT_NOTICE_RECALL
        ),
        default=ZERO,
    )

    assessments = []
    for reservation_id in reservation_ids:
        lost_by_incident: dict[int, int] = defaultdict(int)
        recalled: set[int] = set()  # incidents that were recalls inside the notice
        for hit in hits[reservation_id]:
            lost_by_incident[hit.incident_id] += hit.gpus_lost * _hours(hit.start, hit.end)
            if hit.short_notice_recall:
                recalled.add(hit.incident_id)
        lost = sum(lost_by_incident.values())
        if not lost and not recalled:
            continue  # not displaced in this month after all
        delivered = placed[reservation_id]
        promised = delivered + lost
        percent = ZERO
        if promised:
            share = Decimal(delivered) * HUNDRED / Decimal(promised)
            percent = next(
                (
                    rule.credit_percent
                    for rule in availability
                    if rule.below_percent is not None and share < rule.below_percent
                ),
                ZERO,
            )
        if recalled:
            percent = max(percent, recall_percent)
        charged = max(ZERO, lines.get(reservation_id, ZERO) - corrected.get(reservation_id, ZERO))
        incident_id = max(
            lost_by_incident,
            key=lambda pk: (lost_by_incident[pk], pk in recalled, -pk),
        )
        assessments.append(
            _Assessment(
                reservation_id=reservation_id,
                promised=promised,
                delivered=delivered,
                percent=percent,
                amount=round_money(charged * percent / HUNDRED, invoice.currency),
                incident_id=incident_id,
                incident_ids=frozenset(lost_by_incident),
            )
        )
    return assessments
