"""Booking rules at their edges: location and tier filters, price and credit limits met
exactly, quota peaks of staggered reservations, and the figures errors carry."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from capacity.errors import InsufficientCapacity
from core.timeutils import HOUR
from marketplace import selectors
from marketplace.errors import CreditLimitExceeded, InvalidGpuCount, QuotaExceeded, UnknownGpuModel
from marketplace.models import Reservation, Tenant
from marketplace.services import booking as svc
from tests.factories import (
    CapacityPoolFactory,
    GpuModelFactory,
    ProviderFactory,
    RegionFactory,
    TenantFactory,
)
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
    extended, _ = svc.reservation_extend(
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


def test_only_pools_of_the_requested_gpu_model_are_searched_and_booked(tenant):
    # given a cheap A100 pool and a dearer H100 pool
    CapacityPoolFactory(
        slug="a100-cheap",
        gpu_model=GpuModelFactory(slug="a100-sxm-80gb"),
        price_per_gpu_hour=Decimal("1.00"),
    )
    CapacityPoolFactory(slug="h100")

    found = selectors.availability_search(
        tenant=tenant,
        criteria=selectors.PoolFilter(gpu_model="h100-sxm-80gb"),
        gpu_count=8,
        start=MONDAY_9,
        end=MONDAY_9 + 2 * HOUR,
    )
    reservation = book(tenant, booking(gpus=8, hours=2))

    assert [window.pool.slug for window in found] == ["h100"]
    assert reservation.pool.slug == "h100"


def test_a_quote_is_not_confirmed_until_it_is(tenant):
    CapacityPoolFactory(slug="pool-a")
    request = booking(gpus=8, hours=2)

    quote, _ = svc.quote_create(
        tenant=tenant, request=request, fingerprint=request.fingerprint(), now=NOW
    )
    confirmed, _ = svc.quote_confirm(
        tenant=tenant, quote_id=quote.pk, fingerprint=str(quote.pk), now=NOW + HOUR / 12
    )

    assert quote.confirmed_at is None
    assert confirmed.confirmed_at == NOW + HOUR / 12


def test_an_idempotency_key_is_kept_per_operation_and_per_key(tenant):
    # given one pool
    CapacityPoolFactory(slug="pool-a")
    first, second = booking(gpus=8, hours=2), booking(gpus=8, start=MONDAY_9 + 3 * HOUR, hours=2)

    # when the same key is used for a quote and for a booking, and another key for a second
    # booking
    quote, quote_replayed = svc.quote_create(
        tenant=tenant,
        request=first,
        fingerprint=first.fingerprint(),
        idempotency_key="k-1",
        now=NOW,
    )
    booked, booked_replayed = svc.reservation_create(
        tenant=tenant,
        request=second,
        fingerprint=second.fingerprint(),
        idempotency_key="k-1",
        now=NOW,
    )
    other, other_replayed = svc.reservation_create(
        tenant=tenant,
        request=first,
        fingerprint=first.fingerprint(),
        idempotency_key="k-2",
        now=NOW,
    )

    # then each ran once: a key belongs to one operation, and keys do not share outcomes
    assert (quote_replayed, booked_replayed, other_replayed) == (False, False, False)
    assert len({quote.pk, booked.pk, other.pk}) == 3


def test_a_booking_may_end_exactly_at_the_booking_horizon(tenant):
    # given the clock on the hour and a 365-day horizon
    CapacityPoolFactory(slug="pool-a", available_until=datetime(2029, 1, 1, tzinfo=UTC))
    now = datetime(2026, 12, 1, 8, tzinfo=UTC)
    end = now + timedelta(days=365)
    request = svc.BookingRequest(
        gpu_model="h100-sxm-80gb", gpu_count=8, start=end - 2 * HOUR, end=end
    )

    reservation, _ = svc.reservation_create(
        tenant=tenant, request=request, fingerprint=request.fingerprint(), now=now
    )

    assert reservation.end == end
