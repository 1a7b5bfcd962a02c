"""Helpers for tests that prove a write waits for a row lock: run it in a thread on its own
connection, wait until PostgreSQL shows it blocked on a lock, then let it go.

Every wait has a timeout and fails the test with a sentence, so a deadlock never hangs the
suite."""

import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from django.db import connection

WAIT_SECONDS = 10


class Worker:
    """``work()`` in a daemon thread on its own database connection. ``result`` is what it
    returned, ``error`` what it raised."""

    def __init__(self, work: Callable[[], Any], name: str = "worker") -> None:
        self.name = name
        self.result: Any = None
        self.error: BaseException | None = None
        self.traceback = ""
        self._thread = threading.Thread(target=self._run, args=(work,), daemon=True, name=name)
        self._thread.start()

    def _run(self, work: Callable[[], Any]) -> None:
        try:
            self.result = work()
        except BaseException as exc:
            self.error = exc
            self.traceback = traceback.format_exc()
        finally:
            connection.close()

    @property
    def finished(self) -> bool:
        return not self._thread.is_alive()

    def join(self, timeout: float = WAIT_SECONDS) -> Any:
        """Wait for the work to end and return its result (re-raising what it raised)."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"{self.name} did not finish within {timeout} s"
        if self.error is not None:
            raise AssertionError(f"{self.name} failed:\n{self.traceback}") from self.error
        return self.result


def sessions_waiting_for_a_lock() -> int:
    """How many other sessions of this database wait on a lock (read on the caller's
    connection, which may be inside a transaction)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # fresh figures inside a transaction
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock' "
            "AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def wait_until_blocked(worker: Worker, timeout: float = WAIT_SECONDS) -> None:
    """Return once ``worker`` waits on a lock; fail if it finishes (or fails) without ever
    waiting, or is still running but not blocked after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sessions_waiting_for_a_lock():
            return
        if worker.finished:
            detail = f": {worker.error!r}" if worker.error else f", returning {worker.result!r}"
            raise AssertionError(f"{worker.name} finished without waiting for the lock{detail}")
        time.sleep(0.02)
    raise AssertionError(f"{worker.name} neither finished nor waited on a lock in {timeout} s")
