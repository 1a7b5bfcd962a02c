"""The guarantee does not depend on the services: PostgreSQL itself refuses a ledger row with
more GPUs booked than the hour can sell, whatever code writes it (raw SQL, an ORM update, an
insert), and the rows are left exactly as they were. Only an incident may leave booked GPUs
beyond capacity, and only as much as it marks ``excess``: such an hour takes no GPU more."""

from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import F

from capacity.models import Incident, PoolHour
from capacity.services import incident_open
from marketplace.services import booking as svc
from tests.db_helpers import raises_constraint
from tests.marketplace.conftest import MONDAY_9, NOW, booking
from tests.marketplace.test_concurrency import ledger_violations

pytestmark = pytest.mark.django_db


@pytest.fixture
def booked_24_of_32(tenant, pool):
    """The 32-GPU pool with 24 GPUs booked through the service for Monday 09:00-13:00 UTC."""
    request = booking(gpus=24, start=MONDAY_9, hours=4)
    svc.reservation_create(tenant=tenant, request=request, fingerprint="f", now=NOW)
    assert ledger_rows(pool) == [(24, 32)] * 4
    return pool


def ledger_rows(pool) -> list[tuple[int, int]]:
    return list(PoolHour.objects.filter(pool=pool).values_list("booked", "capacity"))


def test_raw_sql_adding_gpus_past_capacity_is_refused_by_the_database(booked_24_of_32):
    # given 24 of 32 GPUs booked in every hour

    # when SQL adds 16 more GPUs to every hour, bypassing the service
    with raises_constraint("poolhour_never_overbooked"), connection.cursor() as cursor:
        cursor.execute(
            "UPDATE capacity_poolhour SET booked = booked + %s WHERE pool_id = %s",
            [16, booked_24_of_32.pk],
        )

    # then PostgreSQL refuses it by the overbooking constraint and nothing changed
    assert ledger_rows(booked_24_of_32) == [(24, 32)] * 4
    assert ledger_violations() == []


def test_one_overbooked_hour_fails_the_whole_statement(booked_24_of_32):
    # given a fifth hour with only 8 booked next to four hours with 24 of 32 booked
    PoolHour.objects.create(
        pool=booked_24_of_32, hour=MONDAY_9 + timedelta(hours=4), capacity=32, booked=0
    )

    # when one statement adds 10 GPUs to all five hours (the fifth alone would fit)
    with raises_constraint("poolhour_never_overbooked"):
        PoolHour.objects.filter(pool=booked_24_of_32).update(booked=F("booked") + 10)

    # then none of the five rows changed
    assert ledger_rows(booked_24_of_32) == [(24, 32)] * 4 + [(0, 32)]


def test_an_orm_update_with_f_past_capacity_is_refused_by_the_database(booked_24_of_32):
    # given 24 of 32 GPUs booked in every hour

    # when the ORM adds 9 GPUs to the first hour only
    with raises_constraint("poolhour_never_overbooked"):
        PoolHour.objects.filter(pool=booked_24_of_32, hour=MONDAY_9).update(booked=F("booked") + 9)

    # then the database refuses it; exactly filling the hour is still allowed
    assert ledger_rows(booked_24_of_32) == [(24, 32)] * 4
    PoolHour.objects.filter(pool=booked_24_of_32, hour=MONDAY_9).update(booked=F("booked") + 8)
    assert ledger_rows(booked_24_of_32)[0] == (32, 32)


def test_lowering_capacity_below_booked_is_refused_by_the_database(booked_24_of_32):
    # given 24 of 32 GPUs booked in every hour

    # when a write takes capacity down to 16 without marking the excess, as a careless job
    # might
    with raises_constraint("poolhour_never_overbooked"):
        PoolHour.objects.filter(pool=booked_24_of_32).update(capacity=16)

    # then the database refuses it and the capacity is still 32
    assert ledger_rows(booked_24_of_32) == [(24, 32)] * 4


def test_inserting_an_overbooked_ledger_row_is_refused_by_the_database(pool):
    # given an hour nobody has booked yet
    hour = MONDAY_9 + timedelta(days=1)

    # when a row is inserted with 33 of 32 GPUs booked
    with raises_constraint("poolhour_never_overbooked"):
        PoolHour.objects.create(pool=pool, hour=hour, capacity=32, booked=33)

    # then the database refuses it and no row exists
    assert not PoolHour.objects.filter(pool=pool, hour=hour).exists()


def test_releasing_more_gpus_than_booked_is_refused_by_the_database(booked_24_of_32):
    # given 24 of 32 GPUs booked in every hour

    # when a write gives back 25 GPUs
    with raises_constraint("poolhour_booked_nonnegative"):
        PoolHour.objects.filter(pool=booked_24_of_32).update(booked=F("booked") - 25)

    # then the database refuses a negative booking and nothing changed
    assert ledger_rows(booked_24_of_32) == [(24, 32)] * 4


def test_a_second_ledger_row_for_the_same_hour_is_refused_by_the_database(booked_24_of_32):
    # given the ledger row of Monday 09:00 (24 of 32 booked)

    # when another row for the same pool and hour is inserted (which would split the count)
    with raises_constraint("poolhour_unique_hour"):
        PoolHour.objects.create(pool=booked_24_of_32, hour=MONDAY_9, capacity=32, booked=32)

    # then the unique constraint refuses it
    assert ledger_rows(booked_24_of_32) == [(24, 32)] * 4


def ledger_rows_with_excess(pool) -> list[tuple[int, int, int]]:
    return list(
        PoolHour.objects.filter(pool=pool)
        .order_by("hour")
        .values_list("booked", "capacity", "excess")
    )


@pytest.fixture
def overbooked_by_an_outage(booked_24_of_32):
    """16 GPUs of the pool out at Monday 10:00 (capacity only, nothing moved yet): 24 GPUs
    booked in a 16-GPU hour, 8 of them marked excess."""
    incident_open(
        pool=booked_24_of_32,
        kind=Incident.Kind.OUTAGE,
        gpus=16,
        start=MONDAY_9 + timedelta(hours=1),
        end=MONDAY_9 + timedelta(hours=2),
        now=NOW,
    )
    assert ledger_rows_with_excess(booked_24_of_32) == [
        (24, 32, 0),
        (24, 16, 8),
        (24, 32, 0),
        (24, 32, 0),
    ]
    return booked_24_of_32


@pytest.mark.parametrize(
    ("sql", "constraint"),
    [
        # one GPU more in the hour an incident overbooked
        ("booked = booked + 1", "poolhour_never_overbooked"),
        # forgetting the excess without moving anything
        ("excess = 0", "poolhour_never_overbooked"),
        # capacity lowered further with the excess left as it was
        ("capacity = capacity - 8", "poolhour_never_overbooked"),
        # more excess than GPUs booked, which would let a booking in later
        ("excess = booked + 8, capacity = 0", "poolhour_never_overbooked"),
        ("excess = -1", "poolhour_never_overbooked"),
    ],
    ids=["book_more", "forget_excess", "lower_capacity", "excess_beyond_booked", "negative"],
)
def test_an_hour_an_incident_overbooked_is_still_guarded_by_the_database(
    overbooked_by_an_outage, sql, constraint
):
    # given 24 GPUs booked in a 16-GPU hour with 8 in excess

    # when SQL changes that hour behind the services' back
    with raises_constraint(constraint), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE capacity_poolhour SET {sql} WHERE pool_id = %s AND excess > 0",
            [overbooked_by_an_outage.pk],
        )

    # then PostgreSQL refuses it by that constraint and nothing changed
    assert ledger_rows_with_excess(overbooked_by_an_outage)[1] == (24, 16, 8)
    assert ledger_violations() == []


def test_an_insert_may_not_claim_more_excess_than_gpus_booked(pool):
    # given an hour nobody has booked yet
    hour = MONDAY_9 + timedelta(days=1)

    # when a row is inserted as if an incident had left 40 GPUs in excess of 32 booked
    with raises_constraint("poolhour_never_overbooked"):
        PoolHour.objects.create(pool=pool, hour=hour, capacity=0, booked=32, excess=40)

    # then the database refuses it and no row exists
    assert not PoolHour.objects.filter(pool=pool, hour=hour).exists()
