"""Booking rules at their edges: location and tier filters, price and credit limits met
exactly, quota peaks of staggered reservations, and the figures errors carry."""

from decimal import Decimal

import pytest

from capacity.errors import InsufficientCapacity
from core.timeutils import HOUR
from marketplace.errors import CreditLimitExceeded, InvalidGpuCount, QuotaExceeded, UnknownGpuModel
from marketplace.models import Reservation, Tenant
from marketplace.services import booking as svc
from tests.factories import CapacityPoolFactory, ProviderFactory, RegionFactory, TenantFactory
from tests.marketplace.conftest import MONDAY_9, NOW, booking

pytestmark = pytest.mark.django_db


def book(tenant: Tenant, request: svc.BookingRequest) -> Reservation:
    return svc.reservation_create(
        tenant=tenant, request=request, fingerprint=request.fingerprint(), now=NOW
    )[0]


@pytest.fixture
def tenant(db) -> Tenant:
    return TenantFactory()


def test_a_provider_or_tier_filter_books_only_matching_pools_even_when_others_are_cheaper(tenant):
    # given a cheap primary pool at AWS and a dearer backup pool at Oracle
    aws = RegionFactory(provider=ProviderFactory(slug="aws"))
    oracle = RegionFactory(provider=ProviderFactory(slug="oracle"))
    CapacityPoolFactory(slug="aws-cheap", region=aws, price_per_gpu_hour=Decimal("1.00"))
    CapacityPoolFactory(
        slug="oracle-backup", region=oracle, tier="backup", price_per_gpu_hour=Decimal("2.00")
    )

    # when the tenant asks for Oracle, then for backup capacity
    by_provider = book(tenant, booking(gpus=8, hours=2, provider="oracle"))
    by_tier = book(tenant, booking(gpus=8, start=MONDAY_9 + 3 * HOUR, hours=2, tier="backup"))

    # then both land on the pool that matches, not the cheapest
    assert (by_provider.pool.slug, by_tier.pool.slug) == ("oracle-backup", "oracle-backup")


def test_a_price_limit_equal_to_the_price_books(tenant):
    CapacityPoolFactory(slug="pool-a")

    reservation = book(tenant, booking(gpus=8, hours=2, max_unit_price=Decimal("3.0000")))

    assert reservation.unit_price == Decimal("3.0000")


def test_a_booking_costing_exactly_the_credit_left_books(tenant):
    # given 96.00 of credit and a booking of 8 GPUs x 4 h x 3.00
    CapacityPoolFactory(slug="pool-a")
    Tenant.objects.filter(pk=tenant.pk).update(credit_limit=Decimal("96.00"))
    tenant.refresh_from_db()

    reservation = book(tenant, booking(gpus=8, hours=4))

    assert reservation.total_price == Decimal("96.00")


def test_credit_below_zero_is_reported_as_none_left(tenant):
    # given a tenant that owes more than its limit
    CapacityPoolFactory(slug="pool-a")
    Tenant.objects.filter(pk=tenant.pk).update(credit_limit=Decimal("10.00"))
    tenant.refresh_from_db()
    tenant.ledger_entries.create(
        kind="invoice", amount=Decimal("-50.00"), currency="USD", reference="INV-2026-000001"
    )

    with pytest.raises(CreditLimitExceeded) as error:
        book(tenant, booking(gpus=8, hours=1))

    assert error.value.extra == {"available_credit": "0", "amount": "24.00"}


def test_the_gpu_quota_peak_counts_staggered_and_simultaneous_ends(tenant):
    # given a tenant allowed 32 GPUs holding 16 GPUs 09-13 and 16 GPUs 10-13
    Tenant.objects.filter(pk=tenant.pk).update(max_gpus=32)
    tenant.refresh_from_db()
    CapacityPoolFactory(slug="pool-a", node_count=16)
    book(tenant, booking(gpus=16, hours=4))
    book(tenant, booking(gpus=16, start=MONDAY_9 + HOUR, hours=3))

    # when it asks for 8 more 09-13 (the peak is 32 from 10:00)
    with pytest.raises(QuotaExceeded) as error:
        book(tenant, booking(gpus=8, hours=4))

    # then it is refused with the peak
    assert error.value.extra == {"quota": "max_gpus", "limit": 32, "in_use": 32}


def test_reservations_ending_together_free_their_gpus_together(tenant):
    # given a tenant allowed 24 GPUs holding 8 GPUs 09-11, 8 GPUs 10-11 and 16 GPUs 12-13
    Tenant.objects.filter(pk=tenant.pk).update(max_gpus=24)
    tenant.refresh_from_db()
    CapacityPoolFactory(slug="pool-a", node_count=16)
    book(tenant, booking(gpus=8, hours=2))
    book(tenant, booking(gpus=8, start=MONDAY_9 + HOUR, hours=1))
    book(tenant, booking(gpus=16, start=MONDAY_9 + 3 * HOUR, hours=1))

    # when it asks for 8 more 09-13 (the peak is 16: both early ones end at 11:00)
    reservation = book(tenant, booking(gpus=8, hours=4))

    # then it fits the quota
    assert reservation.status == Reservation.Status.CONFIRMED


def test_an_extension_does_not_count_the_reservation_against_itself(tenant):
    # given a tenant allowed 8 GPUs holding 8 GPUs 09-13
    Tenant.objects.filter(pk=tenant.pk).update(max_gpus=8)
    tenant.refresh_from_db()
    CapacityPoolFactory(slug="pool-a")
    reservation = book(tenant, booking(gpus=8, hours=4))

    # when it extends to 15:00
    extended, _, _ = svc.reservation_extend(
        tenant=tenant,
        reservation_id=reservation.pk,
        new_end=reservation.end + 2 * HOUR,
        fingerprint="extend",
        now=NOW,
    )

    # then the extension fits the quota
    assert extended.end == MONDAY_9 + 6 * HOUR


def test_input_errors_name_the_field_with_code_and_message(tenant):
    CapacityPoolFactory(slug="pool-a")

    with pytest.raises(UnknownGpuModel) as unknown:
        book(tenant, booking(gpus=8, gpu_model="nope"))
    with pytest.raises(InvalidGpuCount) as zero:
        book(tenant, booking(gpus=0))
    with pytest.raises(InvalidGpuCount) as odd:
        book(tenant, booking(gpus=3))

    assert unknown.value.fields == {
        "gpu_model": [{"code": "unknown", "message": "Unknown GPU model."}]
    }
    assert zero.value.fields == {"gpu_count": [{"code": "min_value", "message": "At least 1."}]}
    assert odd.value.fields == {
        "gpu_count": [{"code": "not_whole_nodes", "message": "Multiple of 8."}]
    }


def test_a_full_pool_reports_no_gpus_available(tenant):
    CapacityPoolFactory(slug="pool-a")
    book(TenantFactory(), booking(gpus=32, hours=2))

    with pytest.raises(InsufficientCapacity) as error:
        book(tenant, booking(gpus=8, hours=2))

    assert error.value.extra == {"available_gpus": 0}
