"""With the broker (Redis) unreachable, booking keeps working: the booking and its events
commit, only the nudge to the webhook worker is lost (the beat schedule sends what is due),
and the rate limiter lets requests through. Against a live gunicorn on production settings
whose broker and rate-limit URLs point at a closed port."""

import time
from decimal import Decimal

import httpx
import pytest

from capacity.models import PoolHour
from events.models import Delivery, Event
from events.services import endpoint_create
from marketplace.models import Reservation
from marketplace.services.tenants import api_key_create
from tests.factories import CapacityPoolFactory, TenantFactory
from tests.live_server import gunicorn

pytestmark = pytest.mark.django_db(transaction=True)

CLOSED = "redis://127.0.0.1:1/0"


def test_booking_works_while_the_broker_is_down():
    # given a tenant with a webhook endpoint, and a server whose broker cannot be reached
    tenant = TenantFactory(credit_limit=Decimal("100000.00"))
    pool = CapacityPoolFactory()
    endpoint_create(tenant_id=tenant.pk, url="https://127.0.0.1:9/hooks")
    _, raw_key = api_key_create(tenant=tenant)
    body = {
        "gpu_model": pool.gpu_model.slug,
        "gpu_count": 8,
        "start": "2027-03-01T09:00:00Z",
        "end": "2027-03-01T13:00:00Z",
    }
    with gunicorn(CELERY_BROKER_URL=CLOSED, RATE_LIMIT_REDIS_URL=CLOSED) as base:
        api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {raw_key}"})
        # when it books
        started = time.monotonic()
        response = api.post(
            "/api/v1/reservations/", json=body, headers={"Idempotency-Key": "broker-down"}
        )
        took = time.monotonic() - started

    # then the booking is made, at once, with its event and delivery waiting for the worker
    assert response.status_code == 201, response.text
    assert took < 5, f"booking waited {took:.1f} s on the broker"
    reservation = Reservation.objects.get()
    assert (str(reservation.pk), reservation.status) == (response.json()["id"], "confirmed")
    assert list(PoolHour.objects.filter(pool=pool).values_list("booked", flat=True)) == [8] * 4
    event = Event.objects.get(type="reservation.confirmed")
    assert Delivery.objects.filter(event=event, status=Delivery.Status.PENDING).count() == 1
