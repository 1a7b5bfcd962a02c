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
    return moment.minute == 0 and moment.second == 0 and moment.microsecond == 0


def hours_between(start: datetime, end: datetime) -> int:
    return int((end - start) / HOUR)


def hour_range(start: datetime, end: datetime) -> list[datetime]:
    return [start + i * HOUR for i in range(hours_between(start, end))]
