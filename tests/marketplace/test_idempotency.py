"""Idempotency-Key as draft-ietf-httpapi-idempotency-key-header has it: a retry while the first
request with the key still runs is a 409 ``idempotency_key_in_use`` (no waiting), a retry after
it is the replay, and a key is remembered IDEMPOTENCY_KEY_TTL_HOURS (said in
``Idempotency-Key-Expires``), after which it counts as new and the prune job deletes it."""

import threading
from datetime import timedelta

import pytest
import time_machine
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django_celery_beat.models import PeriodicTask
from rest_framework.test import APIRequestFactory

from capacity.models import PoolHour
from marketplace import tasks
from marketplace.api.views import ReservationListCreateApi
from marketplace.errors import IdempotencyKeyInUse
from marketplace.models import IdempotencyRecord, Reservation
from marketplace.services import booking as svc
from marketplace.services.tenants import api_key_create
from tests.db_helpers import run_concurrently
from tests.factories import TenantFactory
from tests.locking import WAIT_SECONDS, Worker, wait_until_blocked
from tests.marketplace.api_helpers import tenant_client
from tests.marketplace.conftest import MONDAY_9, NOW, booking

transactional = pytest.mark.django_db(transaction=True)

BODY = {
    "gpu_model": "h100-sxm-80gb",
    "gpu_count": 8,
    "start": "2026-12-07T09:00:00Z",
    "end": "2026-12-07T13:00:00Z",
}
REQUEST = booking(gpus=8, start=MONDAY_9, hours=4)  # the same booking as BODY
EXPIRES_24H = "2026-12-02T08:30:00Z"  # NOW + 24 h


def create(tenant, key: str = "order-42", request: svc.BookingRequest = REQUEST) -> svc.Idempotent:
    return svc.reservation_create(
        tenant=tenant, request=request, idempotency_key=key, fingerprint=request.fingerprint()
    )


def booked_by_hour(pool) -> list[int]:
    return list(
        PoolHour.objects.filter(pool=pool).order_by("hour").values_list("booked", flat=True)
    )


@pytest.fixture
def api(frozen_now, tenant):
    return tenant_client(tenant)


# --- in flight --------------------------------------------------------------------------------


@transactional
def test_a_retry_while_the_first_request_runs_is_refused_at_once_then_replayed(
    frozen_now, tenant, pool, api
):
    # given a first request under a key that has booked but not committed yet (held open)
    booked, release = threading.Event(), threading.Event()

    def first_request():
        with transaction.atomic():
            outcome = create(tenant)
            booked.set()
            assert release.wait(WAIT_SECONDS)
        return outcome

    first = Worker(first_request, "first request")
    try:
        assert booked.wait(WAIT_SECONDS), "the first request did not book"

        # when the client retries with the same key and body meanwhile
        retry = api.post(
            "/api/v1/reservations/", BODY, format="json", HTTP_IDEMPOTENCY_KEY="order-42"
        )
    finally:
        release.set()
    reservation, replayed = first.join()

    # then the retry was a 409 idempotency_key_in_use with Retry-After, at once
    assert retry.status_code == 409
    assert retry.json()["code"] == "idempotency_key_in_use"
    assert retry.headers["Retry-After"] == "1"
    assert replayed is False

    # and once the first request has committed, the same retry is its replay
    again = api.post("/api/v1/reservations/", BODY, format="json", HTTP_IDEMPOTENCY_KEY="order-42")
    assert again.status_code == 201
    assert again.json()["id"] == str(reservation.pk)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert Reservation.objects.count() == 1
    assert booked_by_hour(pool) == [8] * 4


@transactional
def test_the_service_refuses_a_key_in_flight_without_waiting(frozen_now, tenant, pool):
    # given a first request under a key, not committed yet
    with transaction.atomic():
        create(tenant)

        # when the same key is used from another connection meanwhile
        retry = Worker(lambda: create(tenant), "retry")
        with pytest.raises(AssertionError) as failed:
            retry.join()

        # then it is refused at once (not queued behind the tenant lock)
        assert isinstance(retry.error, IdempotencyKeyInUse), failed.value

        # while a write under another key of the same tenant waits for the tenant lock
        other_key = Worker(lambda: create(tenant, key="order-43"), "other key")
        wait_until_blocked(other_key)
    # (the first request commits here)

    assert other_key.join()[1] is False
    assert Reservation.objects.count() == 2


@transactional
def test_a_first_request_that_rolled_back_leaves_the_key_free(frozen_now, tenant, pool):
    # given a first request under a key whose transaction failed after booking
    def crashing_request():
        with transaction.atomic():
            create(tenant)
            raise RuntimeError("the request crashed")

    with pytest.raises(RuntimeError):
        crashing_request()

    # when the client retries
    reservation, replayed = create(tenant)

    # then the retry runs as the first request (no record, no held key survived the rollback)
    assert replayed is False
    assert Reservation.objects.count() == 1
    assert IdempotencyRecord.objects.get().reservation_id == reservation.pk


def _post_as(raw_key: str, key: str):
    def post():
        request = APIRequestFactory().post(
            "/api/v1/reservations/",
            BODY,
            format="json",
            HTTP_AUTHORIZATION=f"Bearer {raw_key}",
            HTTP_IDEMPOTENCY_KEY=key,
        )
        response = ReservationListCreateApi.as_view()(request)
        return response.status_code, response.data, dict(response.items())

    return post


@transactional
def test_concurrent_posts_with_one_key_make_one_booking(frozen_now, pool):
    # given a tenant's client that sends the same booking with one key 8 times at once
    tenant = TenantFactory()
    _, raw_key = api_key_create(tenant=tenant)

    # when they all arrive together
    answers = run_concurrently(*[_post_as(raw_key, "same-key") for _ in range(8)])

    # then one booking exists; one answer made it, every other is its replay or a 409 in use
    assert Reservation.objects.count() == 1
    only = str(Reservation.objects.get().pk)
    made = [a for a in answers if a[0] == 201 and "Idempotent-Replayed" not in a[2]]
    replays = [a for a in answers if a[0] == 201 and a[2].get("Idempotent-Replayed") == "true"]
    in_use = [a for a in answers if a[0] == 409]
    assert len(made) == 1
    assert len(made) + len(replays) + len(in_use) == 8
    assert {a[1]["id"] for a in made + replays} == {only}
    assert {a[1]["code"] for a in in_use} <= {"idempotency_key_in_use"}
    assert all(a[2]["Retry-After"] == "1" for a in in_use)
    assert booked_by_hour(pool) == [8] * 4


# --- expiry -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_response_says_until_when_the_key_is_remembered(api, pool):
    first = api.post("/api/v1/reservations/", BODY, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    retry = api.post("/api/v1/reservations/", BODY, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    no_key = api.post("/api/v1/quotes/", BODY, format="json")
    quote = api.post("/api/v1/quotes/", BODY, format="json", HTTP_IDEMPOTENCY_KEY="q-1")
    extend = api.post(
        f"/api/v1/reservations/{first.json()['id']}/extend/",
        {"end": "2026-12-07T14:00:00Z"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="x-1",
    )

    assert (first.status_code, retry.status_code, quote.status_code) == (201, 201, 201)
    assert extend.status_code == 200
    assert first.headers["Idempotency-Key-Expires"] == EXPIRES_24H
    assert retry.headers["Idempotency-Key-Expires"] == EXPIRES_24H  # the first request's
    assert quote.headers["Idempotency-Key-Expires"] == EXPIRES_24H
    assert extend.headers["Idempotency-Key-Expires"] == EXPIRES_24H
    assert "Idempotency-Key-Expires" not in no_key.headers


@pytest.mark.django_db
def test_the_key_lifetime_is_a_setting(api, pool, settings):
    settings.IDEMPOTENCY_KEY_TTL_HOURS = 2
    response = api.post("/api/v1/quotes/", BODY, format="json", HTTP_IDEMPOTENCY_KEY="q-1")
    assert response.headers["Idempotency-Key-Expires"] == "2026-12-01T10:30:00Z"


@pytest.mark.django_db
def test_a_replay_keeps_the_first_requests_expiry(frozen_now, tenant, pool):
    first = create(tenant)
    with time_machine.travel(NOW + timedelta(hours=23, minutes=59), tick=False):
        retry = create(tenant)
    assert retry[0].pk == first[0].pk
    assert retry[1] is True
    assert retry.key_expires_at == first.key_expires_at == NOW + timedelta(hours=24)


@pytest.mark.django_db
@pytest.mark.parametrize("other_body", [False, True])
def test_an_expired_key_counts_as_new(frozen_now, tenant, pool, other_body):
    # given a key first used more than IDEMPOTENCY_KEY_TTL_HOURS ago
    old, _ = create(tenant)
    IdempotencyRecord.objects.update(created_at=NOW - timedelta(hours=24))

    # when it is used again (with the same body, or another one)
    request = booking(gpus=16, start=MONDAY_9, hours=4) if other_body else REQUEST
    reservation, replayed = create(tenant, request=request)

    # then the request runs anew: a new reservation, remembered from now under the key
    assert replayed is False
    assert reservation.pk != old.pk
    record = IdempotencyRecord.objects.get()
    assert (record.reservation_id, record.created_at) == (reservation.pk, NOW)


@pytest.mark.django_db
def test_a_key_just_inside_its_lifetime_still_replays(frozen_now, tenant, pool):
    old, _ = create(tenant)
    IdempotencyRecord.objects.update(created_at=NOW - timedelta(hours=24) + timedelta(seconds=1))
    reservation, replayed = create(tenant)
    assert (reservation.pk, replayed) == (old.pk, True)


@pytest.mark.django_db
def test_prune_deletes_only_expired_records_set_based(frozen_now, tenant, pool):
    # given three records past the lifetime and two within it
    for n in range(5):
        create(tenant, key=f"k-{n}", request=booking(start=MONDAY_9 + timedelta(hours=4 * n)))
    ages = [48, 25, 24, 23, 1]
    for n, hours in enumerate(ages):
        IdempotencyRecord.objects.filter(key=f"k-{n}").update(
            created_at=NOW - timedelta(hours=hours)
        )

    # when the prune runs in batches of two
    with CaptureQueriesContext(connection) as queries:
        removed = svc.idempotency_records_prune(now=NOW, batch_size=2)

    # then exactly the three old records went, by DELETE statements alone (no row loaded)
    assert removed == 3
    assert sorted(IdempotencyRecord.objects.values_list("key", flat=True)) == ["k-3", "k-4"]
    statements = [q["sql"] for q in queries.captured_queries if "idempotencyrecord" in q["sql"]]
    assert len(statements) == 2
    assert all(sql.startswith("DELETE") for sql in statements)
    assert Reservation.objects.count() == 5  # the reservations stay
    assert svc.idempotency_records_prune(now=NOW) == 0


@pytest.mark.django_db
def test_the_prune_task_uses_the_setting(frozen_now, tenant, pool, settings):
    settings.IDEMPOTENCY_KEY_TTL_HOURS = 1
    create(tenant)
    IdempotencyRecord.objects.update(created_at=NOW - timedelta(hours=2))
    assert tasks.prune_idempotency_records() == 1
    assert not IdempotencyRecord.objects.exists()


@pytest.mark.django_db
def test_the_prune_job_is_scheduled_hourly():
    task = PeriodicTask.objects.select_related("crontab").get(
        task="marketplace.tasks.prune_idempotency_records"
    )
    assert task.enabled
    assert (task.crontab.minute, task.crontab.hour) == ("25", "*")


@pytest.mark.django_db
def test_the_schema_documents_the_header_and_the_409():
    schema = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    operations = [
        schema["paths"]["/api/v1/quotes/"]["post"],
        schema["paths"]["/api/v1/reservations/"]["post"],
        schema["paths"]["/api/v1/reservations/{reservation_id}/extend/"]["post"],
    ]
    for operation in operations:
        ok = operation["responses"]["201" if "201" in operation["responses"] else "200"]
        assert ok["headers"]["Idempotency-Key-Expires"]["schema"]["format"] == "date-time"
        assert "idempotency_key_in_use" in operation["responses"]["409"]["description"]
