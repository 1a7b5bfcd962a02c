"""Webhook delivery, against a real HTTP receiver on 127.0.0.1: signed as Standard Webhooks
specify (checked with the independent ``standardwebhooks`` package), sent at least once with
the same ``webhook-id`` after a crash, retried on a schedule, never sent twice by two workers,
and never sent to an address that is not allowed."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import redis
import time_machine
from celery.contrib.testing.worker import TestWorkController, start_worker
from celery.signals import task_postrun
from django.conf import settings as django_settings
from django.db import connection, transaction
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from config.celery_app import app
from core.timeutils import utcnow
from events.addresses import UrlNotAllowed
from events.delivery import deliveries_send_due
from events.models import Delivery, DeliveryAttempt, Event, WebhookEndpoint
from events.services import (
    NewEvent,
    endpoint_create,
    endpoint_rotate_secret,
    event_record,
    events_record,
)
from tests.db_helpers import run_concurrently
from tests.events.receiver import Receiver, Reply

ROOT = Path(__file__).resolve().parents[2]
MOMENT = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
WAIT_SECONDS = 10


def record(tenant_id: int = 1, type: str = "quote.created", data: dict | None = None) -> Event:
    with transaction.atomic():
        return event_record(tenant_id=tenant_id, type=type, data=data or {"id": "q_1"})


@pytest.fixture
def nudge_queue():
    """Commits in transactional tests nudge the workers: send those messages to a queue of this
    test's own (consumed by its worker, if it starts one) and delete it afterwards."""
    broker = redis.Redis.from_url(
        django_settings.CELERY_BROKER_URL, socket_connect_timeout=5, socket_timeout=5
    )
    broker.ping()  # fail fast when Redis is down
    queue = f"events-test-{uuid.uuid4().hex[:8]}"
    saved = app.conf.task_default_queue
    app.conf.task_default_queue = queue
    try:
        yield queue
    finally:
        app.conf.task_default_queue = saved
        for key in broker.scan_iter(match=f"*{queue}*"):
            broker.delete(key)


class BoundedStartWorker(TestWorkController):
    def ensure_started(self) -> None:
        assert self._on_started.wait(timeout=60), "the worker did not start in 60 s"


def _close_db_connection(**kwargs) -> None:
    connection.close()  # the worker thread's connection must not outlive the test


@pytest.fixture
def celery_worker(nudge_queue):
    """A real Celery worker (a thread, solo pool) consuming the queue the nudges go to."""
    task_postrun.connect(_close_db_connection)
    try:
        with start_worker(
            app,
            pool="solo",
            perform_ping_check=False,
            queues=[nudge_queue],
            shutdown_timeout=30,
            WorkController=BoundedStartWorker,
        ):
            yield
    finally:
        task_postrun.disconnect(_close_db_connection)


def wait_until(condition, what: str, timeout: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {timeout} s")
        time.sleep(0.02)


# --- what a delivery looks like --------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_committed_event_reaches_the_receiver_through_a_real_worker(celery_worker):
    with Receiver() as receiver:
        # given an endpoint and a worker waiting on the queue the commits nudge
        endpoint = endpoint_create(tenant_id=1, url=receiver.url())

        # when an event commits
        event = record(data={"id": "q_1", "gpus": 8})

        # then the worker sends it within seconds, signed and shaped as Standard Webhooks say
        (request,) = receiver.wait_for(1, timeout=5)
        payload = Webhook(endpoint.secret).verify(request.body, request.headers)
        assert payload == {
            "type": "quote.created",
            "timestamp": event.created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "data": {"id": "q_1", "gpus": 8},
        }
        assert request.path == "/hook"
        assert request.headers["webhook-id"] == event.id
        assert request.headers["content-type"] == "application/json"
        timestamp = int(request.headers["webhook-timestamp"])
        assert abs(timestamp - time.time()) < 5
        assert request.headers["webhook-signature"].count("v1,") == 1
        wait_until(lambda: Delivery.objects.get().status == "succeeded", "the delivery is recorded")
        delivery = Delivery.objects.get()
        assert (delivery.attempts, delivery.last_status_code) == (1, 200)


@pytest.mark.django_db(transaction=True)
def test_a_booking_through_the_api_sends_reservation_confirmed_through_a_real_worker(
    celery_worker,
):
    from datetime import UTC, datetime

    import time_machine
    from rest_framework.test import APIClient

    from marketplace.services.tenants import api_key_create, tenant_create
    from tests.factories import CapacityPoolFactory

    with Receiver() as receiver, time_machine.travel(datetime(2026, 12, 1, 8, tzinfo=UTC)):
        # given a tenant with a webhook endpoint, and a pool
        tenant = tenant_create(name="Acme", credit_limit=Decimal("100000"))
        _, key = api_key_create(tenant=tenant)
        CapacityPoolFactory(slug="pool-a")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        created = client.post(
            "/api/v1/webhook-endpoints/", {"url": receiver.url()}, format="json"
        ).json()

        # when it books through the API
        booked = client.post(
            "/api/v1/reservations/",
            {
                "gpu_model": "h100-sxm-80gb",
                "gpu_count": 8,
                "start": "2026-12-07T09:00:00Z",
                "end": "2026-12-07T13:00:00Z",
            },
            format="json",
        )

        # then reservation.confirmed reaches its endpoint, signed with the endpoint's secret
        assert booked.status_code == 201
        (request,) = receiver.wait_for(1, timeout=5)
        payload = Webhook(created["secret"]).verify(request.body, request.headers)
        assert payload["type"] == "reservation.confirmed"
        assert payload["data"] == {**booked.json(), "status": "confirmed"}
        assert request.headers["webhook-id"].startswith("evt_")


@pytest.mark.django_db(transaction=True)
def test_an_event_committed_soon_after_a_nudge_is_not_left_for_the_schedule(
    settings, celery_worker
):
    # given nudges at most every 2 s, and an event the worker has just sent
    settings.WEBHOOK_NUDGE_SECONDS = 2
    with Receiver() as receiver:
        endpoint_create(tenant_id=1, url=receiver.url())
        first = record()
        receiver.wait_for(1, timeout=5)

        # when a second event commits within those 2 s, while the worker is idle
        second = record()

        # then the worker sends it once the 2 s are over, not at the next scheduled run
        requests = receiver.wait_for(2, timeout=5)
        assert [request.webhook_id for request in requests] == [first.id, second.id]


# --- outcomes and retries --------------------------------------------------------------------


@pytest.mark.django_db
def test_errors_are_retried_on_the_schedule_until_the_endpoint_answers_2xx():
    replies = [Reply(500, delay_seconds=0.02), Reply(500, delay_seconds=0.02), Reply(200)]
    with Receiver(replies) as receiver, time_machine.travel(MOMENT, tick=False) as clock:
        # given an endpoint that fails twice, then succeeds
        endpoint = endpoint_create(tenant_id=1, url=receiver.url())
        event = record()

        # when the workers run: now, after the first retry delay, after the second
        assert deliveries_send_due() == 1
        first = Delivery.objects.get()
        assert (first.status, first.attempts, first.last_status_code) == ("pending", 1, 500)
        assert MOMENT + timedelta(seconds=4.5) <= first.next_attempt_at
        assert first.next_attempt_at <= MOMENT + timedelta(seconds=5.5)
        assert deliveries_send_due() == 0  # not due yet
        clock.move_to(first.next_attempt_at)
        assert deliveries_send_due() == 1
        second = Delivery.objects.get()
        retry_at = first.next_attempt_at
        assert retry_at + timedelta(seconds=270) <= second.next_attempt_at
        assert second.next_attempt_at <= retry_at + timedelta(seconds=330)
        assert WebhookEndpoint.objects.get().failing_since == MOMENT
        clock.move_to(second.next_attempt_at)
        assert deliveries_send_due() == 1
        assert deliveries_send_due() == 0

    # then three attempts are recorded and the delivery succeeded once
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("succeeded", 3, 200)
    assert delivery.delivered_at == second.next_attempt_at
    attempts = DeliveryAttempt.objects.filter(delivery=delivery)
    assert [(a.attempted_at, a.status_code) for a in attempts] == [
        (MOMENT, 500),
        (first.next_attempt_at, 500),
        (second.next_attempt_at, 200),
    ]
    assert [a.duration_ms >= 20 for a in attempts] == [True, True, False]
    assert all(a.duration_ms < 5000 for a in attempts)
    assert receiver.webhook_ids() == [event.id] * 3
    # each attempt signed at its own moment, with the same body
    assert [request.headers["webhook-timestamp"] for request in receiver.requests] == [
        str(int(moment.timestamp()))
        for moment in (MOMENT, first.next_attempt_at, second.next_attempt_at)
    ]
    assert {request.body for request in receiver.requests} == {
        b'{"type":"quote.created","timestamp":"2026-03-02T09:30:00.000000Z","data":{"id":"q_1"}}'
    }
    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.failing_since, endpoint.last_success_at) == (
        True,
        None,
        second.next_attempt_at,
    )


@pytest.mark.django_db
def test_retry_after_on_a_429_puts_the_next_attempt_at_least_that_far_off():
    replies = [Reply(429, headers={"Retry-After": "120"}, body=b"slow down")]
    with Receiver(replies) as receiver, time_machine.travel(MOMENT, tick=False) as clock:
        # given an endpoint that answers 429 with Retry-After: 120
        endpoint_create(tenant_id=1, url=receiver.url())
        record()

        # when the delivery is sent
        assert deliveries_send_due() == 1

        # then the next attempt is 120 s later (not ~5 s), and not before
        delivery = Delivery.objects.get()
        assert (delivery.status, delivery.last_status_code) == ("pending", 429)
        assert delivery.next_attempt_at == MOMENT + timedelta(seconds=120)
        assert DeliveryAttempt.objects.get().response_body == "slow down"
        clock.move_to(MOMENT + timedelta(seconds=119))
        assert deliveries_send_due() == 0
        clock.move_to(MOMENT + timedelta(seconds=120))
        assert deliveries_send_due() == 1
    assert Delivery.objects.get().status == "succeeded"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("retry_after", "delay_range"),
    [
        ("7200", (timedelta(hours=2), timedelta(hours=2))),
        ("Mon, 02 Mar 2026 10:30:00 GMT", (timedelta(hours=1), timedelta(hours=1))),
        ("99999999999999999999999", (timedelta(hours=24), timedelta(hours=24))),
        ("Mon, 02 Mar 2025 10:30:00 GMT", (timedelta(seconds=4.5), timedelta(seconds=5.5))),
        ("soon", (timedelta(seconds=4.5), timedelta(seconds=5.5))),
        ("\u00b2", (timedelta(seconds=4.5), timedelta(seconds=5.5))),
    ],
)
def test_retry_after_is_honoured_up_to_a_day_and_ignored_when_unreadable(retry_after, delay_range):
    replies = [Reply(503, headers={"Retry-After": retry_after})]
    with Receiver(replies) as receiver, time_machine.travel(MOMENT, tick=False):
        # given an endpoint that answers 503 with this Retry-After
        endpoint_create(tenant_id=1, url=receiver.url())
        record()

        # when the delivery is sent
        assert deliveries_send_due() == 1

    # then the next attempt is as far off as it asks (at most a day), or on the schedule
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("pending", 1, 503)
    earliest, latest = delay_range
    assert MOMENT + earliest <= delivery.next_attempt_at <= MOMENT + latest


@pytest.mark.django_db
def test_a_410_disables_the_endpoint_and_its_other_deliveries_are_not_sent():
    with Receiver([Reply(410)]) as receiver, time_machine.travel(MOMENT, tick=False):
        # given an endpoint with two due deliveries, that answers 410 Gone
        endpoint = endpoint_create(tenant_id=1, url=receiver.url())
        first, second = record(), record()

        # when the workers run
        sent = deliveries_send_due(batch_size=1)
        again = deliveries_send_due()

    # then only the first was sent, and the endpoint is disabled as gone
    assert (sent, again) == (1, 0)
    assert receiver.webhook_ids() == [first.id]
    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.disabled_reason, endpoint.disabled_at) == (
        False,
        "gone",
        MOMENT,
    )
    assert dict(Delivery.objects.values_list("event_id", "attempts")) == {first.id: 1, second.id: 0}
    assert Delivery.objects.get(event=second).status == "cancelled"  # dead endpoint: not kept


@pytest.mark.django_db
def test_a_delivery_fails_when_the_whole_schedule_fails():
    with Receiver(default=Reply(503)) as receiver, time_machine.travel(MOMENT, tick=False) as clock:
        # given an endpoint that always answers 503
        endpoint_create(tenant_id=1, url=receiver.url())
        event = record()

        # when every retry of the schedule comes due and is sent
        sent = []
        for _ in range(20):
            sent.append(deliveries_send_due())
            delivery = Delivery.objects.get()
            if delivery.status != "pending":
                break
            clock.move_to(delivery.next_attempt_at)

    # then after 9 attempts (the first and 8 retries, about a day and a half) it failed
    assert sent == [1] * 9
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("failed", 9, 503)
    assert receiver.webhook_ids() == [event.id] * 9
    attempted = list(DeliveryAttempt.objects.values_list("attempted_at", flat=True))
    assert timedelta(hours=33) < attempted[-1] - attempted[0] < timedelta(hours=42)
    # and the endpoint, failing for less than WEBHOOK_DISABLE_AFTER_DAYS, stays enabled
    endpoint = WebhookEndpoint.objects.get()
    assert (endpoint.enabled, endpoint.failing_since) == (True, MOMENT)
    assert deliveries_send_due() == 0


@pytest.mark.django_db
def test_an_endpoint_failing_for_the_disable_period_is_disabled(settings):
    settings.WEBHOOK_DISABLE_AFTER_DAYS = 3
    with Receiver(default=Reply(500)) as receiver, time_machine.travel(MOMENT, tick=False) as clock:
        # given an endpoint whose every delivery has failed since MOMENT
        endpoint = endpoint_create(tenant_id=1, url=receiver.url())
        record()
        deliveries_send_due()

        # when a new event fails a second before three days have passed
        clock.move_to(MOMENT + timedelta(days=3) - timedelta(seconds=1))
        record()
        deliveries_send_due()
        endpoint.refresh_from_db()
        assert (endpoint.enabled, endpoint.failing_since) == (True, MOMENT)

        # and another one fails when three days have passed
        clock.move_to(MOMENT + timedelta(days=3))
        last = record()
        deliveries_send_due()
        sent = len(receiver.requests)

        # then the endpoint is disabled for failing, and nothing more is sent to it
        endpoint.refresh_from_db()
        assert (endpoint.enabled, endpoint.disabled_reason, endpoint.disabled_at) == (
            False,
            "failing",
            MOMENT + timedelta(days=3),
        )
        clock.move_to(MOMENT + timedelta(days=4))
        assert deliveries_send_due() == 0
        assert receiver.webhook_ids()[-1] == last.id
        assert len(receiver.requests) == sent


@pytest.mark.django_db
def test_a_timeout_is_a_failed_attempt_with_an_error(settings):
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.5
    with Receiver([Reply(200, hold=True)]) as receiver, time_machine.travel(MOMENT, tick=False):
        # given an endpoint that does not answer within WEBHOOK_TIMEOUT_SECONDS
        endpoint_create(tenant_id=1, url=receiver.url())
        event = record()

        # when the delivery is sent
        assert deliveries_send_due() == 1
        assert receiver.webhook_ids() == [event.id]

    # then the attempt failed with the timeout as its error, and will be retried
    attempt = DeliveryAttempt.objects.get()
    assert (attempt.status_code, attempt.error) == (None, "ReadTimeout: timed out")
    assert 500 <= attempt.duration_ms < 3000
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_status_code, delivery.last_error) == (
        "pending",
        1,
        None,
        "ReadTimeout: timed out",
    )


@pytest.mark.django_db
def test_a_refused_connection_is_a_failed_attempt_with_an_error():
    # given an endpoint on a port nothing listens on
    with Receiver() as receiver:
        url = receiver.url()
    endpoint_create(tenant_id=1, url=url)
    record()

    # when the delivery is sent, then the attempt failed with the error
    assert deliveries_send_due() == 1
    attempt = DeliveryAttempt.objects.get()
    assert (attempt.status_code, attempt.error) == (
        None,
        "ConnectError: [Errno 111] Connection refused",
    )


@pytest.mark.django_db
def test_only_the_start_of_a_large_response_body_is_read_and_kept():
    with Receiver([Reply(200, body=b"x" * 5_000_000)]) as receiver:
        # given an endpoint that answers with 5 MB
        endpoint_create(tenant_id=1, url=receiver.url())
        record()

        # when the delivery is sent
        started = time.monotonic()
        assert deliveries_send_due() == 1

    # then it succeeded, keeping the first 500 characters
    assert time.monotonic() - started < 5
    assert DeliveryAttempt.objects.get().response_body == "x" * 500
    assert Delivery.objects.get().status == "succeeded"


@pytest.mark.django_db
def test_a_response_body_with_nul_bytes_is_recorded():
    with Receiver([Reply(500, body=b"oops\x00\xff")]) as receiver:
        # given an endpoint that answers a binary body PostgreSQL text cannot hold as it is
        endpoint_create(tenant_id=1, url=receiver.url())
        record()

        # when the delivery is sent
        assert deliveries_send_due() == 1

    # then the attempt is recorded with the bytes replaced
    assert DeliveryAttempt.objects.get().response_body == "oops\ufffd\ufffd"
    assert Delivery.objects.get().attempts == 1


# --- a worker dies mid-delivery --------------------------------------------------------------


def command_env(**overrides: str) -> dict[str, str]:
    database = connection.settings_dict
    url = (
        f"postgres://{database['USER']}@{database['HOST'] or '127.0.0.1'}:"
        f"{database['PORT'] or 5432}/{database['NAME']}"
    )
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": url,
        "PYTHONUNBUFFERED": "1",
        **overrides,
    }


@pytest.mark.django_db(transaction=True)
def test_a_delivery_whose_worker_was_killed_is_sent_again_with_the_same_id(nudge_queue):
    with Receiver([Reply(200, hold=True)]) as receiver:
        # given a due delivery, and a worker process that sends it to a receiver that hangs
        endpoint = endpoint_create(tenant_id=1, url=receiver.url())
        event = record()
        worker = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "deliver_webhooks"],
            cwd=ROOT,
            env=command_env(WEBHOOK_LEASE_SECONDS="1", WEBHOOK_TIMEOUT_SECONDS="30"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            receiver.wait_for(1, timeout=30)
            leased = Delivery.objects.get()

            # when the worker is killed while the receiver holds the request
            worker.send_signal(signal.SIGKILL)
            assert worker.wait(timeout=WAIT_SECONDS) == -signal.SIGKILL
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait(timeout=WAIT_SECONDS)
            worker.stdout.close()
            worker.stderr.close()

        # then the delivery is still pending, leased for a second, with no attempt recorded
        assert (leased.status, leased.attempts) == ("pending", 0)
        assert leased.next_attempt_at > leased.created_at
        assert DeliveryAttempt.objects.count() == 0

        # and once the lease is over, another worker process sends it again
        wait_until(lambda: utcnow() > leased.next_attempt_at, "the lease ends", timeout=5)
        again = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), "deliver_webhooks"],
            cwd=ROOT,
            env=command_env(WEBHOOK_LEASE_SECONDS="1"),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert (again.returncode, again.stdout, again.stderr) == (
            0,
            "Attempted 1 webhook deliveries.\n",
            "",
        )

    # with the same webhook-id, signature and body: the receiver can de-duplicate
    first, second = receiver.requests
    assert (first.webhook_id, second.webhook_id) == (event.id, event.id)
    assert first.body == second.body
    Webhook(endpoint.secret).verify(second.body, second.headers)
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("succeeded", 1, 200)


@pytest.mark.django_db(transaction=True)
def test_a_worker_whose_lease_ran_out_does_not_overwrite_the_next_workers_outcome(
    settings, nudge_queue
):
    settings.WEBHOOK_LEASE_SECONDS = 1
    # given a receiver that holds the first request, then answers it 500, and answers 200 next
    with Receiver([Reply(500, hold=True), Reply(200)]) as receiver:
        endpoint_create(tenant_id=1, url=receiver.url())
        event = record()

        # when a slow worker's lease runs out while it waits, and another worker sends the
        # delivery and records its success before the slow one records its 500
        slow = []
        finished = run_in_thread(lambda: slow.append(deliveries_send_due()))
        receiver.wait_for(1)
        wait_until(
            lambda: utcnow() > Delivery.objects.get().next_attempt_at, "the lease ends", timeout=5
        )
        assert deliveries_send_due() == 1
        receiver.release()
        assert finished.wait(timeout=WAIT_SECONDS), "the slow worker did not finish"

    # then the success stands: both attempts are recorded, the delivery is not sent again
    assert slow == [1]
    assert receiver.webhook_ids() == [event.id, event.id]
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("succeeded", 1, 200)
    assert sorted(DeliveryAttempt.objects.values_list("status_code", flat=True)) == [200, 500]
    assert deliveries_send_due() == 0


def run_in_thread(work) -> threading.Event:
    done = threading.Event()

    def run() -> None:
        try:
            work()
        finally:
            connection.close()
            done.set()

    threading.Thread(target=run, daemon=True).start()
    return done


@pytest.mark.django_db(transaction=True)
def test_a_delivery_is_not_started_after_the_lease_of_its_batch_ended(settings, nudge_queue):
    settings.WEBHOOK_LEASE_SECONDS = 1
    settings.WEBHOOK_CONCURRENCY = 1
    # given two due deliveries, the first answered 1.5 s late
    with Receiver([Reply(200, delay_seconds=1.5)]) as receiver:
        endpoint_create(tenant_id=1, url=receiver.url())
        first, second = record(), record()

        # when a worker claims both and, while it waits on the first, its lease ends and
        # another worker claims and sends them
        slow = []
        finished = run_in_thread(lambda: slow.append(deliveries_send_due()))
        receiver.wait_for(1)
        wait_until(
            lambda: utcnow() > Delivery.objects.get(event=second).next_attempt_at,
            "the lease ends",
            timeout=5,
        )
        assert deliveries_send_due() == 2
        assert finished.wait(timeout=WAIT_SECONDS), "the slow worker did not finish"

    # then the slow worker did not send the second: only the request in flight went twice
    assert slow == [1]
    assert receiver.webhook_ids() == [first.id, first.id, second.id]
    assert set(Delivery.objects.values_list("status", "attempts")) == {("succeeded", 1)}


# --- secret rotation -------------------------------------------------------------------------


@pytest.mark.django_db
def test_after_a_rotation_both_secrets_sign_until_the_overlap_ends(settings):
    settings.WEBHOOK_SECRET_OVERLAP_HOURS = 24
    with Receiver() as receiver, time_machine.travel(MOMENT, tick=False) as clock:
        # given an endpoint whose secret was rotated
        endpoint = endpoint_create(tenant_id=1, url=receiver.url())
        old_secret = endpoint.secret
        rotated = endpoint_rotate_secret(tenant_id=1, endpoint_id=endpoint.pk)
        new_secret = rotated.secret
        assert (new_secret != old_secret, rotated.previous_secret) == (True, old_secret)

        # when an event is delivered during the overlap
        record()
        deliveries_send_due()
        (during,) = receiver.wait_for(1)

        # then it carries two signatures, and each secret alone verifies it
        assert len(during.headers["webhook-signature"].split(" ")) == 2
        Webhook(new_secret).verify(during.body, during.headers)
        Webhook(old_secret).verify(during.body, during.headers)

        # when an event is delivered after the overlap
        clock.move_to(MOMENT + timedelta(hours=24, seconds=1))
        record()
        deliveries_send_due()
        after = receiver.wait_for(2)[1]

        # then it carries one signature, by the new secret only
        assert len(after.headers["webhook-signature"].split(" ")) == 1
        Webhook(new_secret).verify(after.body, after.headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(old_secret).verify(after.body, after.headers)


# --- no server-side request forgery ----------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "messages"),
    [
        ("http://127.0.0.1/hook", {"Use an https:// URL."}),
        ("https://10.0.0.1/", {"The host '10.0.0.1' resolves to a non-public address (10.0.0.1)."}),
        (
            "https://169.254.169.254/latest/meta-data",
            {"The host '169.254.169.254' resolves to a non-public address (169.254.169.254)."},
        ),
        (
            "https://localhost/",
            {
                "The host 'localhost' resolves to a non-public address (127.0.0.1).",
                "The host 'localhost' resolves to a non-public address (::1).",
            },
        ),
        ("https://[::1]:8443/", {"The host '::1' resolves to a non-public address (::1)."}),
        (
            "https://[64:ff9b::a00:1]/",
            {"The host '64:ff9b::a00:1' resolves to a non-public address (64:ff9b::a00:1)."},
        ),
        (
            "https://[2002:7f00:1::1]/",
            {"The host '2002:7f00:1::1' resolves to a non-public address (2002:7f00:1::1)."},
        ),
        (
            "https://user:pw@hooks.example.com/",
            {"Credentials in the URL are not allowed; use the signature to authenticate."},
        ),
    ],
)
def test_an_endpoint_url_that_is_not_public_https_is_refused(settings, url, messages):
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = False

    # when a tenant registers the URL
    with pytest.raises(UrlNotAllowed) as error:
        endpoint_create(tenant_id=1, url=url)

    # then it is refused with a message saying why, and no endpoint exists
    assert error.value.code == "url_not_allowed"
    assert error.value.detail in messages
    assert error.value.fields == {
        "url": [{"code": "url_not_allowed", "message": error.value.detail}]
    }
    assert WebhookEndpoint.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["https://8.8.8.8/hook", "https://[64:ff9b::808:808]/hook"])
def test_an_https_url_on_a_public_address_is_accepted(settings, url):
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = False

    # when a tenant registers it, then the endpoint exists
    endpoint = endpoint_create(tenant_id=1, url=url)
    assert WebhookEndpoint.objects.get().url == endpoint.url == url


@pytest.mark.django_db
def test_a_url_that_is_no_longer_allowed_at_send_time_is_not_requested(settings):
    with Receiver() as receiver:
        # given endpoints on the loopback receiver, registered while private URLs were allowed
        secure = endpoint_create(tenant_id=1, url=receiver.url(scheme="https"))
        plain = endpoint_create(tenant_id=1, url=receiver.url())
        record()

        # when they are sent with private URLs no longer allowed
        settings.WEBHOOK_ALLOW_PRIVATE_URLS = False
        assert deliveries_send_due() == 2

    # then each attempt failed saying the address is not allowed, and nothing reached the
    # receiver, not even a connection
    errors = dict(DeliveryAttempt.objects.values_list("delivery__endpoint_id", "error"))
    assert errors == {
        secure.pk: "The host '127.0.0.1' resolves to a non-public address (127.0.0.1).",
        plain.pk: "Use an https:// URL.",
    }
    assert set(DeliveryAttempt.objects.values_list("status_code", flat=True)) == {None}
    assert (receiver.connections, receiver.requests) == (0, [])
    assert set(Delivery.objects.values_list("status", "attempts")) == {("pending", 1)}


@pytest.mark.django_db
def test_a_host_that_resolves_to_a_private_address_when_sending_is_not_connected_to(
    settings, monkeypatch
):
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = False
    answers = {"hooks.tenant.example": "93.184.215.14"}
    lookups = []
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in answers:
            return real_getaddrinfo(host, port, *args, **kwargs)
        lookups.append(answers[host])
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with Receiver() as receiver:
        # given an endpoint whose host resolved to a public address when it was registered
        url = f"https://hooks.tenant.example:{receiver.port}/hook"
        endpoint_create(tenant_id=1, url=url)
        record()

        # when its DNS now answers the loopback address and the delivery is sent
        answers["hooks.tenant.example"] = "127.0.0.1"
        assert deliveries_send_due() == 1

    # then the address was checked in the lookup the connection used, and refused
    assert lookups == ["93.184.215.14", "127.0.0.1"]
    assert DeliveryAttempt.objects.get().error == (
        "The host 'hooks.tenant.example' resolves to a non-public address (127.0.0.1)."
    )
    assert (receiver.connections, receiver.requests) == (0, [])


# --- two workers at once ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_workers_at_once_send_each_delivery_exactly_once(settings, nudge_queue):
    settings.WEBHOOK_BATCH_SIZE = 20
    with Receiver() as receiver:
        # given 200 due deliveries
        endpoint_create(tenant_id=1, url=receiver.url())
        with transaction.atomic():
            events = events_record(
                events=[NewEvent(1, "reservation.started", {"n": n}) for n in range(200)]
            )

        # when two workers send what is due at the same moment
        sent = run_concurrently(deliveries_send_due, deliveries_send_due)

    # then every delivery was sent exactly once
    assert sum(sent) == 200
    assert sorted(receiver.webhook_ids()) == sorted(event.id for event in events)
    assert set(Delivery.objects.values_list("status", "attempts")) == {("succeeded", 1)}
    assert DeliveryAttempt.objects.count() == 200
