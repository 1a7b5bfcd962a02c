"""The cancellation policy is data: the rule with the largest notice the cancellation meets
applies, counted in whole hours before the start; with no rule at all, cancelling is free."""

from datetime import timedelta
from decimal import Decimal

import pytest

from marketplace.models import CancellationRule, Reservation, Tenant
from marketplace.services import booking as svc
from tests.factories import CapacityPoolFactory, TenantFactory
from tests.marketplace.conftest import MONDAY_9, NOW, booking

pytestmark = pytest.mark.django_db


def book(tenant: Tenant) -> Reservation:
    request = booking(gpus=8, start=MONDAY_9, hours=4)  # 96.00
    return svc.reservation_create(
        tenant=tenant, request=request, fingerprint=request.fingerprint(), now=NOW
    )[0]


def fee_when_cancelled(before_start: timedelta) -> Decimal:
    tenant = TenantFactory()
    reservation = book(tenant)
    cancelled = svc.reservation_cancel(
        tenant=tenant,
        reservation_id=reservation.pk,
        cancelled_by="test",
        now=MONDAY_9 - before_start,
    )
    return cancelled.cancellation_fee


@pytest.fixture(autouse=True)
def pool(db):
    return CapacityPoolFactory(slug="pool-a")


def test_with_no_cancellation_rule_at_all_cancelling_is_free():
    CancellationRule.objects.all().delete()

    assert fee_when_cancelled(timedelta(minutes=30)) == Decimal("0.00")


def test_notice_is_counted_in_whole_hours_before_the_start():
    # given: 10 % with at least 1 hour's notice, 80 % with less
    CancellationRule.objects.all().delete()
    CancellationRule.objects.create(min_notice_hours=1, fee_percent=Decimal("10.00"))
    CancellationRule.objects.create(min_notice_hours=0, fee_percent=Decimal("80.00"))

    # then 1 h 59 min of notice is 1 hour (10 %), 59 minutes is 0 hours (80 %)
    assert fee_when_cancelled(timedelta(hours=1, minutes=59)) == Decimal("9.60")
    assert fee_when_cancelled(timedelta(minutes=59)) == Decimal("76.80")
