"""When the database drops, the API answers 503 JSON ``service_unavailable`` with Retry-After,
and recovers by itself once it is back — against a live gunicorn on production settings whose
database connection runs through a TCP proxy the test stops and starts again."""

import contextlib
import socket
import threading
from decimal import Decimal

import httpx
import pytest
from django.db import connection

from marketplace.models import Reservation
from marketplace.services.tenants import api_key_create
from tests.factories import CapacityPoolFactory, TenantFactory
from tests.live_server import free_port, gunicorn
from tests.marketplace.test_concurrency import ledger_violations

pytestmark = pytest.mark.django_db(transaction=True)


class TcpProxy:
    """Forwards a local port to the database; ``stop`` closes it and cuts every connection,
    ``start`` listens again on the same port."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.sockets: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        with self.lock:
            if self.listener is not None:
                # shutdown wakes the thread blocked in accept(); close alone would not
                with contextlib.suppress(OSError):
                    self.listener.shutdown(socket.SHUT_RDWR)
                self.listener.close()
                self.listener = None
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            with self.lock:
                self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def proxy():
    db = connection.settings_dict
    tcp = TcpProxy((db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432)))
    tcp.start()
    yield tcp
    tcp.stop()


@pytest.fixture
def live_server_via(proxy):
    """gunicorn on production settings, its database reached through ``proxy``."""
    with gunicorn(db_port=proxy.port, API_RETRY_AFTER_SECONDS="3") as base:
        yield base


def test_a_lost_database_answers_503_json_and_the_api_recovers_by_itself(proxy, live_server_via):
    # given a tenant with a key and a pool, and the API answering
    tenant = TenantFactory(credit_limit=Decimal("100000.00"))
    CapacityPoolFactory()
    _, raw_key = api_key_create(tenant=tenant)
    api = httpx.Client(base_url=live_server_via, headers={"Authorization": f"Bearer {raw_key}"})
    body = {
        "gpu_model": "h100-sxm-80gb",
        "gpu_count": 8,
        "start": "2026-12-07T09:00:00Z",
        "end": "2026-12-07T13:00:00Z",
    }
    assert api.get("/api/v1/tenant/").status_code == 200

    # when the database connection is cut
    proxy.stop()
    reads = [api.get("/api/v1/tenant/") for _ in range(3)]
    write = api.post("/api/v1/reservations/", json=body, headers={"Idempotency-Key": "cut-1"})

    # then every answer is a JSON 503 with Retry-After, never an HTML 500
    for response in [*reads, write]:
        assert response.status_code == 503
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["code"] == "service_unavailable"
        assert response.headers["Retry-After"] == "3"

    # and once it is back, the same requests succeed without a restart
    proxy.start()
    assert api.get("/api/v1/tenant/").status_code == 200
    booked = api.post("/api/v1/reservations/", json=body, headers={"Idempotency-Key": "cut-1"})
    assert booked.status_code == 201
    assert Reservation.objects.count() == 1
    assert ledger_violations() == []


def test_unknown_api_paths_are_json_404s(live_server_via):
    response = httpx.get(f"{live_server_via}/api/v1/no-such-thing/")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    # outside /api/ Django's own page stays
    assert "text/html" in httpx.get(f"{live_server_via}/no-such-page/").headers["content-type"]
