"""Gapless document numbers: ``INV-2026-000123``, ``CN-2026-000001``.

A number is issued inside the transaction that issues the document, from a per-series,
per-year counter row locked FOR UPDATE: if the transaction rolls back, so does the counter,
and no other transaction can take a number in between. The year is the year of issue."""

from billing import locks

INVOICE_SERIES = "INV"
CREDIT_NOTE_SERIES = "CN"


def numbers_reserve(*, series: str, year: int, count: int) -> int:
    """Take the next ``count`` numbers of ``series`` in ``year`` for the caller to write (with
    ``number_sql``); returns the first. Call inside the issuing transaction, after every other
    lock it needs (the counter row is the hottest lock in billing)."""
    sequence = locks.sequence_lock(series, year)
    first = sequence.last_number + 1
    sequence.last_number += count
    sequence.save(update_fields=["last_number"])
    return first


def number_format(*, series: str, year: int, number: int) -> str:
    return f"{series}-{year}-{number:06d}"


def number_sql(*, series: str, year: int, position: str) -> str:
    """PostgreSQL for the document number ``number_format`` gives the integer expression
    ``position``, to write numbers taken with ``numbers_reserve`` in one UPDATE. (``lpad``
    alone would cut a seventh digit.)"""
    if series not in (INVOICE_SERIES, CREDIT_NOTE_SERIES):
        raise ValueError(f"Unknown document series {series!r}.")
    return (
        f"'{series}-{int(year)}-' || CASE WHEN ({position}) < 1000000 "
        f"THEN lpad(CAST(({position}) AS text), 6, '0') ELSE CAST(({position}) AS text) END"
    )


def numbers_issue(*, series: str, year: int, count: int) -> list[str]:
    """The next ``count`` numbers of ``series`` in ``year``, in order (see ``numbers_reserve``)."""
    first = numbers_reserve(series=series, year=year, count=count)
    return [number_format(series=series, year=year, number=n) for n in range(first, first + count)]


def number_issue(*, series: str, year: int) -> str:
    return numbers_issue(series=series, year=year, count=1)[0]
