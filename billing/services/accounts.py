"""The tenant's money account: the only writes to ``LedgerEntry`` and to
``Reservation.invoiced_amount``.

Invoicing, credit notes, payments and top-ups post through these functions. Every posting is
idempotent on (tenant, kind, reference) — the ledger's unique constraint — so a retried job can
never post twice."""

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import transaction
from django.db.models import Case, F, Value, When
from django.db.models.functions import Least

from billing.models import LedgerEntry
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


@transaction.atomic
def ledger_post_many(*, postings: Sequence[Posting]) -> None:
    """``ledger_post`` for many entries in one INSERT (a billing run posts thousands).
    Same idempotency: an entry already on the ledger under (tenant, kind, reference) is kept,
    and must agree in amount and currency, else LedgerReferenceReused rolls everything back."""
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


def reservations_mark_invoiced(*, invoiced: Iterable[tuple[object, Decimal, datetime]]) -> int:
    """Record that part of reservations' charges is now on finalized invoices: ``invoiced`` holds
    ``(reservation_id, amount, period_end)`` per invoice line. One UPDATE of F() expressions
    (no read-modify-write race); call inside the invoices' transaction.

    ``invoiced_amount`` never exceeds ``charge``; a reservation whose hold ended by the period
    end of an invoice it is on is fully billed, so its ``invoiced_amount`` becomes its
    ``charge``: hours lost to outages and per-line rounding leave nothing "uninvoiced" behind
    in the credit check."""
    amounts: dict[object, Decimal] = defaultdict(Decimal)
    closes: dict[datetime, list[object]] = defaultdict(list)
    for reservation_id, amount, period_end in invoiced:
        amounts[reservation_id] += amount
        closes[period_end].append(reservation_id)
    if not amounts:
        return 0
    return Reservation.objects.filter(pk__in=list(amounts)).update(
        invoiced_amount=Case(
            *[
                When(pk__in=ids, capacity_until__lte=period_end, then=F("charge"))
                for period_end, ids in closes.items()
            ],
            *[
                When(pk=pk, then=Least(F("charge"), F("invoiced_amount") + Value(amount)))
                for pk, amount in amounts.items()
            ],
            default=F("invoiced_amount"),
        )
    )
