"""Gapless document numbers: ``INV-2026-000123``, ``CN-2026-000001``.

A number is issued inside the transaction that issues the document, from a per-series,
per-year counter row locked FOR UPDATE: if the transaction rolls back, so does the counter,
and no other transaction can take a number in between. The year is the year of issue."""

from billing import locks

INVOICE_SERIES = "INV"
CREDIT_NOTE_SERIES = "CN"


def numbers_issue(*, series: str, year: int, count: int) -> list[str]:
    """The next ``count`` numbers of ``series`` in ``year``, in order. Call inside the issuing
    transaction, after every other lock it needs (the counter row is the hottest lock in
    billing)."""
    sequence = locks.sequence_lock(series, year)
    first = sequence.last_number + 1
    sequence.last_number += count
    sequence.save(update_fields=["last_number"])
    return [f"{series}-{year}-{n:06d}" for n in range(first, first + count)]


def number_issue(*, series: str, year: int) -> str:
    return numbers_issue(series=series, year=year, count=1)[0]
