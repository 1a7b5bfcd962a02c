"""Settings shared by every environment. Everything a deployment may change comes from the
environment (12-factor); see the configuration table in README.md."""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent

# Configuration comes from the process environment only (docker compose passes `.env` in with
# `env_file`); no file is read implicitly, so a stray `.env` cannot redirect the tests.
env = environ.Env()

SECRET_KEY = env("SECRET_KEY", default="")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "simple_history",
    "core",
    "capacity",
    "marketplace",
    "billing",
    "events",
    "dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # /api/ requests too long, too large or with empty query values: JSON 4xx (core/api/limits.py).
    "core.api.limits.RequestLimits",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # The audit trail: lets history rows name who made a change (core/history.py).
    "simple_history.middleware.HistoryRequestMiddleware",
    "core.api.throttling.RateLimitHeaders",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database: DATABASE_URL, e.g. postgres://postgres@127.0.0.1:5432/gpu_marketplace.
# Persistent connections matter: a one-row endpoint serves ~900 req/s with them and
# ~120 req/s without on our reference machine.
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'var' / 'db.sqlite3'}"),
}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASES["default"]["ATOMIC_REQUESTS"] = False
# PostgreSQL binds the parameters itself and a statement a connection has run five times is
# prepared: planned once, not on every run. The hot paths run the same few statements over and
# over: a booking costs the database about 40 % less CPU this way. Behind a connection pooler
# that cannot keep prepared statements (PgBouncer before 1.21 in transaction mode), set
# DATABASE_PREPARED_STATEMENTS=false.
POSTGRESQL_OPTIONS: dict[str, object] = (
    {"server_side_binding": True, "prepare_threshold": 5}
    if env.bool("DATABASE_PREPARED_STATEMENTS", default=True)
    else {}
)
if DATABASES["default"]["ENGINE"].endswith("postgresql"):
    DATABASES["default"].setdefault("OPTIONS", {}).update(POSTGRESQL_OPTIONS)
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # The embedded default under concurrent writers: write-ahead logging (readers never block
    # the writer), transactions that take the write lock when they begin (no "database is
    # locked" half way through a booking), and a wait for the lock instead of an error.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": env.int("SQLITE_BUSY_TIMEOUT_SECONDS", default=30),
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    # The ledger's covering index (capacity.PoolHour, INCLUDE capacity and booked) is a plain
    # (pool, hour) index on SQLite, which has no INCLUDE: nothing to warn about.
    SILENCED_SYSTEM_CHECKS = ["models.W040"]
# A database that cannot be reached answers 503 service_unavailable with this Retry-After.
API_RETRY_AFTER_SECONDS = env.int("API_RETRY_AFTER_SECONDS", default=5)
# Request size limits for /api/ (core/api/limits.py): longer URLs get 414 uri_too_long, larger
# bodies 413 request_too_large, in JSON. gunicorn.conf.py lets URLs this long through to Django.
API_MAX_URL_LENGTH = env.int("API_MAX_URL_LENGTH", default=8192)
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=64 * 1024)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # First: its Bearer challenge makes unauthenticated requests 401, not 403.
        "marketplace.api.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # HasScope: an API key needs the `read` scope for the catalogue too (sessions are exempt).
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "core.api.permissions.HasScope",
    ],
    "DEFAULT_PAGINATION_CLASS": "core.api.pagination.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.api.exception_handler.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # Bodies are JSON only: another content type is a 415 unsupported_media_type.
    "DEFAULT_PARSER_CLASSES": ["core.api.parsers.JSONParser"],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "DATETIME_FORMAT": "%Y-%m-%dT%H:%M:%SZ",
    # Rate limits (core/api/throttling.py): atomic counters in Redis, one budget per kind.
    "DEFAULT_THROTTLE_CLASSES": [
        "core.api.throttling.SearchRateThrottle",
        "core.api.throttling.WriteRateThrottle",
        "core.api.throttling.AnonymousRateThrottle",
    ],
    # How many proxies in front of the API append to X-Forwarded-For; 0 trusts none and
    # identifies anonymous clients by REMOTE_ADDR.
    "NUM_PROXIES": env.int("RATE_LIMIT_TRUSTED_PROXIES", default=0),
}

SPECTACULAR_SETTINGS = {
    "TITLE": "GPU Capacity Marketplace API",
    "DESCRIPTION": (
        "Search GPU capacity across every provider, book GPU-hours, and follow usage and "
        "invoices. Errors are JSON objects `{code, detail, fields}` with a stable `code`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    # Serve Swagger UI's assets ourselves: no CDN needed.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Every operation also documents 429 (rate limits) and 503 (database unreachable).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "core.api.schema.document_api_edges",
    ],
}

# Celery: CELERY_BROKER_URL, e.g. redis://127.0.0.1:6379/0. The embedded default is kombu's
# filesystem transport, which needs no server process.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="filesystem://")
# A broker that cannot be reached fails a publish at once instead of after ~6 s of connection
# retries: requests that commit then nudge a worker (events.services) answer without waiting,
# and the beat schedule sends what the lost nudge would have. Workers reconnect under their
# own retry policy (broker_connection_retry), which this does not change.
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {"max_retries": 0}
if CELERY_BROKER_URL.startswith("filesystem://"):
    _queue_dir = BASE_DIR / "var" / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        "processed_folder": str(_queue_dir / "processed"),
        "control_folder": str(_queue_dir / "control"),
        "store_processed": False,
    }
CELERY_RESULT_BACKEND = None

# Rate limits per API key (anonymous: per client address), in requests per window; see
# core/api/throttling.py. Counted in RATE_LIMIT_REDIS_URL (default: the broker, if Redis);
# empty turns rate limiting off. If Redis is unreachable, requests are allowed.
RATE_LIMIT_REDIS_URL = env(
    "RATE_LIMIT_REDIS_URL",
    default=CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else "",
)
RATE_LIMIT_WINDOW_SECONDS = env.float("RATE_LIMIT_WINDOW_SECONDS", default=60.0)
RATE_LIMIT_SEARCH = env.int("RATE_LIMIT_SEARCH", default=600)
RATE_LIMIT_WRITE = env.int("RATE_LIMIT_WRITE", default=120)
RATE_LIMIT_ANONYMOUS = env.int("RATE_LIMIT_ANONYMOUS", default=60)
RATE_LIMIT_KEY_PREFIX = env("RATE_LIMIT_KEY_PREFIX", default="ratelimit")
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_PREFETCH_MULTIPLIER = 4
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
}

# Booking rules (see marketplace/services/booking.py).
BOOKING_MAX_HOURS = env.int("BOOKING_MAX_HOURS", default=90 * 24)
BOOKING_HORIZON_DAYS = env.int("BOOKING_HORIZON_DAYS", default=365)
QUOTE_HOLD_MINUTES = env.int("QUOTE_HOLD_MINUTES", default=10)
# An Idempotency-Key is remembered this long after its first request (then it may be reused;
# the hourly prune job deletes the records). Sent as Idempotency-Key-Expires.
IDEMPOTENCY_KEY_TTL_HOURS = env.int("IDEMPOTENCY_KEY_TTL_HOURS", default=24)
# Recording an incident in the admin moves reservations for at most this long before the page
# answers; the displacement job (woken at once, and every minute) does the rest.
INCIDENT_ADMIN_DISPLACE_SECONDS = env.float("INCIDENT_ADMIN_DISPLACE_SECONDS", default=10.0)

# Billing (see billing/services/invoicing.py). Invoices stay draft this many days after the
# month ends, for late usage; metering re-reads this many hours before its last run.
BILLING_GRACE_DAYS = env.int("BILLING_GRACE_DAYS", default=2)
BILLING_METERING_LOOKBACK_HOURS = env.int("BILLING_METERING_LOOKBACK_HOURS", default=24)
# Suspend a tenant with an invoice overdue by more than this many days (daily job, see
# billing/services/settlement.py). Empty (the default) turns the policy off.
BILLING_SUSPEND_OVERDUE_DAYS = (
    env.int("BILLING_SUSPEND_OVERDUE_DAYS")
    if env.str("BILLING_SUSPEND_OVERDUE_DAYS", default="").strip()
    else None
)
# The margin report converts every amount into this currency with the operators' effective-
# dated FX rates (billing.FxRate; see billing/services/reports.py).
REPORTING_CURRENCY = env("REPORTING_CURRENCY", default="USD")

# Events and webhooks (see events/delivery.py and README "Webhooks").
EVENTS_RETENTION_DAYS = env.int("EVENTS_RETENTION_DAYS", default=30)
WEBHOOK_ALLOW_PRIVATE_URLS = env.bool("WEBHOOK_ALLOW_PRIVATE_URLS", default=False)
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=10.0)
WEBHOOK_BATCH_SIZE = env.int("WEBHOOK_BATCH_SIZE", default=200)
WEBHOOK_CONCURRENCY = env.int("WEBHOOK_CONCURRENCY", default=32)
WEBHOOK_LEASE_SECONDS = env.int("WEBHOOK_LEASE_SECONDS", default=60)
WEBHOOK_SECRET_OVERLAP_HOURS = env.int("WEBHOOK_SECRET_OVERLAP_HOURS", default=24)
WEBHOOK_DISABLE_AFTER_DAYS = env.int("WEBHOOK_DISABLE_AFTER_DAYS", default=3)
WEBHOOK_NUDGE_SECONDS = env.float("WEBHOOK_NUDGE_SECONDS", default=0.2)
# The invoice status enum gets its own name in the OpenAPI schema (reservations have "status").
SPECTACULAR_SETTINGS.setdefault("ENUM_NAME_OVERRIDES", {})["InvoiceStatusEnum"] = (
    "billing.models.Invoice.Status"
)
