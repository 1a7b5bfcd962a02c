import pytest

from capacity.errors import InsufficientCapacity
from capacity.models import PoolHour
from marketplace.models import Reservation
from marketplace.services import booking as svc
from tests.marketplace.conftest import booking

pytestmark = pytest.mark.django_db


def book(tenant, request, **kw):
    return svc.reservation_create(
        tenant=tenant, request=request, fingerprint=request.fingerprint(), **kw
    )


def test_a_booking_fills_the_ledger_and_the_next_one_is_refused(frozen_now, tenant, pool):
    reservation, replayed = book(tenant, booking(gpus=24))
    assert replayed is False
    assert reservation.status == Reservation.Status.CONFIRMED
    assert list(PoolHour.objects.values_list("booked", flat=True)) == [24] * 4
    with pytest.raises(InsufficientCapacity):
        book(tenant, booking(gpus=16))
    assert list(PoolHour.objects.values_list("booked", flat=True)) == [24] * 4


def test_cancel_releases_and_extend_claims(frozen_now, tenant, pool):
    reservation, _ = book(tenant, booking(gpus=32))
    svc.reservation_cancel(tenant=tenant, reservation_id=reservation.pk, cancelled_by="t")
    assert set(PoolHour.objects.values_list("booked", flat=True)) == {0}
    other, _ = book(tenant, booking(gpus=8))
    from datetime import timedelta

    extended, _ = svc.reservation_extend(
        tenant=tenant,
        reservation_id=other.pk,
        new_end=other.end + timedelta(hours=2),
        fingerprint="x",
    )
    assert extended.hours == 6
    assert PoolHour.objects.filter(booked=8).count() == 6
