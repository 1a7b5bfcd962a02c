"""Tests: real PostgreSQL and real Redis (see `make test`)."""

from .base import *  # noqa: F403
from .base import POSTGRESQL_OPTIONS, env

SECRET_KEY = "test-only-not-secret"
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
DATABASES = {
    "default": env.db_url("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/postgres"),
}
DATABASES["default"]["CONN_MAX_AGE"] = 0
DATABASES["default"]["OPTIONS"] = dict(POSTGRESQL_OPTIONS)  # as deployed
DATABASES["default"]["TEST"] = {"NAME": env("TEST_DATABASE_NAME", default="test_gpu_marketplace")}
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/15")
CELERY_BROKER_TRANSPORT_OPTIONS = {"max_retries": 0}  # as in base: fail a publish at once
# Rate limits count in their own Redis db; the budgets are high so that no other test is
# throttled (tests/core/test_rate_limits.py sets small ones).
RATE_LIMIT_REDIS_URL = env("RATE_LIMIT_REDIS_URL", default="redis://127.0.0.1:6379/14")
RATE_LIMIT_SEARCH = RATE_LIMIT_WRITE = RATE_LIMIT_ANONYMOUS = 1_000_000
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGGING["root"]["level"] = "WARNING"  # noqa: F405
WHITENOISE_AUTOREFRESH = True  # no collectstatic needed to run the tests

WEBHOOK_ALLOW_PRIVATE_URLS = env.bool("WEBHOOK_ALLOW_PRIVATE_URLS", default=True)
