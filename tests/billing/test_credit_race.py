"""The booking credit check reads the ledger that billing writes: two bookings racing for the
last credit cannot both pass (the booking service locks the tenant row)."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial

import pytest

from billing import credit
from billing.services import accounts
from marketplace.errors import CreditLimitExceeded
from marketplace.models import Reservation
from marketplace.services import booking as booking_service
from tests.db_helpers import run_concurrently
from tests.factories import CapacityPoolFactory, TenantFactory

NOW = datetime(2026, 12, 1, 8, 30, tzinfo=UTC)
START = datetime(2026, 12, 7, 9, tzinfo=UTC)


@pytest.mark.django_db(transaction=True)
def test_two_bookings_racing_for_the_last_credit_cannot_both_pass():
    # given a tenant with 100.00 of credit limit and 92.00 of prepaid credit (192.00 in all),
    # and two bookings of 8 GPUs x 4 h x 3.00 = 96.00... plus one more GPU-hour's worth
    tenant = TenantFactory(credit_limit=Decimal("100.00"))
    accounts.top_up_create(tenant=tenant, amount=Decimal("92.00"), reference="wire-1")
    CapacityPoolFactory(slug="pool-a", gpus_per_node=8, node_count=8)
    requests = [
        booking_service.BookingRequest(
            gpu_model="h100-sxm-80gb",
            gpu_count=8,
            start=START + timedelta(hours=i * 24),
            end=START + timedelta(hours=i * 24 + 5),
        )
        for i in range(2)
    ]  # 8 x 5 x 3.00 = 120.00 each: one fits in 192.00, two do not

    def book(request) -> str:
        try:
            booking_service.reservation_create(
                tenant=tenant, request=request, fingerprint=request.fingerprint(), now=NOW
            )
        except CreditLimitExceeded:
            return "credit_limit_exceeded"
        return "booked"  # any other exception fails the test with its traceback

    outcomes = run_concurrently(*(partial(book, request) for request in requests))

    # then exactly one booked, and the account stays within its limit
    assert sorted(outcomes) == ["booked", "credit_limit_exceeded"]
    assert Reservation.objects.count() == 1
    assert credit.credit_available(tenant=tenant) == Decimal("72.00")
