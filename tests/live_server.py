"""A live gunicorn on production settings, for tests that talk HTTP to a real server."""

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def gunicorn(*, db_port: int | None = None, **env: str) -> Iterator[str]:
    """Runs gunicorn (one worker) on production settings against the test database, reached on
    ``db_port`` (default: the database's own port), and yields its base URL once ``/healthz``
    answers. ``env`` adds or overrides environment variables. The server sees only what the
    test committed: use ``django_db(transaction=True)``."""
    db = connection.settings_dict
    port = free_port()
    db_port = db_port or int(db["PORT"] or 5432)
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "config.wsgi", "-b", f"127.0.0.1:{port}", "-w", "1"],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            "SECRET_KEY": "live-test",
            "ALLOWED_HOSTS": "127.0.0.1",
            "SECURE_SSL_REDIRECT": "false",
            "DATABASE_URL": f"postgres://{db['USER']}@127.0.0.1:{db_port}/{db['NAME']}",
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "LOG_LEVEL": "CRITICAL",
            **env,
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        else:
            pytest.fail("gunicorn did not start")
        yield base
    finally:
        server.terminate()
        server.wait(timeout=10)
