"""The tenant's money account: the only writes to ``LedgerEntry`` and to
``Reservation.invoiced_amount``.

Invoicing, credit notes, payments and top-ups post through these functions. Every posting is
idempotent on (tenant, kind, reference) — the ledger's unique constraint — so a retried job can
never post twice."""

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import Case, F, Max, OuterRef, Subquery, Sum, When
from django.db.models.functions import Least
from django.utils import timezone

from billing.models import Invoice, InvoiceLine, LedgerEntry
from core.errors import Conflict, InvalidInput
from core.money import round_money
from marketplace.models import Reservation, Tenant


class LedgerReferenceReused(Conflict):
    code = "ledger_reference_reused"
    default_detail = "This reference was already posted with another amount or currency."


@dataclass(frozen=True)
class Posting:
    tenant_id: int
    kind: str
    amount: Decimal
    currency: str
    reference: str
    memo: str = ""


def _validate(kind: str, amount: Decimal, currency: str) -> None:
    if kind not in LedgerEntry.Kind.values:
        raise InvalidInput(f"Unknown ledger entry kind {kind!r}.")
    if amount == 0 or round_money(amount, currency) != amount:
        raise InvalidInput(
            f"A ledger amount is non-zero and in the currency's minor unit; got {amount}.",
            fields={"amount": [{"code": "invalid_amount", "message": "Non-zero, minor unit."}]},
        )


@transaction.atomic
def ledger_post(
    *,
    tenant: Tenant,
    kind: str,
    amount: Decimal,
    currency: str,
    reference: str,
    memo: str = "",
) -> tuple[LedgerEntry, bool]:
    """Append a signed ``amount`` to the tenant's ledger under ``reference``; returns
    ``(entry, created)``. Posting the same (tenant, kind, reference) again returns the first
    entry unchanged; doing so with another amount or currency raises LedgerReferenceReused."""
    _validate(kind, amount, currency)
    entry, created = LedgerEntry.objects.get_or_create(
        tenant=tenant,
        kind=kind,
        reference=reference,
        defaults={"amount": amount, "currency": currency, "memo": memo[:500]},
    )
    if not created and (entry.amount != amount or entry.currency != currency):
        raise LedgerReferenceReused(
            f"{reference} was posted as {entry.amount} {entry.currency}, not {amount} {currency}.",
            extra={"reference": reference},
        )
    return entry, created


# The charge of each issued invoice: -total under its number (none for a zero total).
_INVOICE_ENTRIES = f"""
    SELECT i.tenant_id, %(kind)s, -i.total, i.currency, i.number,
           'Invoice ' || i.number || ' for '
               || to_char(i.period_start AT TIME ZONE 'UTC', 'FMMonth YYYY')
    FROM {Invoice._meta.db_table} i
    WHERE i.id = ANY(%(ids)s) AND i.total <> 0 AND i.number IS NOT NULL
"""  # noqa: S608 - table names come from model metadata, values are parameters


@transaction.atomic
def ledger_post_many(*, postings: Sequence[Posting] = (), invoice_ids: Sequence[int] = ()) -> None:
    """``ledger_post`` for many entries in one INSERT (a billing run posts thousands): the
    ``postings``, and for each issued invoice among ``invoice_ids`` its charge, -total under
    its number (PostgreSQL: INSERT ... SELECT from the invoices). Same idempotency: an entry
    already on the ledger under (tenant, kind, reference) is kept, and must agree in amount
    and currency, else LedgerReferenceReused rolls everything back."""
    if invoice_ids:
        _post_invoices(list(invoice_ids))
    if not postings:
        return
    for posting in postings:
        _validate(posting.kind, posting.amount, posting.currency)
    LedgerEntry.objects.bulk_create(
        [
            LedgerEntry(
                tenant_id=posting.tenant_id,
                kind=posting.kind,
                amount=posting.amount,
                currency=posting.currency,
                reference=posting.reference,
                memo=posting.memo[:500],
            )
            for posting in postings
        ],
        ignore_conflicts=True,
        batch_size=1000,
    )
    stored = {
        (tenant_id, kind, reference): (amount, currency)
        for tenant_id, kind, reference, amount, currency in LedgerEntry.objects.filter(
            tenant_id__in={posting.tenant_id for posting in postings},
            reference__in={posting.reference for posting in postings},
        ).values_list("tenant_id", "kind", "reference", "amount", "currency")
    }
    for posting in postings:
        key = (posting.tenant_id, posting.kind, posting.reference)
        if stored.get(key) != (posting.amount, posting.currency):
            raise LedgerReferenceReused(
                f"{posting.reference} is on the ledger as {stored.get(key)}, not "
                f"{posting.amount} {posting.currency}.",
                extra={"reference": posting.reference},
            )


def _post_invoices(invoice_ids: list[int]) -> None:
    table = LedgerEntry._meta.db_table
    params: dict[str, Any] = {
        "ids": invoice_ids,
        "kind": LedgerEntry.Kind.INVOICE,
        "now": timezone.now(),
    }
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {table} (tenant_id, kind, amount, currency, reference, memo, created_at)
            SELECT *, %(now)s FROM ({_INVOICE_ENTRIES}) AS entries
            ON CONFLICT (tenant_id, kind, reference) DO NOTHING
            """,  # noqa: S608 - table names come from model metadata, values are parameters
            params,
        )
        cursor.execute(
            f"""
            SELECT x.reference, e.amount, e.currency
            FROM ({_INVOICE_ENTRIES}) AS x(tenant_id, kind, amount, currency, reference, memo)
            LEFT JOIN {table} e ON e.tenant_id = x.tenant_id AND e.kind = x.kind
                               AND e.reference = x.reference
            WHERE e.id IS NULL OR e.amount <> x.amount OR e.currency <> x.currency
            LIMIT 1
            """,  # noqa: S608 - table names come from model metadata, values are parameters
            params,
        )
        clash = cursor.fetchone()
    if clash:
        reference, amount, currency = clash
        raise LedgerReferenceReused(
            f"{reference} is on the ledger as {amount} {currency}, not the invoice's charge.",
            extra={"reference": reference},
        )


def _positive(amount: Decimal, currency: str) -> None:
    if amount <= 0 or round_money(amount, currency) != amount:
        raise InvalidInput(
            "The amount must be positive and in the currency's minor unit.",
            fields={"amount": [{"code": "invalid_amount", "message": "Positive, minor unit."}]},
        )


def top_up_create(
    *, tenant: Tenant, amount: Decimal, reference: str, memo: str = ""
) -> tuple[LedgerEntry, bool]:
    """Prepaid credit: ``+amount`` in the tenant's currency. Idempotent on ``reference``."""
    _positive(amount, tenant.currency)
    return ledger_post(
        tenant=tenant,
        kind=LedgerEntry.Kind.TOP_UP,
        amount=amount,
        currency=tenant.currency,
        reference=reference,
        memo=memo,
    )


def payment_record(
    *, tenant: Tenant, amount: Decimal, currency: str, reference: str, memo: str = ""
) -> tuple[LedgerEntry, bool]:
    """Money received: ``+amount``. Idempotent on ``reference`` (e.g. the bank reference)."""
    _positive(amount, currency)
    return ledger_post(
        tenant=tenant,
        kind=LedgerEntry.Kind.PAYMENT,
        amount=amount,
        currency=currency,
        reference=reference,
        memo=memo,
    )


def reservations_mark_invoiced(*, invoice_ids: Sequence[int]) -> int:
    """Record that part of reservations' charges is now on the finalized invoices
    ``invoice_ids``: each reservation's ``invoiced_amount`` is raised by the sum of its lines on
    them. One UPDATE of F() expressions and subqueries (no read-modify-write race); call inside
    the invoices' transaction.

    ``invoiced_amount`` never exceeds ``charge``; a reservation whose hold ended by the period
    end of an invoice it is on is fully billed, so its ``invoiced_amount`` becomes its
    ``charge``: hours lost to outages and per-line rounding leave nothing "uninvoiced" behind
    in the credit check."""
    lines = InvoiceLine.objects.filter(invoice_id__in=list(invoice_ids))
    own_lines = lines.filter(reservation_id=OuterRef("pk")).order_by().values("reservation_id")
    amount = Subquery(own_lines.annotate(total=Sum("amount")).values("total"))
    last_period_end = Subquery(own_lines.annotate(end=Max("invoice__period_end")).values("end"))
    return Reservation.objects.filter(pk__in=lines.values("reservation_id")).update(
        invoiced_amount=Case(
            When(capacity_until__lte=last_period_end, then=F("charge")),
            default=Least(F("charge"), F("invoiced_amount") + amount),
        )
    )
