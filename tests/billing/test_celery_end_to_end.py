"""End to end through a real Celery worker on Redis: book, let hours pass, meter, draft,
finalize — every billing step sent as a message to a worker thread with its own database
connection."""

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import redis
import time_machine
from celery.backends.redis import RedisBackend
from celery.contrib.testing.worker import TestWorkController, start_worker
from celery.exceptions import TimeoutError as ResultTimeout
from celery.result import AsyncResult
from celery.signals import task_postrun
from django.conf import settings
from django.db import connection

from billing.models import Invoice, LedgerEntry, UsageRecord
from billing.tasks import draft_invoices_task, finalize_invoices_task, meter_usage_task
from config.celery_app import app
from marketplace.models import Reservation
from marketplace.services.booking import BookingRequest, reservation_create
from marketplace.tasks import advance_reservations
from tests.factories import CapacityPoolFactory, TenantFactory

pytestmark = pytest.mark.django_db(transaction=True)

REDIS = "redis://127.0.0.1:6379/15"
TIMEOUT = 60  # seconds for the worker to start and for each task to finish


class BoundedStartWorker(TestWorkController):
    """The test worker, failing the test instead of waiting forever if it never comes up."""

    def ensure_started(self) -> None:
        assert self._on_started.wait(timeout=TIMEOUT), f"the worker did not start in {TIMEOUT} s"


def _close_db_connection(**kwargs) -> None:
    # The worker thread's connection must not outlive the test: the database is flushed.
    connection.close()


@pytest.fixture
def redis_worker():
    """A worker thread consuming a queue of its own on Redis db 15, storing results there."""
    assert settings.CELERY_BROKER_URL.startswith("redis://")
    # Fail fast when Redis is down: the broker connection below would retry forever.
    for url in (settings.CELERY_BROKER_URL, REDIS):
        redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5).ping()
    queue = f"billing-e2e-{uuid.uuid4().hex[:8]}"
    saved = {key: app.conf[key] for key in ("result_backend", "task_default_queue")}
    app.conf.update(result_backend=REDIS, task_default_queue=queue)
    backend = RedisBackend(app=app, url=REDIS)
    task_postrun.connect(_close_db_connection)
    try:
        with start_worker(
            app,
            pool="solo",
            perform_ping_check=False,
            queues=[queue],
            shutdown_timeout=30,
            WorkController=BoundedStartWorker,
        ):

            def run(task, **kwargs):
                sent = task.apply_async(kwargs=kwargs, queue=queue, ignore_result=False)
                try:
                    return AsyncResult(sent.id, backend=backend, app=app).get(timeout=TIMEOUT)
                except ResultTimeout:
                    pytest.fail(f"{task.name} got no result from the worker in {TIMEOUT} s")

            yield run
    finally:
        task_postrun.disconnect(_close_db_connection)
        app.conf.update(saved)


def test_book_let_hours_pass_meter_invoice_and_finalize_through_a_real_worker(redis_worker):
    run = redis_worker
    # given a tenant paying 10 % tax and a pool at 3.00 per GPU-hour
    tenant = TenantFactory(credit_limit=Decimal("10000.00"), tax_rate_percent=Decimal("10.00"))
    CapacityPoolFactory(slug="pool-a", gpus_per_node=8, node_count=4)

    # when on 30 March it books 8 GPUs from 31 March 12:00 to 1 April 12:00
    with time_machine.travel(datetime(2026, 3, 30, 8, 30, tzinfo=UTC), tick=True):
        request = BookingRequest(
            gpu_model="h100-sxm-80gb",
            gpu_count=8,
            start=datetime(2026, 3, 31, 12, tzinfo=UTC),
            end=datetime(2026, 4, 1, 12, tzinfo=UTC),
        )
        reservation, _ = reservation_create(
            tenant=tenant, request=request, fingerprint=request.fingerprint()
        )
    assert reservation.total_price == Decimal("576.00")

    # and the clock moves to 1 April 00:30: the worker meters and drafts
    with time_machine.travel(datetime(2026, 4, 1, 0, 30, tzinfo=UTC), tick=True):
        assert run(advance_reservations)["activated"] == 1
        metered = run(meter_usage_task)
        assert (metered["until"], metered["usage_created"]) == ("2026-04-01T00:00:00+00:00", 12)
        assert run(draft_invoices_task) == {"drafts_built": 1, "failed": []}
        draft = Invoice.objects.get()
        assert (draft.status, draft.total) == ("draft", Decimal("316.80"))
        assert run(finalize_invoices_task) == {
            "finalized": 0,
            "sla_credit_notes": 0,
            "failed": [],
        }

    # and to 3 April 01:00, past March's grace period
    with time_machine.travel(datetime(2026, 4, 3, 1, 0, tzinfo=UTC), tick=True):
        assert run(advance_reservations)["completed"] == 1
        assert run(meter_usage_task)["usage_created"] == 12
        run(draft_invoices_task)
        assert run(finalize_invoices_task) == {
            "finalized": 1,
            "sla_credit_notes": 0,
            "failed": [],
        }
        # a re-delivered message changes nothing
        assert run(finalize_invoices_task) == {
            "finalized": 0,
            "sla_credit_notes": 0,
            "failed": [],
        }
        assert run(meter_usage_task)["usage_created"] == 0

    # then March is issued with its 12 hours, April holds the rest as a draft
    march, april = Invoice.objects.order_by("period_start")
    assert (march.number, march.status) == ("INV-2026-000001", "finalized")
    assert (march.subtotal, march.tax_amount, march.total) == (
        Decimal("288.00"),
        Decimal("28.80"),
        Decimal("316.80"),
    )
    assert list(march.lines.values_list("hours", "gpu_hours", "unit_price", "amount")) == [
        (12, Decimal("96.0000"), Decimal("3.0000"), Decimal("288.00"))
    ]
    assert (april.status, april.total) == ("draft", Decimal("316.80"))
    assert UsageRecord.objects.count() == 24
    assert list(LedgerEntry.objects.values_list("kind", "amount", "reference")) == [
        ("invoice", Decimal("-316.80"), "INV-2026-000001")
    ]
    reservation.refresh_from_db()
    assert (reservation.status, reservation.invoiced_amount) == (
        Reservation.Status.COMPLETED,
        Decimal("288.00"),
    )
