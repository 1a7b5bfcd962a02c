"""Rate limits per API key (per client address when anonymous), counted atomically in Redis.

Each budget is a fixed window per identity: the first request of a window creates a Redis
counter that expires after ``RATE_LIMIT_WINDOW_SECONDS``; every request increments it in one
Lua script (INCR, PEXPIRE on the first hit, PTTL), so concurrent requests on any number of
processes never let more than the budget through. Budgets are separate: ``search`` (safe
methods: GET, HEAD, OPTIONS), ``write`` (everything else) and ``anonymous`` (no credentials,
per client address). The throttle stores what it counted on the request; ``RateLimitHeaders``
middleware adds ``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset`` to the
response, and a refused request is a 429 ``rate_limited`` with ``Retry-After``.

If Redis cannot be reached the request is allowed and a warning logged: the limiter must not
take the API down. An empty ``RATE_LIMIT_REDIS_URL`` turns rate limiting off."""

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from rest_framework.throttling import BaseThrottle

logger = logging.getLogger(__name__)

# KEYS[1]: the counter; ARGV[1]: the window in milliseconds. Returns {count, ms left}.
# The PTTL < 0 branch repairs a counter left without expiry (it cannot then live forever).
INCREMENT_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""

REDIS_TIMEOUT_SECONDS = 0.5

_clients: dict[str, tuple[redis.Redis, Any]] = {}
_clients_lock = threading.Lock()


def _script(url: str) -> Any:
    """The registered Lua script on a client (with its connection pool) shared per URL."""
    with _clients_lock:
        if url not in _clients:
            client = redis.Redis.from_url(
                url,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                socket_timeout=REDIS_TIMEOUT_SECONDS,
            )
            _clients[url] = (client, client.register_script(INCREMENT_SCRIPT))
        return _clients[url][1]


@dataclass(frozen=True)
class RateLimitState:
    budget: str
    limit: int
    remaining: int
    reset_seconds: int  # until the window ends

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }


def _django_request(request: Any) -> HttpRequest:
    return getattr(request, "_request", request)


def rate_limit_state(request: Any) -> RateLimitState | None:
    """What the throttle counted for this request, if it counted it."""
    return getattr(_django_request(request), "rate_limit", None)


class RedisRateThrottle(BaseThrottle):
    """One budget (``budget`` names it; ``setting`` holds its requests per window). Subclasses
    say which requests it applies to; the others it leaves alone."""

    budget = ""
    setting = ""
    _reset_seconds: int | None = None

    def applies(self, request: Any) -> bool:
        raise NotImplementedError

    def identity(self, request: Any) -> str:
        auth_pk = getattr(request.auth, "pk", None)
        if auth_pk is not None:
            return f"key:{auth_pk}"
        user = request.user
        if user is not None and user.is_authenticated and user.pk is not None:
            return f"user:{user.pk}"
        # REMOTE_ADDR, or X-Forwarded-For only as far as REST_FRAMEWORK["NUM_PROXIES"] trusts.
        return f"addr:{self.get_ident(request)}"

    def allow_request(self, request: Any, view: Any) -> bool:
        if _exempt(view) or not self.applies(request):
            return True
        url = settings.RATE_LIMIT_REDIS_URL
        if not url:
            return True
        limit = int(getattr(settings, self.setting))
        window_ms = max(1, round(settings.RATE_LIMIT_WINDOW_SECONDS * 1000))
        key = f"{settings.RATE_LIMIT_KEY_PREFIX}:{self.budget}:{self.identity(request)}"
        try:
            count, ttl_ms = _script(url)(keys=[key], args=[window_ms])
        except (redis.RedisError, OSError) as exc:
            logger.warning("Rate limiting skipped, Redis unreachable: %s", exc)
            return True
        state = RateLimitState(
            budget=self.budget,
            limit=limit,
            remaining=max(0, limit - int(count)),
            reset_seconds=max(1, math.ceil(int(ttl_ms) / 1000)),
        )
        _django_request(request).rate_limit = state  # type: ignore[attr-defined]
        self._reset_seconds = state.reset_seconds
        return int(count) <= limit

    def wait(self) -> float | None:
        # DRF asks right after ``allow_request`` refused, on the same instance: this becomes
        # the 429's ``Retry-After``.
        return self._reset_seconds


class SearchRateThrottle(RedisRateThrottle):
    """Authenticated reads (availability, earliest windows, lists): ``RATE_LIMIT_SEARCH``."""

    budget = "search"
    setting = "RATE_LIMIT_SEARCH"

    def applies(self, request: Any) -> bool:
        return _authenticated(request) and request.method in SAFE_METHODS


class WriteRateThrottle(RedisRateThrottle):
    """Authenticated writes (POST, PUT, PATCH, DELETE): ``RATE_LIMIT_WRITE``."""

    budget = "write"
    setting = "RATE_LIMIT_WRITE"

    def applies(self, request: Any) -> bool:
        return _authenticated(request) and request.method not in SAFE_METHODS


class AnonymousRateThrottle(RedisRateThrottle):
    """Requests without credentials, per client address: ``RATE_LIMIT_ANONYMOUS``."""

    budget = "anonymous"
    setting = "RATE_LIMIT_ANONYMOUS"

    def applies(self, request: Any) -> bool:
        return not _authenticated(request)


SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def _authenticated(request: Any) -> bool:
    user = request.user
    return bool(user is not None and user.is_authenticated)


def _exempt(view: Any) -> bool:
    # The OpenAPI schema and the docs pages are DRF views too; they are not limited.
    return type(view).__module__.startswith("drf_spectacular.")


class RateLimitHeaders:
    """Middleware: adds the ``RateLimit-*`` headers of the budget a request was counted
    against (429s included) to its response."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        state = rate_limit_state(request)
        if state is not None:
            for name, value in state.headers().items():
                response[name] = value
        return response
