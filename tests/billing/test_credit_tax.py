"""The credit check counts the tax the invoice will add: what is checked is what will be
invoiced. Credit limit 10,000.00 and 20 % tax: 8,333.33 may still be booked before tax."""

from decimal import Decimal

import pytest

from billing import credit
from marketplace.errors import CreditLimitExceeded
from marketplace.models import Reservation
from tests.db_helpers import run_concurrently
from tests.factories import CapacityPoolFactory, TenantFactory
from tests.marketplace.conftest import booking
from tests.marketplace.test_booking import book

LIMIT = Decimal("10000.00")


def taxed_tenant():
    return TenantFactory(credit_limit=LIMIT, tax_rate_percent=Decimal("20.00"))


@pytest.mark.django_db
def test_a_booking_whose_taxed_total_passes_the_limit_is_refused():
    # given a tenant with 10,000.00 of credit and 20 % tax, and GPUs at 105.00 an hour
    tenant = taxed_tenant()
    CapacityPoolFactory(price_per_gpu_hour=Decimal("105.0000"))
    assert credit.credit_available(tenant=tenant) == Decimal("8333.33")

    # when it books 8 GPUs for 10 hours (8,400.00, 10,080.00 with tax)
    with pytest.raises(CreditLimitExceeded) as error:
        book(tenant, booking(gpus=8, hours=10))

    # then it is refused with the figures before tax, and nothing is booked
    assert error.value.code == "credit_limit_exceeded"
    assert error.value.extra == {"available_credit": "8333.33", "amount": "8400.00"}
    assert not Reservation.objects.exists()

    # and 9 hours (7,560.00, 9,072.00 with tax) fit, leaving 10,000 - 9,072 = 928 taxed
    book(tenant, booking(gpus=8, hours=9))
    assert credit.credit_figures(tenant=tenant).uninvoiced_tax == Decimal("1512.00")
    assert credit.credit_available(tenant=tenant) == Decimal("773.33")  # 928 / 1.2


@pytest.mark.django_db(transaction=True)
def test_two_bookings_racing_for_the_last_taxed_credit_one_wins():
    # given two pools (capacity is no limit) and two bookings of 5,000.00 (6,000.00 taxed):
    # either fits, both do not
    tenant = taxed_tenant()
    for slug in ("pool-a", "pool-b"):
        CapacityPoolFactory(slug=slug, price_per_gpu_hour=Decimal("62.5000"))

    def attempt(pool: str):
        def run() -> str:
            try:
                book(tenant, booking(gpus=8, hours=10, pool=pool))
                return "booked"
            except CreditLimitExceeded:
                return "credit_limit_exceeded"

        return run

    # when they run at once
    outcomes = run_concurrently(attempt("pool-a"), attempt("pool-b"))

    # then one booked and one was refused; the books never pass the limit, tax included
    assert sorted(outcomes) == ["booked", "credit_limit_exceeded"]
    figures = credit.credit_figures(tenant=tenant)
    assert figures.uninvoiced_commitments + figures.uninvoiced_tax == Decimal("6000.00")
    assert Reservation.objects.count() == 1
