"""Domain errors of the demand side, each with a stable ``code`` clients can rely on."""

from capacity.errors import InsufficientCapacity, InvalidWindow  # noqa: F401 - re-exported
from core.errors import ApplicationError, Conflict, NotFound


class QuotaExceeded(ApplicationError):
    code = "quota_exceeded"
    status_code = 403
    default_detail = "The booking exceeds the tenant's quota."


class CreditLimitExceeded(ApplicationError):
    code = "credit_limit_exceeded"
    status_code = 402
    default_detail = "The booking would exceed the tenant's credit limit."


class QuoteExpired(ApplicationError):
    code = "quote_expired"
    status_code = 410
    default_detail = "The quote has expired; request a new one."


class TenantSuspended(ApplicationError):
    code = "tenant_suspended"
    status_code = 403
    default_detail = "The tenant is suspended."


class IdempotencyKeyReused(ApplicationError):
    code = "idempotency_key_reused"
    status_code = 422
    default_detail = "This Idempotency-Key was used with a different request."


class IdempotencyKeyInUse(Conflict):
    """A retry arrived while the first request with this Idempotency-Key is still running: try
    again shortly (then it is the replay)."""

    code = "idempotency_key_in_use"
    default_detail = (
        "A request with this Idempotency-Key is still being processed; retry in a moment."
    )


class InvalidStateTransition(Conflict):
    code = "invalid_state"
    default_detail = "The reservation cannot do that in its current state."


class NoMatchingPool(NotFound):
    code = "no_matching_pool"
    default_detail = "No active pool matches the request."


class UnknownGpuModel(ApplicationError):
    code = "unknown_gpu_model"
    status_code = 400
    default_detail = "Unknown GPU model."


class InvalidGpuCount(ApplicationError):
    code = "invalid_gpu_count"
    status_code = 400
    default_detail = "The GPU count does not fit the pool's booking step."


class CurrencyLocked(Conflict):
    code = "currency_locked"
    default_detail = (
        "The tenant's billing currency is fixed once it has reservations, ledger entries or "
        "invoices."
    )


class LastAdminKey(Conflict):
    code = "last_admin_key"
    default_detail = (
        "This is the tenant's last active API key with the admin scope; create another first."
    )
