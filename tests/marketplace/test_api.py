"""The booking API: what a tenant sees through /api/v1/ — search, quote, reserve, list, cancel,
extend — and what it never sees (another tenant's data, a 500)."""

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine

from capacity.models import PoolHour
from events.models import Event
from marketplace.models import IdempotencyRecord, PoolPrice, Reservation
from marketplace.services import booking as svc
from tests.factories import CapacityPoolFactory, ProviderFactory, RegionFactory, TenantFactory
from tests.marketplace.api_helpers import tenant_client
from tests.marketplace.conftest import NOW, booking

pytestmark = pytest.mark.django_db

MON_9 = "2026-12-07T09:00:00Z"
MON_13 = "2026-12-07T13:00:00Z"
MON_15 = "2026-12-07T15:00:00Z"


def body(gpus: int = 8, start: str = MON_9, end: str = MON_13, **extra) -> dict:
    return {"gpu_model": "h100-sxm-80gb", "gpu_count": gpus, "start": start, "end": end, **extra}


def book(tenant, **kwargs) -> Reservation:
    request = booking(**kwargs)
    reservation, _ = svc.reservation_create(
        tenant=tenant, request=request, fingerprint=request.fingerprint()
    )
    return reservation


def booked_by_hour(pool) -> list[int]:
    return list(
        PoolHour.objects.filter(pool=pool).order_by("hour").values_list("booked", flat=True)
    )


@pytest.fixture
def api(frozen_now, tenant):
    return tenant_client(tenant)


@pytest.fixture
def other_tenant(db):
    return TenantFactory(name="Other Corp", slug="other-corp")


@pytest.fixture
def other_api(frozen_now, other_tenant):
    return tenant_client(other_tenant)


@pytest.fixture
def catalogue(db):
    """Three H100 pools: a primary at 3.00, a backup at 2.50 and a primary at 3.50."""
    aws = ProviderFactory(slug="aws", name="AWS")
    gcp = ProviderFactory(slug="gcp", name="GCP")
    use1 = RegionFactory(provider=aws, code="us-east-1", country="US")
    euw1 = RegionFactory(provider=aws, code="eu-west-1", country="IE")
    usc1 = RegionFactory(provider=gcp, code="us-central1", country="US")
    return {
        "aws-use1": CapacityPoolFactory(
            slug="aws-use1", region=use1, price_per_gpu_hour=Decimal("3.0000")
        ),
        "aws-euw1-backup": CapacityPoolFactory(
            slug="aws-euw1-backup",
            region=euw1,
            tier="backup",
            price_per_gpu_hour=Decimal("2.5000"),
        ),
        "gcp-usc1": CapacityPoolFactory(
            slug="gcp-usc1", region=usc1, price_per_gpu_hour=Decimal("3.5000")
        ),
    }


def offers(response) -> list[str]:
    assert response.status_code == 200, response.json()
    return [offer["pool"] for offer in response.json()]


# --- availability -----------------------------------------------------------------------------


def test_availability_lists_every_pool_that_fits_cheapest_first(api, catalogue):
    # when a tenant searches 8 H100s for Monday 09:00-13:00
    response = api.get(
        "/api/v1/availability/",
        {"gpu_model": "h100-sxm-80gb", "gpu_count": 8, "start": MON_9, "end": MON_13},
    )
    # then every pool is offered, cheapest first, with its price for the whole booking
    assert offers(response) == ["aws-euw1-backup", "aws-use1", "gcp-usc1"]
    assert response.json()[0] == {
        "pool": "aws-euw1-backup",
        "provider": "aws",
        "region": "eu-west-1",
        "country": "IE",
        "gpu_model": "h100-sxm-80gb",
        "tier": "backup",
        "recallable": True,
        "recall_notice_hours": 2,
        "available_gpus": 32,
        "unit_price": "2.5000",
        "total_price": "80.00",
        "currency": "USD",
        "start": MON_9,
        "end": MON_13,
        "hours": 4,
    }


def test_availability_puts_primary_before_backup_at_equal_price(api, catalogue):
    # given the backup pool costs as much as the primary one
    PoolPrice.objects.filter(pool=catalogue["aws-euw1-backup"]).update(
        price_per_gpu_hour=Decimal("3.0000")
    )
    # when searching
    response = api.get(
        "/api/v1/availability/",
        {"gpu_model": "h100-sxm-80gb", "gpu_count": 8, "start": MON_9, "end": MON_13},
    )
    # then the primary pool comes first
    assert offers(response) == ["aws-use1", "aws-euw1-backup", "gcp-usc1"]


def test_availability_leaves_out_pools_without_enough_free_gpus(api, other_tenant, catalogue):
    # given another tenant holds 30 of the 32 GPUs of the backup pool for one of the hours
    book(other_tenant, gpus=24, start=datetime(2026, 12, 7, 12, tzinfo=UTC), hours=1, tier="backup")
    # when searching 16 GPUs, then 8
    query = {"gpu_model": "h100-sxm-80gb", "start": MON_9, "end": MON_13}
    sixteen = api.get("/api/v1/availability/", {**query, "gpu_count": 16})
    eight = api.get("/api/v1/availability/", {**query, "gpu_count": 8})
    # then the backup pool fits 8 (its fewest free GPUs in any hour) but not 16
    assert offers(sixteen) == ["aws-use1", "gcp-usc1"]
    assert offers(eight) == ["aws-euw1-backup", "aws-use1", "gcp-usc1"]
    assert eight.json()[0]["available_gpus"] == 8


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"region": "us-east-1"}, ["aws-use1"]),
        ({"provider": "gcp"}, ["gcp-usc1"]),
        ({"tier": "primary"}, ["aws-use1", "gcp-usc1"]),
        ({"max_unit_price": "3.00"}, ["aws-euw1-backup", "aws-use1"]),
        ({"provider": "aws", "tier": "backup"}, ["aws-euw1-backup"]),
        ({"region": "nowhere-1"}, []),
    ],
)
def test_availability_filters_by_location_tier_and_price(api, catalogue, extra, expected):
    response = api.get(
        "/api/v1/availability/",
        {"gpu_model": "h100-sxm-80gb", "gpu_count": 8, "start": MON_9, "end": MON_13, **extra},
    )
    assert offers(response) == expected


def test_availability_accepts_any_utc_offset_and_answers_in_utc(api, catalogue):
    # when the window is given as Monday 10:00 in UTC+1, i.e. 09:00Z
    response = api.get(
        "/api/v1/availability/",
        {
            "gpu_model": "h100-sxm-80gb",
            "gpu_count": 8,
            "start": "2026-12-07T10:00:00+01:00",
            "end": "2026-12-07T08:00:00-05:00",
        },
    )
    # then it is accepted and the offers read in UTC
    assert response.status_code == 200
    assert (response.json()[0]["start"], response.json()[0]["end"]) == (MON_9, MON_13)


def test_availability_for_an_unknown_gpu_model_is_a_400(api, catalogue):
    response = api.get(
        "/api/v1/availability/",
        {"gpu_model": "h9000", "gpu_count": 8, "start": MON_9, "end": MON_13},
    )
    assert response.status_code == 400
    assert response.json()["code"] == "unknown_gpu_model"
    assert response.json()["fields"] == {
        "gpu_model": [{"code": "unknown", "message": "Unknown GPU model."}]
    }


@pytest.mark.parametrize(
    ("start", "end", "field", "reason"),
    [
        ("2026-12-07T09:30:00Z", MON_13, "start", "not_whole_hour"),
        (MON_9, "2026-12-07T13:00:01Z", "end", "not_whole_hour"),
        (MON_9, "2026-12-07T13:00:00.500000Z", "end", "not_whole_hour"),
        ("2026-12-07T09:00:00+00:30", MON_13, "start", "not_whole_hour"),
        (MON_9, MON_9, "end", "too_short"),
        (MON_13, MON_9, "end", "too_short"),
        ("2026-11-30T09:00:00Z", "2026-11-30T10:00:00Z", "start", "in_past"),
        ("2026-12-01T09:00:00Z", "2027-03-02T09:00:00Z", "end", "too_long"),
        ("2027-11-30T09:00:00Z", "2027-12-02T09:00:00Z", "end", "beyond_horizon"),
    ],
)
def test_availability_windows_must_be_whole_utc_hours_inside_the_rules(
    api, catalogue, start, end, field, reason
):
    response = api.get(
        "/api/v1/availability/",
        {"gpu_model": "h100-sxm-80gb", "gpu_count": 8, "start": start, "end": end},
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_window"
    assert response.json()["fields"][field][0]["code"] == reason


def test_the_current_hour_counts_as_not_in_the_past(api, catalogue):
    # given it is 08:30; when searching from 08:00
    response = api.get(
        "/api/v1/availability/",
        {
            "gpu_model": "h100-sxm-80gb",
            "gpu_count": 8,
            "start": "2026-12-01T08:00:00Z",
            "end": "2026-12-01T10:00:00Z",
        },
    )
    # then the window is accepted (the service's rule: not before the current hour)
    assert response.status_code == 200
    assert len(response.json()) == 3


# --- earliest windows -------------------------------------------------------------------------


def test_earliest_windows_finds_the_first_gap_after_a_full_period(api, other_tenant, pool):
    # given the only pool is full on Monday 09:00-13:00
    book(other_tenant, gpus=32, hours=4)
    # when asking for the earliest 4 hours of 8 GPUs from Monday 09:00
    response = api.get(
        "/api/v1/availability/earliest/",
        {
            "gpu_model": "h100-sxm-80gb",
            "gpu_count": 8,
            "duration_hours": 4,
            "not_before": MON_9,
            "not_after": "2026-12-08T09:00:00Z",
        },
    )
    # then the first window starts when the full period ends
    assert response.status_code == 200
    assert response.json() == [
        {
            "pool": "pool-a",
            "provider": pool.region.provider.slug,
            "region": pool.region.code,
            "country": "US",
            "gpu_model": "h100-sxm-80gb",
            "tier": "primary",
            "recallable": False,
            "recall_notice_hours": 2,
            "available_gpus": 32,
            "unit_price": "3.0000",
            "total_price": "96.00",
            "currency": "USD",
            "start": MON_13,
            "end": "2026-12-07T17:00:00Z",
            "hours": 4,
        }
    ]


def test_earliest_windows_default_to_the_next_whole_hour(api, catalogue):
    # given it is 08:30; when asking without not_before
    response = api.get(
        "/api/v1/availability/earliest/",
        {"gpu_model": "h100-sxm-80gb", "gpu_count": 8, "duration_hours": 2},
    )
    # then every pool's earliest window starts at 09:00, cheapest first
    assert response.status_code == 200
    assert [(w["pool"], w["start"], w["end"]) for w in response.json()] == [
        ("aws-euw1-backup", "2026-12-01T09:00:00Z", "2026-12-01T11:00:00Z"),
        ("aws-use1", "2026-12-01T09:00:00Z", "2026-12-01T11:00:00Z"),
        ("gcp-usc1", "2026-12-01T09:00:00Z", "2026-12-01T11:00:00Z"),
    ]


def test_earliest_windows_are_at_most_limit(api, catalogue):
    response = api.get(
        "/api/v1/availability/earliest/",
        {"gpu_model": "h100-sxm-80gb", "gpu_count": 8, "duration_hours": 2, "limit": 2},
    )
    assert [w["pool"] for w in response.json()] == ["aws-euw1-backup", "aws-use1"]


def test_earliest_windows_cap_the_span_at_the_booking_horizon(api, pool):
    # given the horizon is 2027-12-01T08:00Z (365 days after 08:30, on the hour)
    # when the span reaches far beyond it
    response = api.get(
        "/api/v1/availability/earliest/",
        {
            "gpu_model": "h100-sxm-80gb",
            "gpu_count": 8,
            "duration_hours": 24,
            "not_before": "2027-11-30T08:00:00Z",
            "not_after": "2029-01-01T00:00:00Z",
        },
    )
    # then the search stops at the horizon rather than failing
    assert response.status_code == 200
    assert [(w["start"], w["end"]) for w in response.json()] == [
        ("2027-11-30T08:00:00Z", "2027-12-01T08:00:00Z")
    ]


@pytest.mark.parametrize(
    ("params", "field", "reason"),
    [
        ({"not_before": "2026-12-07T09:15:00Z"}, "not_before", "not_whole_hour"),
        ({"not_after": "2026-12-08T09:00:01Z"}, "not_after", "not_whole_hour"),
        ({"not_before": "2026-11-30T09:00:00Z"}, "not_before", "in_past"),
        ({"not_before": MON_9, "not_after": "2026-12-07T11:00:00Z"}, "not_after", "too_short"),
        ({"not_before": "2027-12-01T05:00:00Z"}, "not_before", "beyond_horizon"),
    ],
)
def test_earliest_windows_validate_the_span(api, pool, params, field, reason):
    response = api.get(
        "/api/v1/availability/earliest/",
        {"gpu_model": "h100-sxm-80gb", "gpu_count": 8, "duration_hours": 4, **params},
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_window"
    assert response.json()["fields"][field][0]["code"] == reason


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 51}, "limit"),
        ({"limit": 0}, "limit"),
        ({"duration_hours": 0}, "duration_hours"),
        ({"duration_hours": 2161}, "duration_hours"),
        ({"duration_hours": "x"}, "duration_hours"),
        ({"not_before": "2026-12-07T09:00:00"}, "not_before"),
    ],
)
def test_earliest_windows_refuse_bad_parameters(api, pool, params, field):
    response = api.get(
        "/api/v1/availability/earliest/",
        {"gpu_model": "h100-sxm-80gb", "gpu_count": 8, "duration_hours": 4, **params},
    )
    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"
    assert list(response.json()["fields"]) == [field]


# --- quotes -----------------------------------------------------------------------------------


def test_a_quote_holds_the_capacity_for_ten_minutes(api, pool):
    # when the tenant asks for a quote
    response = api.post("/api/v1/quotes/", body(), format="json")
    # then the capacity is held and the quote says until when and for how much
    assert response.status_code == 201
    quote = response.json()
    assert quote["status"] == "held"
    assert quote["expires_at"] == "2026-12-01T08:40:00Z"
    assert (quote["pool"], quote["gpu_count"], quote["hours"]) == ("pool-a", 8, 4)
    assert (quote["unit_price"], quote["total_price"], quote["currency"]) == (
        "3.0000",
        "96.00",
        "USD",
    )
    assert "Idempotent-Replayed" not in response.headers
    assert booked_by_hour(pool) == [8, 8, 8, 8]


def test_a_quote_then_confirm_gives_the_same_reservation_confirmed(api, pool):
    # given a quote
    quote = api.post("/api/v1/quotes/", body(), format="json").json()
    # when it is confirmed five minutes later
    with time_machine.travel(NOW + timedelta(minutes=5), tick=False):
        response = api.post("/api/v1/reservations/", {"quote": quote["id"]}, format="json")
    # then it is the same reservation, confirmed, and no more capacity was taken
    assert response.status_code == 201
    reservation = response.json()
    assert reservation["id"] == quote["id"]
    assert reservation["status"] == "confirmed"
    assert reservation["expires_at"] is None
    assert reservation["confirmed_at"] == "2026-12-01T08:35:00Z"
    assert reservation["total_price"] == "96.00"
    assert booked_by_hour(pool) == [8, 8, 8, 8]


def test_confirming_a_quote_after_it_expired_is_a_410(api, pool):
    # given a quote held until 08:40
    quote = api.post("/api/v1/quotes/", body(), format="json").json()
    # when it is confirmed at 08:41
    with time_machine.travel(NOW + timedelta(minutes=11), tick=False):
        response = api.post("/api/v1/reservations/", {"quote": quote["id"]}, format="json")
    # then it has expired
    assert response.status_code == 410
    assert response.json()["code"] == "quote_expired"
    assert response.json()["expired_at"] == "2026-12-01T08:40:00+00:00"


def test_confirming_a_quote_twice_without_a_key_is_an_invalid_state(api, pool):
    quote = api.post("/api/v1/quotes/", body(), format="json").json()
    first = api.post("/api/v1/reservations/", {"quote": quote["id"]}, format="json")
    second = api.post("/api/v1/reservations/", {"quote": quote["id"]}, format="json")
    assert first.status_code == 201
    assert second.status_code == 409
    assert second.json()["code"] == "invalid_state"
    assert second.json()["status"] == "confirmed"


def test_a_quote_with_both_a_quote_id_and_booking_fields_is_refused(api, pool):
    response = api.post(
        "/api/v1/reservations/", {"quote": str(uuid.uuid4()), "gpu_count": 8}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"
    assert response.json()["fields"] == {
        "gpu_count": [
            {
                "code": "quote_with_booking",
                "message": "Give either a quote or a booking request, not both.",
            }
        ]
    }


# --- reservations -----------------------------------------------------------------------------


def test_a_full_booking_request_is_confirmed_at_once(api, pool):
    response = api.post("/api/v1/reservations/", body(), format="json")
    assert response.status_code == 201
    reservation = Reservation.objects.get()
    assert response.json() == {
        "id": str(reservation.pk),
        "status": "confirmed",
        "pool": "pool-a",
        "provider": pool.region.provider.slug,
        "region": pool.region.code,
        "gpu_model": "h100-sxm-80gb",
        "gpu_count": 8,
        "start": MON_9,
        "end": MON_13,
        "hours": 4,
        "unit_price": "3.0000",
        "list_price_per_gpu_hour": "3.0000",
        "total_price": "96.00",
        "charge": "96.00",
        "cancellation_fee": "0.00",
        "commitment_percent": "0.00",
        "cancellation_terms": [
            {"min_notice_hours": 24, "fee_percent": "0.00"},
            {"min_notice_hours": 0, "fee_percent": "50.00"},
        ],
        "currency": "USD",
        "expires_at": None,
        "created_at": "2026-12-01T08:30:00Z",
        "updated_at": "2026-12-01T08:30:00Z",
        "confirmed_at": "2026-12-01T08:30:00Z",
        "cancelled_at": None,
        "cancelled_by": "",
        "cancellation_reason": "",
        "recallable": False,
        "recall_notice_hours": 2,
        "placements": [
            {
                "pool": "pool-a",
                "region": pool.region.code,
                "start": MON_9,
                "end": MON_13,
                "gpus": 8,
                "incident": None,
            }
        ],
        "interruptions": [],
    }
    assert booked_by_hour(pool) == [8, 8, 8, 8]


def test_a_booking_given_in_another_offset_is_stored_in_utc(api, pool):
    # when the start is 10:00 in UTC+1
    response = api.post(
        "/api/v1/reservations/",
        body(start="2026-12-07T10:00:00+01:00", end="2026-12-07T14:00:00+01:00"),
        format="json",
    )
    # then it is the 09:00Z booking
    assert response.status_code == 201
    assert (response.json()["start"], response.json()["end"]) == (MON_9, MON_13)
    assert Reservation.objects.get().start == datetime(2026, 12, 7, 9, tzinfo=UTC)


def test_a_booking_off_the_hour_is_an_invalid_window(api, pool):
    response = api.post("/api/v1/reservations/", body(start="2026-12-07T09:30:00Z"), format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_window"
    assert response.json()["fields"] == {
        "start": [{"code": "not_whole_hour", "message": "Must fall on a whole hour."}]
    }
    assert not Reservation.objects.exists()


def test_a_booking_goes_to_the_cheapest_pool_and_primary_wins_a_tie(api, catalogue):
    # given the backup pool costs as much as the cheapest primary
    PoolPrice.objects.filter(pool=catalogue["aws-euw1-backup"]).update(
        price_per_gpu_hour=Decimal("3.0000")
    )
    # when booking without a location
    response = api.post("/api/v1/reservations/", body(), format="json")
    # then the primary pool at that price takes it
    assert response.json()["pool"] == "aws-use1"


def test_a_booking_can_be_pinned_to_a_pool(api, catalogue):
    response = api.post("/api/v1/reservations/", body(pool="gcp-usc1"), format="json")
    assert response.status_code == 201
    assert (response.json()["pool"], response.json()["unit_price"]) == ("gcp-usc1", "3.5000")


def test_a_booking_that_does_not_fit_is_insufficient_capacity(api, other_tenant, pool):
    # given another tenant holds 28 of the 32 GPUs on Monday
    book(other_tenant, gpus=24)
    # when the tenant asks for 16
    response = api.post("/api/v1/reservations/", body(gpus=16), format="json")
    # then it is refused with how many GPUs could be had
    assert response.status_code == 409
    assert response.json()["code"] == "insufficient_capacity"
    assert response.json()["available_gpus"] == 8
    assert Reservation.objects.count() == 1


def test_a_booking_beyond_the_tenants_gpu_quota_is_refused(api, tenant, pool):
    tenant.max_gpus = 8
    tenant.save()
    response = api.post("/api/v1/reservations/", body(gpus=16), format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "quota_exceeded"
    assert (response.json()["quota"], response.json()["limit"], response.json()["in_use"]) == (
        "max_gpus",
        8,
        0,
    )


def test_a_booking_longer_than_the_tenants_hour_quota_is_refused(api, tenant, pool):
    tenant.max_reservation_hours = 2
    tenant.save()
    response = api.post("/api/v1/reservations/", body(), format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "quota_exceeded"
    assert response.json()["quota"] == "max_reservation_hours"


def test_a_booking_beyond_the_credit_limit_is_a_402(api, tenant, pool):
    tenant.credit_limit = Decimal("50.00")
    tenant.save()
    response = api.post("/api/v1/reservations/", body(), format="json")
    assert response.status_code == 402
    assert response.json()["code"] == "credit_limit_exceeded"
    assert (response.json()["amount"], response.json()["available_credit"]) == ("96.00", "50.00")
    assert not PoolHour.objects.filter(booked__gt=0).exists()


def test_a_gpu_count_that_is_not_whole_nodes_is_invalid_gpu_count(api, pool):
    response = api.post("/api/v1/reservations/", body(gpus=3), format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_gpu_count"
    assert response.json()["fields"]["gpu_count"][0]["code"] == "not_whole_nodes"


def test_a_booking_for_an_unknown_gpu_model_is_unknown_gpu_model(api, pool):
    response = api.post("/api/v1/reservations/", body(gpu_model="h9000"), format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "unknown_gpu_model"


def test_a_booking_where_no_pool_matches_is_no_matching_pool(api, pool):
    response = api.post("/api/v1/reservations/", body(region="mars-1"), format="json")
    assert response.status_code == 404
    assert response.json()["code"] == "no_matching_pool"


# --- idempotency ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/quotes/", "/api/v1/reservations/"])
def test_a_retry_with_the_same_key_and_body_returns_the_same_outcome(api, pool, path):
    # given a first request under an Idempotency-Key
    first = api.post(path, body(), format="json", HTTP_IDEMPOTENCY_KEY="order-42")
    # when it is retried with the same key and body
    retry = api.post(path, body(), format="json", HTTP_IDEMPOTENCY_KEY="order-42")
    # then the retry answers with the same reservation and status, marked as a replay
    assert (first.status_code, retry.status_code) == (201, 201)
    assert retry.json()["id"] == first.json()["id"]
    assert "Idempotent-Replayed" not in first.headers
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert Reservation.objects.count() == 1
    assert booked_by_hour(pool) == [8, 8, 8, 8]


def test_the_same_booking_written_in_another_offset_is_the_same_request(api, pool):
    first = api.post("/api/v1/reservations/", body(), format="json", HTTP_IDEMPOTENCY_KEY="k")
    retry = api.post(
        "/api/v1/reservations/",
        body(start="2026-12-07T10:00:00+01:00", end="2026-12-07T14:00:00+01:00"),
        format="json",
        HTTP_IDEMPOTENCY_KEY="k",
    )
    assert retry.status_code == 201
    assert retry.json()["id"] == first.json()["id"]


@pytest.mark.parametrize("path", ["/api/v1/quotes/", "/api/v1/reservations/"])
def test_the_same_key_with_another_body_is_a_422(api, pool, path):
    api.post(path, body(), format="json", HTTP_IDEMPOTENCY_KEY="order-42")
    response = api.post(path, body(gpus=16), format="json", HTTP_IDEMPOTENCY_KEY="order-42")
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"
    assert Reservation.objects.count() == 1


def test_a_quote_confirmation_replays_under_its_key(api, pool):
    quote = api.post("/api/v1/quotes/", body(), format="json").json()
    first = api.post(
        "/api/v1/reservations/", {"quote": quote["id"]}, format="json", HTTP_IDEMPOTENCY_KEY="c1"
    )
    retry = api.post(
        "/api/v1/reservations/", {"quote": quote["id"]}, format="json", HTTP_IDEMPOTENCY_KEY="c1"
    )
    assert (first.status_code, retry.status_code) == (201, 201)
    assert retry.json()["id"] == quote["id"]
    assert retry.json()["status"] == "confirmed"
    assert retry.headers["Idempotent-Replayed"] == "true"


def test_a_key_used_to_confirm_a_quote_cannot_book_something_else(api, pool):
    quote = api.post("/api/v1/quotes/", body(), format="json").json()
    api.post(
        "/api/v1/reservations/", {"quote": quote["id"]}, format="json", HTTP_IDEMPOTENCY_KEY="c1"
    )
    response = api.post("/api/v1/reservations/", body(), format="json", HTTP_IDEMPOTENCY_KEY="c1")
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"


def test_idempotency_keys_are_per_tenant(api, other_api, pool):
    mine = api.post("/api/v1/reservations/", body(), format="json", HTTP_IDEMPOTENCY_KEY="k")
    theirs = other_api.post(
        "/api/v1/reservations/", body(), format="json", HTTP_IDEMPOTENCY_KEY="k"
    )
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["id"] != theirs.json()["id"]
    assert "Idempotent-Replayed" not in theirs.headers


@pytest.mark.parametrize("key", ["x" * 201, "two words", "tab\there"])
def test_a_malformed_idempotency_key_is_a_400(api, pool, key):
    response = api.post("/api/v1/reservations/", body(), format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"
    assert list(response.json()["fields"]) == ["Idempotency-Key"]
    assert not Reservation.objects.exists()


# --- list and detail --------------------------------------------------------------------------


def test_the_list_shows_only_the_callers_reservations_newest_first(api, tenant, other_tenant, pool):
    # given two reservations of the tenant and one of another tenant
    first = book(tenant, gpus=8, hours=2)
    with time_machine.travel(NOW + timedelta(minutes=1), tick=False):
        second = book(tenant, gpus=8, start=datetime(2026, 12, 8, 9, tzinfo=UTC))
    book(other_tenant, gpus=8)
    # when the tenant lists its reservations
    response = api.get("/api/v1/reservations/")
    # then it sees its own two, newest first, paginated
    assert response.status_code == 200
    page = response.json()
    assert page["count"] == 2
    assert (page["next"], page["previous"]) == (None, None)
    assert [row["id"] for row in page["results"]] == [str(second.pk), str(first.pk)]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=confirmed", ["mon", "tue"]),
        ("status=cancelled", ["wed"]),
        ("status=confirmed&status=cancelled", ["mon", "tue", "wed"]),
        ("start_after=2026-12-08T00:00:00Z", ["tue", "wed"]),
        ("start_before=2026-12-08T09:00:00Z", ["mon"]),
        ("end_after=2026-12-08T10:00:00Z", ["tue", "wed"]),
        ("end_before=2026-12-08T13:00:00Z", ["mon", "tue"]),
        ("end_after=2026-12-07T12:00:00Z&start_before=2026-12-08T10:00:00Z", ["mon", "tue"]),
        ("start_after=2026-12-08T01:00:00%2B01:00", ["tue", "wed"]),
        ("pool=pool-a", ["mon", "tue", "wed"]),
        ("pool=elsewhere", []),
    ],
)
def test_the_list_filters_by_status_and_time(api, tenant, pool, query, expected):
    # given reservations on Monday, Tuesday and a cancelled one on Wednesday
    names = {}
    for name, day in (("mon", 7), ("tue", 8), ("wed", 9)):
        names[str(book(tenant, start=datetime(2026, 12, day, 9, tzinfo=UTC)).pk)] = name
    wed = next(pk for pk, name in names.items() if name == "wed")
    svc.reservation_cancel(tenant=tenant, reservation_id=wed, cancelled_by="test")
    # when filtering, ordered by start
    response = api.get(f"/api/v1/reservations/?{query}&ordering=start")
    # then exactly the matching ones come back
    assert response.status_code == 200
    assert [names[row["id"]] for row in response.json()["results"]] == expected


def test_the_list_orders_and_paginates(api, tenant, pool):
    for day in (9, 7, 8):
        book(tenant, start=datetime(2026, 12, day, 9, tzinfo=UTC))
    page1 = api.get("/api/v1/reservations/?ordering=-start&page_size=2").json()
    page2 = api.get("/api/v1/reservations/?ordering=-start&page_size=2&page=2").json()
    assert page1["count"] == 3
    assert [row["start"] for row in page1["results"] + page2["results"]] == [
        "2026-12-09T09:00:00Z",
        "2026-12-08T09:00:00Z",
        "2026-12-07T09:00:00Z",
    ]


@pytest.mark.parametrize(
    "query",
    [
        "status=gone",
        "start_after=yesterday",
        "start_after=2026-12-08T00:00:00",
        "end_before=2026-12-08",
        "end_after=2026-12-08T00:00:00%2B99:00",
    ],
)
def test_the_list_refuses_malformed_filters(api, pool, query):
    response = api.get(f"/api/v1/reservations/?{query}")
    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"


def test_a_page_past_the_end_is_a_404(api, pool):
    for page in ("2", "2147483647"):
        response = api.get(f"/api/v1/reservations/?page={page}")
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"


def test_a_malformed_page_or_page_size_is_a_400_naming_it(api, pool):
    for query, name in (
        ("page=0", "page"),
        ("page=-1", "page"),
        ("page=last-ish", "page"),
        ("page=99999999999999999999999", "page"),
        ("page=%C2%B2", "page"),  # a superscript two is a digit to Python, not a number
        ("page_size=0", "page_size"),
        ("page_size=501", "page_size"),
        ("page_size=null", "page_size"),
        ("page_size=1.5", "page_size"),
    ):
        response = api.get(f"/api/v1/reservations/?{query}")
        assert response.status_code == 400, query
        assert response.json()["code"] == "validation_error"
        assert list(response.json()["fields"]) == [name], query


def test_the_largest_page_size_is_allowed(api, pool):
    response = api.get("/api/v1/reservations/?page_size=500")
    assert response.status_code == 200


def test_the_detail_shows_one_of_the_callers_reservations(api, tenant, pool):
    reservation = book(tenant)
    response = api.get(f"/api/v1/reservations/{reservation.pk}/")
    assert response.status_code == 200
    assert (response.json()["id"], response.json()["status"]) == (str(reservation.pk), "confirmed")


# --- cancel -----------------------------------------------------------------------------------


def test_cancelling_with_a_day_of_notice_is_free_and_releases_the_capacity(api, tenant, pool):
    # given a confirmed reservation for Monday
    reservation = book(tenant)
    # when the tenant cancels it on Tuesday before
    response = api.post(
        f"/api/v1/reservations/{reservation.pk}/cancel/",
        {"reason": "plans changed"},
        format="json",
    )
    # then it is cancelled at no charge, by this key, and the GPUs are free again
    assert response.status_code == 200
    cancelled = response.json()
    assert cancelled["status"] == "cancelled"
    assert (cancelled["cancellation_fee"], cancelled["charge"]) == ("0.00", "0.00")
    assert cancelled["cancelled_at"] == "2026-12-01T08:30:00Z"
    assert cancelled["cancelled_by"] == f"api-key:{api.api_key.prefix}"
    assert cancelled["cancellation_reason"] == "plans changed"
    assert booked_by_hour(pool) == [0, 0, 0, 0]


def test_cancelling_late_costs_half_of_the_hours_given_back(api, tenant, pool):
    # given a reservation starting at 12:00 today (3.5 hours' notice at 08:30)
    reservation = book(tenant, start=datetime(2026, 12, 1, 12, tzinfo=UTC), hours=4)
    # when it is cancelled without a body
    response = api.post(f"/api/v1/reservations/{reservation.pk}/cancel/")
    # then the fee is 50 % of 8 GPUs x 4 h x 3.00
    assert response.status_code == 200
    assert (response.json()["cancellation_fee"], response.json()["charge"]) == ("48.00", "48.00")
    assert response.json()["cancellation_reason"] == ""


def test_cancelling_twice_returns_the_cancelled_reservation(api, tenant, pool):
    reservation = book(tenant)
    api.post(f"/api/v1/reservations/{reservation.pk}/cancel/")
    response = api.post(f"/api/v1/reservations/{reservation.pk}/cancel/", {"reason": "again"})
    assert response.status_code == 200
    assert response.json()["cancellation_reason"] == ""


def test_cancelling_an_expired_quote_is_an_invalid_state(api, pool):
    quote = api.post("/api/v1/quotes/", body(), format="json").json()
    with time_machine.travel(NOW + timedelta(minutes=15), tick=False):
        svc.holds_expire()
        response = api.post(f"/api/v1/reservations/{quote['id']}/cancel/")
    assert response.status_code == 409
    assert response.json()["code"] == "invalid_state"
    assert response.json()["status"] == "expired"


def test_cancelling_a_lapsed_quote_before_the_sweeper_returns_it_expired(api, pool):
    # given a quote whose hold lapsed a minute ago, not yet swept
    quote = api.post("/api/v1/quotes/", body(), format="json").json()
    with time_machine.travel(NOW + timedelta(minutes=11), tick=False):
        # when the tenant cancels it
        response = api.post(f"/api/v1/reservations/{quote['id']}/cancel/")
    # then the hold is released and the quote reads as expired, at no charge
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["charge"]) == ("expired", "0.00")
    assert booked_by_hour(pool) == [0, 0, 0, 0]


def test_cancelling_a_held_quote_is_free_and_releases_the_hold(api, pool):
    quote = api.post("/api/v1/quotes/", body(), format="json").json()
    response = api.post(f"/api/v1/reservations/{quote['id']}/cancel/")
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["charge"]) == ("cancelled", "0.00")
    assert booked_by_hour(pool) == [0, 0, 0, 0]


# --- extend -----------------------------------------------------------------------------------


def test_extending_moves_the_end_at_the_locked_price(api, tenant, pool):
    reservation = book(tenant)
    response = api.post(
        f"/api/v1/reservations/{reservation.pk}/extend/", {"end": MON_15}, format="json"
    )
    assert response.status_code == 200
    extended = response.json()
    assert (extended["end"], extended["hours"], extended["total_price"]) == (MON_15, 6, "144.00")
    assert extended["charge"] == "144.00"
    assert booked_by_hour(pool) == [8] * 6


def test_extending_into_a_full_hour_is_a_409_and_changes_nothing(api, tenant, other_tenant, pool):
    # given the pool is full from 13:00, after the tenant's reservation
    reservation = book(tenant, gpus=8)
    book(other_tenant, gpus=32, start=datetime(2026, 12, 7, 14, tzinfo=UTC), hours=2)
    # when the tenant extends to 15:00
    response = api.post(
        f"/api/v1/reservations/{reservation.pk}/extend/", {"end": MON_15}, format="json"
    )
    # then it does not fit and the reservation is as it was
    assert response.status_code == 409
    assert response.json()["code"] == "insufficient_capacity"
    reservation.refresh_from_db()
    assert reservation.end == datetime(2026, 12, 7, 13, tzinfo=UTC)


@pytest.mark.parametrize(
    ("end", "reason"),
    [
        (MON_13, "not_later"),
        ("2026-12-07T11:00:00Z", "not_later"),
        ("2026-12-07T15:30:00Z", "not_whole_hour"),
        ("2027-12-07T09:00:00Z", "too_long"),
    ],
)
def test_extending_to_a_bad_end_is_an_invalid_window(api, tenant, pool, end, reason):
    reservation = book(tenant)
    response = api.post(
        f"/api/v1/reservations/{reservation.pk}/extend/", {"end": end}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_window"
    assert response.json()["fields"]["end"][0]["code"] == reason


def test_extending_a_held_quote_is_an_invalid_state(api, pool):
    quote = api.post("/api/v1/quotes/", body(), format="json").json()
    response = api.post(
        f"/api/v1/reservations/{quote['id']}/extend/", {"end": MON_15}, format="json"
    )
    assert response.status_code == 409
    assert response.json()["code"] == "invalid_state"


def test_an_extension_replays_under_its_key_and_refuses_another_end(api, tenant, pool):
    reservation = book(tenant)
    url = f"/api/v1/reservations/{reservation.pk}/extend/"
    first = api.post(url, {"end": MON_15}, format="json", HTTP_IDEMPOTENCY_KEY="ext-1")
    retry = api.post(url, {"end": MON_15}, format="json", HTTP_IDEMPOTENCY_KEY="ext-1")
    other = api.post(
        url, {"end": "2026-12-07T16:00:00Z"}, format="json", HTTP_IDEMPOTENCY_KEY="ext-1"
    )
    assert (first.status_code, retry.status_code, other.status_code) == (200, 200, 422)
    assert retry.json()["end"] == MON_15
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert other.json()["code"] == "idempotency_key_reused"
    assert booked_by_hour(pool) == [8] * 6
    assert IdempotencyRecord.objects.get().scope == "reservation.extend"


# --- tenant -----------------------------------------------------------------------------------


def test_the_tenant_endpoint_shows_credit_and_quotas(api, tenant, pool):
    # given a credit limit of 1000 and a booking of 96
    tenant.credit_limit = Decimal("1000.00")
    tenant.max_gpus = 64
    tenant.save()
    book(tenant)
    # when the tenant looks at itself
    response = api.get("/api/v1/tenant/")
    # then it sees what is left to spend
    assert response.status_code == 200
    assert response.json() == {
        "name": tenant.name,
        "slug": tenant.slug,
        "status": "active",
        "currency": "USD",
        "credit_limit": "1000.00",
        "credit_available": "904.00",
        "discount_percent": "0.00",
        "quotas": {"max_gpus": 64, "max_reservation_hours": 2160},
        "api_key_prefix": api.api_key.prefix,
        "ending_soon_lead_minutes": 60,
        "low_balance_threshold": None,
    }


def test_a_tenant_sets_its_notification_settings(api, tenant, pool):
    # given a tenant with 1000.00 of credit and a booking of 96.00
    tenant.credit_limit = Decimal("1000.00")
    tenant.save()
    book(tenant)

    # when it asks for ending_soon 2 hours ahead and balance.low below 950.00
    response = api.patch(
        "/api/v1/tenant/",
        {"ending_soon_lead_minutes": 120, "low_balance_threshold": "950.00"},
        format="json",
    )

    # then the settings are stored, and the alert fires at once: 904.00 is below 950.00
    assert response.status_code == 200
    assert (
        response.json()["ending_soon_lead_minutes"],
        response.json()["low_balance_threshold"],
    ) == (
        120,
        "950.00",
    )
    tenant.refresh_from_db()
    assert tenant.ending_soon_lead == timedelta(hours=2)
    assert Event.objects.filter(tenant_id=tenant.pk, type="balance.low").count() == 1
    # and bad values are refused with the field named
    for bad in ({"ending_soon_lead_minutes": -1}, {"low_balance_threshold": "-5"}):
        refused = api.patch("/api/v1/tenant/", bad, format="json")
        assert refused.status_code == 400
        assert refused.json()["code"] == "validation_error"
        assert list(refused.json()["fields"]) == list(bad)


# --- isolation between tenants ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "suffix", "data"),
    [
        ("get", "", None),
        ("post", "cancel/", {"reason": "mine now"}),
        ("post", "extend/", {"end": MON_15}),
    ],
)
def test_another_tenants_reservation_is_not_found(api, other_tenant, pool, method, suffix, data):
    # given a reservation of another tenant
    theirs = book(other_tenant)
    # when the tenant reaches for it
    response = getattr(api, method)(
        f"/api/v1/reservations/{theirs.pk}/{suffix}", data, format="json"
    )
    # then it does not exist for them, and nothing changed
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    theirs.refresh_from_db()
    assert (theirs.status, theirs.end) == ("confirmed", datetime(2026, 12, 7, 13, tzinfo=UTC))


def test_another_tenants_quote_cannot_be_confirmed(api, other_api, pool):
    quote = other_api.post("/api/v1/quotes/", body(), format="json").json()
    response = api.post("/api/v1/reservations/", {"quote": quote["id"]}, format="json")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert Reservation.objects.get().status == "held"


def test_lists_never_show_another_tenants_rows(api, other_tenant, pool):
    book(other_tenant)
    for query in ("", "?status=confirmed", f"?pool={pool.slug}", "?page_size=500"):
        response = api.get(f"/api/v1/reservations/{query}")
        assert response.status_code == 200
        assert response.json()["count"] == 0


def test_another_tenants_idempotency_key_does_not_replay_their_reservation(api, other_api, pool):
    theirs = other_api.post("/api/v1/quotes/", body(), format="json", HTTP_IDEMPOTENCY_KEY="q")
    mine = api.post("/api/v1/quotes/", body(), format="json", HTTP_IDEMPOTENCY_KEY="q")
    assert mine.json()["id"] != theirs.json()["id"]


@pytest.mark.parametrize("reservation_id", ["not-a-uuid", "123", "0" * 300, str(uuid.uuid4())])
@pytest.mark.parametrize("suffix", ["", "cancel/", "extend/"])
def test_unknown_or_malformed_reservation_ids_are_a_404(api, pool, reservation_id, suffix):
    url = f"/api/v1/reservations/{reservation_id}/{suffix}"
    response = api.get(url) if not suffix else api.post(url, {"end": MON_15}, format="json")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


# --- never a 500 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        {},
        [],
        "just a string",
        body(gpus=-1),
        body(gpus=0),
        body(gpus=100_001),
        body(gpus=10**30),
        body(gpus="eight"),
        body(gpus=1.5),
        body(gpus=None),
        body(gpus=True),
        body(start="not-a-date"),
        body(start="2026-13-45T09:00:00Z"),
        body(start="2026-12-07T09:00:00"),
        body(start="2026-12-07"),
        body(start=12345),
        body(start=""),
        body(start=None),
        body(start="9999-12-31T23:00:00-05:00"),
        body(start="0001-01-01T00:00:00+01:00"),
        body(start="2026-12-07T09:00:00+25:00"),
        body(gpu_model=""),
        body(gpu_model="x" * 51),
        body(gpu_model="h100\x00"),
        body(gpu_model=["h100"]),
        body(region="x" * 51),
        body(tier="gold"),
        body(max_unit_price="NaN"),
        body(max_unit_price="Infinity"),
        body(max_unit_price="-1"),
        body(max_unit_price="1e400"),
        body(max_unit_price="cheap"),
        {"quote": "not-a-uuid"},
        {"quote": 10**40},
        {"quote": None},
        {"quote": {"id": 1}},
    ],
)
@pytest.mark.parametrize("path", ["/api/v1/reservations/", "/api/v1/quotes/"])
def test_malformed_booking_bodies_are_a_400_never_a_500(api, pool, path, payload):
    response = api.post(path, payload, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"
    assert response.json()["fields"]
    assert not Reservation.objects.exists()


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"gpu_count": "abc"},
        {"gpu_count": "-5"},
        {"gpu_count": "99999999999999999999999"},
        {"start": "2026-12-07T09:00:00"},
        {"start": "garbage"},
        {"end": ""},
        {"tier": "gold"},
        {"max_unit_price": "NaN"},
        {"gpu_model": ""},
    ],
)
def test_malformed_availability_queries_are_a_400(api, pool, query):
    params = {"gpu_model": "h100-sxm-80gb", "gpu_count": 8, "start": MON_9, "end": MON_13}
    params = {**params, **query} if query else {}
    response = api.get("/api/v1/availability/", params)
    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"


@pytest.mark.parametrize("path", ["/api/v1/reservations/", "/api/v1/quotes/"])
def test_a_body_that_is_not_json_is_a_400(api, pool, path):
    response = api.post(path, data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"


def test_a_form_encoded_body_is_an_unsupported_media_type(api, pool):
    response = api.post("/api/v1/reservations/", body(), format="multipart")
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


@pytest.mark.parametrize(
    "payload",
    [{}, {"end": "tomorrow"}, {"end": "2026-12-07T15:00:00"}, {"end": None}, [], {"end": 5}],
)
def test_malformed_extension_bodies_are_a_400(api, tenant, pool, payload):
    reservation = book(tenant)
    response = api.post(f"/api/v1/reservations/{reservation.pk}/extend/", payload, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"


@pytest.mark.parametrize("payload", [{"reason": "x" * 501}, {"reason": None}, ["why"]])
def test_malformed_cancellation_bodies_are_a_400(api, tenant, pool, payload):
    reservation = book(tenant)
    response = api.post(f"/api/v1/reservations/{reservation.pk}/cancel/", payload, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"
    reservation.refresh_from_db()
    assert reservation.status == "confirmed"
