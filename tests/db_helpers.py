"""Assertions on what exactly PostgreSQL refused, and threads that cannot hang a test.

A test of a database guarantee names the guarantee: the constraint (CHECK, UNIQUE, foreign
key), the NOT NULL column, or the trigger's message. Any other refusal fails the test, so a
test cannot pass because some unrelated rule happened to fire."""

import re
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, TypeVar

import pytest
from django.db import IntegrityError, connection, transaction

T = TypeVar("T")

NOT_NULL_VIOLATION = "23502"
RESTRICT_VIOLATION = "23001"  # raised by the billing and ledger immutability triggers


def _database_error(error: pytest.ExceptionInfo) -> Any:
    """The driver's error behind Django's ``IntegrityError`` (psycopg's, with ``diag``)."""
    cause = error.value.__cause__
    assert hasattr(cause, "diag"), f"not refused by the database: {error.value!r}"
    return cause


def _describe(cause: Any) -> str:
    diag = cause.diag
    return (
        f"SQLSTATE {cause.sqlstate}, constraint {diag.constraint_name!r}, "
        f"column {diag.column_name!r}: {diag.message_primary}"
    )


@contextmanager
def raises_constraint(name: str) -> Iterator[pytest.ExceptionInfo]:
    """Expects the block to raise ``IntegrityError`` for the constraint called ``name``. The block
    runs in a savepoint, so the test can go on using the database afterwards."""
    with pytest.raises(IntegrityError) as error, transaction.atomic():
        yield error
    cause = _database_error(error)
    assert cause.diag.constraint_name == name, (
        f"expected constraint {name!r}, got {_describe(cause)}"
    )


@contextmanager
def raises_not_null(column: str) -> Iterator[pytest.ExceptionInfo]:
    """Expects the block to raise ``IntegrityError`` for a NULL in ``column`` (a NOT NULL
    violation has no constraint name). Runs in a savepoint like ``raises_constraint``."""
    with pytest.raises(IntegrityError) as error, transaction.atomic():
        yield error
    cause = _database_error(error)
    assert (cause.sqlstate, cause.diag.column_name) == (NOT_NULL_VIOLATION, column), (
        f"expected NOT NULL on {column!r}, got {_describe(cause)}"
    )


@contextmanager
def raises_restrict_violation(message: str | re.Pattern[str]) -> Iterator[pytest.ExceptionInfo]:
    """Expects the block to be refused by a trigger raising ``message`` (the exact text, or a
    pattern the whole text must match when it names a row id) with SQLSTATE 23001
    (restrict_violation), which Django raises as ``IntegrityError``. Runs in a savepoint."""
    with pytest.raises(IntegrityError) as error, transaction.atomic():
        yield error
    cause = _database_error(error)
    text = cause.diag.message_primary or ""
    matches = message.fullmatch(text) if isinstance(message, re.Pattern) else text == message
    assert (cause.sqlstate, bool(matches)) == (RESTRICT_VIOLATION, True), (
        f"expected restrict_violation {message!r}, got {_describe(cause)}"
    )


def run_concurrently(*work: Callable[[], T], timeout: float = 60) -> list[T]:
    """Runs each callable in a thread of its own, each on its own database connection, released
    together by a barrier, and returns their results in order.

    Fails the test with the traceback of any exception a callable raised, and fails it within
    ``timeout`` seconds, naming the threads still running, if any hangs. The database sessions
    of hung threads are terminated so that their locks cannot block the rest of the test run
    (such as flushing the test database)."""
    names = [f"worker {i} ({_name_of(fn)})" for i, fn in enumerate(work)]
    barrier = threading.Barrier(len(work))
    results: list[Any] = [None] * len(work)
    failures: list[str] = []
    backend_pids: dict[str, int] = {}

    def run(i: int) -> None:
        try:
            connection.ensure_connection()  # connect first so the barrier releases real work
            backend_pids[names[i]] = connection.connection.info.backend_pid
            barrier.wait(timeout=timeout)
            results[i] = work[i]()
        except BaseException:
            failures.append(f"{names[i]}:\n{traceback.format_exc()}")
            barrier.abort()
        finally:
            connection.close()

    threads = [
        threading.Thread(target=run, args=(i,), name=names[i], daemon=True)
        for i in range(len(work))
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    hung = [thread.name for thread in threads if thread.is_alive()]
    if hung:
        _terminate_sessions([backend_pids[name] for name in hung if name in backend_pids])
    assert not hung, f"still running after {timeout} s (deadlocked?): {', '.join(hung)}"
    assert failures == [], "\n".join(failures)
    return results


def _name_of(fn: Callable) -> str:
    while isinstance(fn, partial):
        fn = fn.func
    return getattr(fn, "__name__", "work")


def _terminate_sessions(pids: list[int]) -> None:
    if not pids:
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [pids])


# The product's default policies are rows the data migrations write (SLA credit tiers,
# commitment discounts, the cancellation schedule, beat schedules). A transactional test
# empties every table when it ends, so a later test that needs them puts them back.
_POLICY_MIGRATIONS = (
    "marketplace.migrations.0002_default_policies",
    "billing.migrations.0005_default_sla_rules",
)


def restore_default_policies() -> None:
    """Re-run the data migrations that write the default policies (they use get_or_create:
    nothing changes where the rows are still there)."""
    from importlib import import_module

    from django.apps import apps

    for module in _POLICY_MIGRATIONS:
        import_module(module).forwards(apps, None)
