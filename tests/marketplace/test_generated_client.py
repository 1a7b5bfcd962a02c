"""A Python client generated from the served OpenAPI schema with openapi-python-client books
through a live gunicorn: search, quote, confirm, extend and cancel, with typed responses.

The generator runs with ``--fail-on-warning``: a schema construct it cannot express (a
duplicate enum name, a request body it cannot type, ...) fails this test."""

import importlib
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http import HTTPStatus
from pathlib import Path
from types import ModuleType
from uuid import UUID

import httpx
import pytest

from capacity.models import PoolHour
from core.api.permissions import SCOPE_BOOK, SCOPE_READ
from marketplace.services.tenants import api_key_create
from tests.factories import CapacityPoolFactory, TenantFactory
from tests.live_server import gunicorn

pytestmark = pytest.mark.django_db(transaction=True)

PACKAGE = "gpu_marketplace_client"
GENERATOR = Path(sys.executable).parent / "openapi-python-client"


@pytest.fixture
def server():
    with gunicorn() as base:
        yield base


@pytest.fixture
def client_package(server, tmp_path) -> ModuleType:
    """The client generated from the schema the live server serves, imported."""
    schema = tmp_path / "schema.yaml"
    response = httpx.get(f"{server}/api/schema/", timeout=10)
    assert response.status_code == 200
    schema.write_bytes(response.content)
    config = tmp_path / "generator.yaml"
    config.write_text("post_hooks: []\n")  # no formatter run: the code is only imported
    generated = subprocess.run(
        [
            GENERATOR,
            "generate",
            "--path",
            schema,
            "--output-path",
            tmp_path / PACKAGE,
            "--meta",
            "none",
            "--config",
            config,
            "--fail-on-warning",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = generated.stdout + generated.stderr
    assert generated.returncode == 0, output
    assert "Warning" not in output, output
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def _api(package: ModuleType, operation: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.api.booking.{operation}")


def booked_gpus(pool) -> dict[datetime, int]:
    return {
        hour.hour: hour.booked
        for hour in PoolHour.objects.filter(pool=pool, booked__gt=0).order_by("hour")
    }


def test_a_generated_client_searches_quotes_books_extends_and_cancels(server, client_package):
    # given a tenant with a read+book key and a pool of 32 GPUs at 3.00 per GPU-hour
    tenant = TenantFactory(credit_limit=Decimal("100000.00"))
    pool = CapacityPoolFactory(price_per_gpu_hour=Decimal("3.0000"))
    _, raw_key = api_key_create(tenant=tenant, scopes=[SCOPE_READ, SCOPE_BOOK])
    models = importlib.import_module(f"{PACKAGE}.models")
    api = client_package.AuthenticatedClient(
        base_url=server, token=raw_key, raise_on_unexpected_status=True
    )
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start, end = now + timedelta(days=2), now + timedelta(days=2, hours=4)
    hours = [start + timedelta(hours=h) for h in range(6)]

    with api:
        # search: one offer, this pool, priced for the whole window
        found = _api(client_package, "availability_search").sync_detailed(
            client=api, gpu_model="h100-sxm-80gb", gpu_count=8, start=start, end=end
        )
        assert found.status_code == HTTPStatus.OK
        [offer] = found.parsed
        assert isinstance(offer, models.CapacityOffer)
        assert (offer.pool, offer.available_gpus, offer.hours) == (pool.slug, 32, 4)
        assert (offer.start, offer.end) == (start, end)
        assert (offer.unit_price, offer.total_price, offer.currency) == ("3.0000", "96.00", "USD")
        assert offer.tier == models.TierEnum.PRIMARY

        # quote: held on that pool, the capacity claimed
        quoted = _api(client_package, "quote_create").sync_detailed(
            client=api,
            body=models.BookingRequest(
                gpu_model="h100-sxm-80gb", gpu_count=8, start=start, end=end
            ),
            idempotency_key="quote-1",
        )
        assert quoted.status_code == HTTPStatus.CREATED
        quote = quoted.parsed
        assert isinstance(quote, models.Reservation)
        assert isinstance(quote.id, UUID)
        assert quote.status == models.ReservationStatusEnum.HELD
        assert (quote.pool, quote.gpu_count, quote.start, quote.end) == (pool.slug, 8, start, end)
        assert (quote.unit_price, quote.total_price) == ("3.0000", "96.00")
        assert quote.currency == models.CurrencyEnum.USD
        assert quote.expires_at is not None
        assert quote.confirmed_at is None
        assert booked_gpus(pool) == dict.fromkeys(hours[:4], 8)

        # book: the quote confirmed, the same reservation; a retry with the key replays it
        for attempt in ("first", "retry"):
            booked = _api(client_package, "reservation_create").sync_detailed(
                client=api,
                body=models.QuoteConfirmRequest(quote=quote.id),
                idempotency_key="book-1",
            )
            assert booked.status_code == HTTPStatus.CREATED
            assert "Idempotency-Key-Expires" in booked.headers
            assert ("Idempotent-Replayed" in booked.headers) == (attempt == "retry")
            reservation = booked.parsed
            assert isinstance(reservation, models.Reservation)
            assert reservation.id == quote.id
            assert reservation.status == models.ReservationStatusEnum.CONFIRMED
            assert reservation.expires_at is None
            assert reservation.confirmed_at is not None
        assert booked_gpus(pool) == dict.fromkeys(hours[:4], 8)

        # extend by two hours on the same pool at the same unit price
        extended = _api(client_package, "reservation_extend").sync_detailed(
            reservation.id,
            client=api,
            body=models.ExtendRequest(end=end + timedelta(hours=2)),
            idempotency_key="extend-1",
        )
        assert extended.status_code == HTTPStatus.OK
        reservation = extended.parsed
        assert reservation.status == models.ReservationStatusEnum.CONFIRMED
        assert (reservation.start, reservation.end, reservation.hours) == (
            start,
            end + timedelta(hours=2),
            6,
        )
        assert (reservation.gpu_count, reservation.unit_price, reservation.total_price) == (
            8,
            "3.0000",
            "144.00",
        )
        assert [(p.pool, p.gpus, p.start, p.end) for p in reservation.placements] == [
            (pool.slug, 8, start, end + timedelta(hours=2))
        ]
        assert booked_gpus(pool) == dict.fromkeys(hours, 8)

        # cancel two days ahead: free, and every hour given back
        cancelled = _api(client_package, "reservation_cancel").sync_detailed(
            reservation.id, client=api, body=models.CancelRequest(reason="plans changed")
        )
        assert cancelled.status_code == HTTPStatus.OK
        reservation = cancelled.parsed
        assert reservation.status == models.ReservationStatusEnum.CANCELLED
        assert reservation.cancellation_reason == "plans changed"
        assert reservation.cancelled_at is not None
        assert (reservation.cancellation_fee, reservation.charge) == ("0.00", "0.00")

    assert booked_gpus(pool) == {}
    assert set(PoolHour.objects.filter(pool=pool).values_list("booked", flat=True)) == {0}
