"""A webhook receiver for tests: a threaded HTTP server on 127.0.0.1 (a random port) that
records every request and answers as the test scripts it.

    with Receiver([Reply(500), Reply(200)]) as receiver:
        endpoint_create(tenant_id=1, url=receiver.url())
        ...
        (request,) = receiver.wait_for(1)

Replies are used in order, one per request, then ``default`` (200) for the rest. A reply can
be slow (``delay_seconds``) or ``hold`` the request until ``release()``. Every wait has a
timeout and fails the test with a sentence, so a lost webhook never hangs the suite."""

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

WAIT_SECONDS = 10
HOLD_LIMIT_SECONDS = 60  # a held request is answered at the latest after this long


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay_seconds: float = 0.0
    hold: bool = False


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    received_at: float  # time.monotonic()

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Two workers open up to 2 x WEBHOOK_CONCURRENCY connections at once; socketserver's
    # default backlog of 5 would refuse some of them on a loaded machine.
    request_queue_size = 256

    def __init__(self, receiver: "Receiver") -> None:
        self.receiver = receiver
        super().__init__(("127.0.0.1", 0), _Handler)

    def verify_request(self, request, client_address) -> bool:
        with self.receiver._changed:
            self.receiver.connections += 1
        return True

    def handle_error(self, request, client_address) -> None:
        pass  # a client that went away (a timeout, a killed worker) is part of the test


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the delivery client's pool expects
    server: _Server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply = self.server.receiver._received(Received(self.path, headers, body, time.monotonic()))
        if reply.delay_seconds:
            time.sleep(reply.delay_seconds)
        if reply.hold:
            self.server.receiver._release.wait(timeout=HOLD_LIMIT_SECONDS)
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args) -> None:
        pass


class Receiver:
    def __init__(self, replies: Iterable[Reply] = (), *, default: Reply | None = None) -> None:
        self._replies = list(replies)
        self._default = default or Reply()
        self._requests: list[Received] = []
        self._changed = threading.Condition()
        self._release = threading.Event()
        self.connections = 0  # TCP connections accepted, requests or not
        self._server = _Server(self)
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> "Receiver":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=WAIT_SECONDS)

    def url(self, path: str = "/hook", *, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def _received(self, request: Received) -> Reply:
        with self._changed:
            self._requests.append(request)
            self._changed.notify_all()
            return self._replies.pop(0) if self._replies else self._default

    @property
    def requests(self) -> list[Received]:
        with self._changed:
            return list(self._requests)

    def webhook_ids(self) -> list[str]:
        return [request.webhook_id for request in self.requests]

    def wait_for(self, count: int, timeout: float = WAIT_SECONDS) -> list[Received]:
        """The first ``count`` requests, once they have arrived; fails the test if they do not
        arrive within ``timeout`` seconds."""
        with self._changed:
            arrived = self._changed.wait_for(lambda: len(self._requests) >= count, timeout)
            if not arrived:
                pytest.fail(
                    f"the receiver got {len(self._requests)} of {count} requests in {timeout} s"
                )
            return self._requests[:count]

    def release(self) -> None:
        """Answer the held requests (and those to come) at once."""
        self._release.set()
