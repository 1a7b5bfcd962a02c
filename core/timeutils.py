"""Time is UTC and timezone-aware everywhere; booking windows are whole hours."""

from datetime import UTC, datetime, timedelta

HOUR = timedelta(hours=1)
# The widest UTC offset in use anywhere (Kiribati, +14:00; the lowest is -12:00). A time given
# with a wider one (RFC 3339's grammar allows up to ±23:59) is refused as a mistake.
MAX_UTC_OFFSET = timedelta(hours=14)


def utcnow() -> datetime:
    return datetime.now(UTC)


def floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def ceil_hour(moment: datetime) -> datetime:
    floored = floor_hour(moment)
    return floored if floored == moment else floored + HOUR


def is_whole_hour(moment: datetime) -> bool:
    """On the UTC hour grid: 09:00+05:30 (03:30Z) is not."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.minute == 0 and moment.second == 0 and moment.microsecond == 0


def hours_between(start: datetime, end: datetime) -> int:
    # In UTC: Python subtracts datetimes sharing a tzinfo on the wall clock, which is an hour
    # off across a DST change.
    return int((end.astimezone(UTC) - start.astimezone(UTC)) / HOUR)


def hour_range(start: datetime, end: datetime) -> list[datetime]:
    first = start.astimezone(UTC)
    return [first + i * HOUR for i in range(hours_between(start, end))]


def offset_in_use(moment: datetime) -> bool:
    """Whether an aware ``moment``'s UTC offset is one that exists (within ±14:00)."""
    offset = moment.utcoffset()
    return offset is None or abs(offset) <= MAX_UTC_OFFSET
