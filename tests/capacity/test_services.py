"""The capacity services refuse windows off the UTC hour grid, naming the field at fault."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from capacity.errors import InvalidWindow
from capacity.models import Incident
from capacity.services import capacity_claim, incident_open
from tests.factories import CapacityPoolFactory

pytestmark = pytest.mark.django_db

NINE = datetime(2026, 12, 7, 9, tzinfo=UTC)
IST = timezone(timedelta(hours=5, minutes=30))
NOW = NINE - timedelta(days=1)  # planned maintenance may not start before the hour in progress
MESSAGES = {
    "naive_datetime": "Give a UTC offset.",
    "not_whole_hour": "Must fall on a whole UTC hour.",
    "before_start": "Must be after start.",
}


@pytest.mark.parametrize(
    ("start", "end", "fields"),
    [
        (NINE.replace(tzinfo=None), NINE + timedelta(hours=2), {"start": "naive_datetime"}),
        (NINE, (NINE + timedelta(hours=2)).replace(tzinfo=None), {"end": "naive_datetime"}),
        (
            NINE.replace(tzinfo=None),
            (NINE + timedelta(hours=2)).replace(tzinfo=None),
            {"start": "naive_datetime", "end": "naive_datetime"},
        ),
        (NINE + timedelta(minutes=30), NINE + timedelta(hours=2), {"start": "not_whole_hour"}),
        (NINE, NINE + timedelta(hours=2, seconds=1), {"end": "not_whole_hour"}),
        (
            datetime(2026, 12, 7, 9, tzinfo=IST),
            NINE + timedelta(hours=2),
            {"start": "not_whole_hour"},
        ),
        (NINE, NINE, {"end": "before_start"}),
        (NINE + timedelta(hours=2), NINE, {"end": "before_start"}),
    ],
)
def test_an_incident_off_the_hour_grid_is_refused_naming_the_field(start, end, fields):
    pool = CapacityPoolFactory()

    with pytest.raises(InvalidWindow) as error:
        incident_open(
            pool=pool, kind=Incident.Kind.MAINTENANCE, start=start, end=end, gpus=8, now=NOW
        )

    assert error.value.code == "invalid_window"
    assert error.value.fields == {
        name: [{"code": code, "message": MESSAGES[code]}] for name, code in fields.items()
    }
    assert not Incident.objects.exists()
    assert not pool.hours.exists()


def test_an_incident_in_another_offset_on_the_utc_hour_is_stored_in_utc():
    pool = CapacityPoolFactory()
    start = datetime(2026, 12, 7, 14, 30, tzinfo=IST)  # 09:00Z

    incident = incident_open(
        pool=pool,
        kind=Incident.Kind.MAINTENANCE,
        start=start,
        end=start + timedelta(hours=2),
        gpus=8,
        now=NOW,
    )

    incident.refresh_from_db()
    assert (incident.start, incident.end) == (NINE, NINE + timedelta(hours=2))
    assert incident.start.tzinfo == UTC


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (NINE.replace(tzinfo=None), NINE + timedelta(hours=1)),
        (NINE, NINE.replace(minute=30)),
        (datetime(2026, 12, 7, 9, tzinfo=IST), NINE + timedelta(hours=1)),
    ],
)
def test_the_ledger_claims_only_whole_utc_hours(start, end):
    pool = CapacityPoolFactory()

    with pytest.raises(InvalidWindow):
        capacity_claim(pool_id=pool.pk, start=start, end=end, gpus=8)

    assert not pool.hours.exists()
