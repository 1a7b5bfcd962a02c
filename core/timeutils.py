"""Time is UTC and timezone-aware everywhere; booking windows are whole hours."""

from datetime import UTC, datetime, timedelta

HOUR = timedelta(hours=1)


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
