"""Test-session plumbing shared by every test (the fixtures tests use are in tests/conftest.py).

``TEST_DATABASE_TEMPLATE`` (set by scripts/mutation.sh): every pytest session clones its own
database from that migrated template instead of migrating one, and drops it at the end. The
mutation run starts hundreds of short sessions, two at a time: a clone takes a fraction of a
second, and no two sessions share a database."""

import os

import psycopg
import pytest
from django.conf import settings
from django.db import connections


def _admin_connection() -> psycopg.Connection:
    database = settings.DATABASES["default"]
    return psycopg.connect(
        host=database.get("HOST") or "127.0.0.1",
        port=database.get("PORT") or 5432,
        user=database.get("USER") or "postgres",
        password=database.get("PASSWORD") or None,
        dbname="postgres",
        autocommit=True,
    )


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    template = os.environ.get("TEST_DATABASE_TEMPLATE")
    if not template:
        yield
        return
    clone = f"{template}_{os.getpid()}"
    with _admin_connection() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{clone}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{clone}" TEMPLATE "{template}"')
    settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = clone
    yield
    connections.close_all()
    with _admin_connection() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{clone}" WITH (FORCE)')
