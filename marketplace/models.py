"""The demand side: tenants and their keys, the money they may commit, and reservations."""

import uuid
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q

from capacity.models import CapacityPool, Incident
from core.api.permissions import SCOPES
from core.history import AuditHistory
from core.money import CURRENCY_CHOICES


class Tenant(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"

    name = models.CharField(max_length=200, unique=True)
    slug = models.SlugField(max_length=100, unique=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES, default="USD")
    credit_limit = models.DecimalField(
        max_digits=14,
        decimal_places=2,
        default=Decimal("0.00"),
        help_text="How far the account may go below zero (outstanding + committed).",
    )
    max_gpus = models.PositiveIntegerField(
        default=1024, help_text="Quota: most GPUs held by the tenant at any one time."
    )
    max_reservation_hours = models.PositiveIntegerField(
        default=2160, help_text="Quota: longest single reservation, in hours."
    )
    discount_percent = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        default=Decimal("0.00"),
        validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text="Negotiated discount on every booking, in percent.",
    )
    tax_rate_percent = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        default=Decimal("0.00"),
        validators=[MinValueValidator(0), MaxValueValidator(100)],
    )
    ending_soon_lead = models.DurationField(
        default=timedelta(hours=1),
        help_text="How long before a reservation ends the tenant is sent reservation.ending_soon.",
    )
    low_balance_threshold = models.DecimalField(
        max_digits=14,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="balance.low is sent when available credit falls below this; empty: never.",
    )
    payment_terms_days = models.PositiveSmallIntegerField(
        default=30, help_text="Invoices are due this many days after they are issued (net 30)."
    )
    low_balance_alerted = models.BooleanField(
        default=False,
        help_text="balance.low was sent and credit has not recovered above the threshold since.",
    )
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="tenants")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = AuditHistory()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(credit_limit__gte=0), name="tenant_credit_nonnegative"
            ),
            models.CheckConstraint(condition=Q(max_gpus__gt=0), name="tenant_max_gpus_positive"),
            models.CheckConstraint(
                condition=Q(max_reservation_hours__gt=0), name="tenant_max_hours_positive"
            ),
            models.CheckConstraint(
                condition=Q(discount_percent__gte=0, discount_percent__lte=100),
                name="tenant_discount_percent_range",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["active", "suspended"]), name="tenant_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(ending_soon_lead__gte=timedelta(0)),
                name="tenant_ending_soon_lead_nonnegative",
            ),
            models.CheckConstraint(
                condition=Q(low_balance_threshold__isnull=True) | Q(low_balance_threshold__gte=0),
                name="tenant_low_balance_threshold_nonnegative",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE


def api_key_all_scopes() -> list[str]:
    """Every scope: what keys made by operators (and every key made before scopes) carry."""
    return list(SCOPES)


class ApiKey(models.Model):
    """A tenant's API key. Only a SHA-256 digest is stored; the key is shown once at creation.

    Keys carry 256 bits of randomness, so a fast digest is safe (no password stretching).
    ``scopes`` lists what the key may do (``read``, ``book``, ``admin``; checked by
    ``core.api.permissions.HasScope``); the services only store known scopes. A key past
    ``expires_at`` is refused like a revoked one."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, default="default")
    prefix = models.CharField(max_length=16, unique=True, help_text="Visible part of the key.")
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    scopes = models.JSONField(
        default=api_key_all_scopes, help_text="What the key may do: read, book, admin."
    )
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="The key stops working then; empty: never."
    )

    # Never the digest; last_used_at is usage, written without history at most once a minute.
    history = AuditHistory(excluded_fields=["digest", "last_used_at"])

    class Meta:
        ordering = ["tenant", "-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.tenant})"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


class PoolPrice(models.Model):
    """The price book: a pool's list price per GPU-hour in one currency (a pool may be sold in
    several, as a payment platform keeps one price per currency). A tenant is offered only the
    pools priced in its own currency."""

    pool = models.ForeignKey(CapacityPool, on_delete=models.CASCADE, related_name="prices")
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    price_per_gpu_hour = models.DecimalField(max_digits=12, decimal_places=4)

    history = AuditHistory()

    class Meta:
        ordering = ["pool", "currency"]
        verbose_name = "pool price"
        constraints = [
            models.UniqueConstraint(fields=["pool", "currency"], name="pool_price_unique"),
            models.CheckConstraint(
                condition=Q(price_per_gpu_hour__gte=0), name="pool_price_nonnegative_list"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.pool_id}: {self.price_per_gpu_hour} {self.currency}"


class CommitmentDiscount(models.Model):
    """Price book: longer reservations pay less (e.g. >= 168 h -10 %, >= 720 h -20 %)."""

    min_hours = models.PositiveIntegerField(unique=True)
    percent = models.DecimalField(
        max_digits=5, decimal_places=2, validators=[MinValueValidator(0), MaxValueValidator(100)]
    )

    history = AuditHistory()

    class Meta:
        ordering = ["min_hours"]
        constraints = [
            models.CheckConstraint(
                condition=Q(percent__gte=0, percent__lte=100), name="commitment_percent_range"
            ),
        ]

    def __str__(self) -> str:
        return f">= {self.min_hours} h: -{self.percent} %"


class CancellationRule(models.Model):
    """Cancellation policy as data: cancelling with at least ``min_notice_hours`` before start
    costs ``fee_percent`` of the price of the hours given back. The rule with the largest
    notice that the cancellation meets applies; hours already delivered are always charged."""

    min_notice_hours = models.PositiveIntegerField(unique=True)
    fee_percent = models.DecimalField(
        max_digits=5, decimal_places=2, validators=[MinValueValidator(0), MaxValueValidator(100)]
    )

    history = AuditHistory()

    class Meta:
        ordering = ["-min_notice_hours"]
        constraints = [
            models.CheckConstraint(
                condition=Q(fee_percent__gte=0, fee_percent__lte=100), name="cancel_fee_range"
            ),
        ]

    def __str__(self) -> str:
        return f">= {self.min_notice_hours} h notice: {self.fee_percent} % fee"


class Reservation(models.Model):
    """N GPUs of one pool for whole UTC hours [start, end).

    Where the GPUs actually are is the reservation's ``placements``: one on its own pool when
    booked; an incident may move some hours to other pools or take them away (recorded as
    ``displacements``). ``capacity_until`` is where its hold ends: ``end`` while it is live,
    the hour of cancellation once cancelled, ``start`` once a hold expired. ``scope`` keeps
    what the tenant's request allowed (region, provider, tier, pool), which bounds where an
    incident may move it."""

    class Status(models.TextChoices):
        HELD = "held", "Held (quote)"
        CONFIRMED = "confirmed", "Confirmed"
        ACTIVE = "active", "Active"
        COMPLETED = "completed", "Completed"
        CANCELLED = "cancelled", "Cancelled"
        EXPIRED = "expired", "Expired"

    LIVE_STATUSES = (Status.HELD, Status.CONFIRMED, Status.ACTIVE)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="reservations")
    pool = models.ForeignKey(CapacityPool, on_delete=models.PROTECT, related_name="reservations")
    gpu_count = models.PositiveIntegerField()
    start = models.DateTimeField()
    end = models.DateTimeField()
    capacity_until = models.DateTimeField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.CONFIRMED)
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    list_price_per_gpu_hour = models.DecimalField(max_digits=12, decimal_places=4)
    unit_price = models.DecimalField(
        max_digits=12, decimal_places=4, help_text="Price per GPU-hour, locked at booking."
    )
    total_price = models.DecimalField(
        max_digits=14, decimal_places=2, help_text="unit price x GPUs x hours, rounded."
    )
    charge = models.DecimalField(
        max_digits=14,
        decimal_places=2,
        help_text="What the tenant owes for it now: the total, or delivered hours plus the "
        "cancellation fee once cancelled, or nothing once a hold expired.",
    )
    invoiced_amount = models.DecimalField(max_digits=14, decimal_places=2, default=Decimal("0"))
    cancellation_fee = models.DecimalField(max_digits=14, decimal_places=2, default=Decimal("0"))
    hold_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    cancelled_by = models.CharField(max_length=200, blank=True)
    cancellation_reason = models.CharField(max_length=500, blank=True)
    ending_soon_notified_at = models.DateTimeField(
        null=True, blank=True, help_text="When reservation.ending_soon was sent."
    )
    scope = models.JSONField(
        default=dict,
        blank=True,
        help_text="What the request allowed beyond the GPU model: region, provider, tier, pool.",
    )
    commitment_percent = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        default=Decimal("0.00"),
        help_text="The commitment discount in force at booking (part of unit_price).",
    )
    cancellation_terms = models.JSONField(
        default=list,
        blank=True,
        help_text="The cancellation schedule in force at booking: "
        '[{"min_notice_hours": 24, "fee_percent": "0.00"}, ...], largest notice first.',
    )

    history = AuditHistory()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["tenant", "status", "start"], name="res_tenant_status_idx"),
            models.Index(fields=["status", "start"], name="res_status_start_idx"),
            models.Index(fields=["status", "end"], name="res_status_end_idx"),
            models.Index(fields=["pool", "start", "capacity_until"], name="res_pool_window_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(gpu_count__gt=0), name="res_gpu_count_positive"),
            models.CheckConstraint(condition=Q(end__gt=F("start")), name="res_window_ordered"),
            models.CheckConstraint(
                condition=Q(capacity_until__gte=F("start"), capacity_until__lte=F("end")),
                name="res_capacity_until_in_window",
            ),
            models.CheckConstraint(
                condition=Q(
                    status__in=["held", "confirmed", "active", "completed", "cancelled", "expired"]
                ),
                name="res_status_valid",
            ),
            models.CheckConstraint(
                condition=~Q(status="held") | Q(hold_expires_at__isnull=False),
                name="res_hold_has_expiry",
            ),
            models.CheckConstraint(
                condition=~Q(status__in=["held", "confirmed", "active"])
                | Q(capacity_until=F("end")),
                name="res_live_holds_whole_window",
            ),
            models.CheckConstraint(
                condition=Q(
                    unit_price__gte=0,
                    total_price__gte=0,
                    charge__gte=0,
                    cancellation_fee__gte=0,
                    invoiced_amount__gte=0,
                ),
                name="res_money_nonnegative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.gpu_count}x {self.pool_id} {self.start:%Y-%m-%dT%H}Z+{self.hours}h"

    @property
    def hours(self) -> int:
        return int((self.end - self.start).total_seconds() // 3600)

    @property
    def is_live(self) -> bool:
        return self.status in self.LIVE_STATUSES

    @property
    def recallable(self) -> bool:
        return self.pool.recallable


class Placement(models.Model):
    """Where a reservation's GPUs are for [start, end): the capacity ledger's ``booked`` for a
    pool-hour is the sum of ``gpus`` of the placements on that pool covering the hour —
    nothing else. ``incident`` names the incident that moved these GPUs here (empty for the
    booking's own placement); a reservation's placements with the same pool and cause never
    overlap (with different causes they may: GPUs moved back to a pool it still holds)."""

    reservation = models.ForeignKey(
        Reservation, on_delete=models.CASCADE, related_name="placements"
    )
    pool = models.ForeignKey(CapacityPool, on_delete=models.PROTECT, related_name="placements")
    start = models.DateTimeField()
    end = models.DateTimeField()
    gpus = models.PositiveIntegerField()
    incident = models.ForeignKey(
        Incident, on_delete=models.PROTECT, null=True, blank=True, related_name="placements"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["reservation", "start", "pool_id"]
        indexes = [
            models.Index(fields=["pool", "start", "end"], name="placement_pool_window_idx"),
            models.Index(fields=["reservation", "start"], name="placement_reservation_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(end__gt=F("start")), name="placement_window_ordered"
            ),
            models.CheckConstraint(condition=Q(gpus__gt=0), name="placement_gpus_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.gpus}x {self.pool_id} {self.start:%Y-%m-%dT%H}Z–{self.end:%Y-%m-%dT%H}Z"

    @property
    def gpu_hours(self) -> int:
        return self.gpus * int((self.end - self.start).total_seconds() // 3600)


class Displacement(models.Model):
    """What an incident did to one reservation for [start, end): ``gpus_taken`` GPUs per hour
    left the incident's pool; ``gpus_moved`` of them were re-placed on other pools (see the
    placements naming the incident) and ``gpus_lost`` were not: those hours are not delivered
    and not billed (an interruption). Written once per reservation and span; the move log of
    the incident."""

    incident = models.ForeignKey(Incident, on_delete=models.PROTECT, related_name="displacements")
    reservation = models.ForeignKey(
        Reservation, on_delete=models.PROTECT, related_name="displacements"
    )
    start = models.DateTimeField()
    end = models.DateTimeField()
    gpus_taken = models.PositiveIntegerField()
    gpus_moved = models.PositiveIntegerField(default=0)
    gpus_lost = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["incident", "start", "reservation_id"]
        indexes = [
            models.Index(fields=["reservation", "start"], name="displacement_reservation_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(end__gt=F("start")), name="displacement_window_ordered"
            ),
            models.CheckConstraint(
                condition=Q(gpus_taken__gt=0, gpus_taken=F("gpus_moved") + F("gpus_lost")),
                name="displacement_gpus_add_up",
            ),
        ]

    def __str__(self) -> str:
        return (
            f"incident {self.incident_id}: {self.reservation_id} "
            f"{self.start:%Y-%m-%dT%H}Z–{self.end:%Y-%m-%dT%H}Z "
            f"moved {self.gpus_moved}, lost {self.gpus_lost}"
        )

    @property
    def hours(self) -> int:
        return int((self.end - self.start).total_seconds() // 3600)

    @property
    def gpu_hours_moved(self) -> int:
        return self.gpus_moved * self.hours

    @property
    def gpu_hours_lost(self) -> int:
        return self.gpus_lost * self.hours


class DisplacementRule(models.Model):
    """The displacement policy as data: when an incident leaves a pool with more GPUs booked
    than it has, reservations lose GPUs in the order these rules give (lowest position
    first; later rules break ties of earlier ones)."""

    class Order(models.TextChoices):
        RECALLABLE_FIRST = "recallable_first", "Recallable (backup) reservations first"
        LATEST_CONFIRMED_FIRST = "latest_confirmed_first", "Most recently confirmed first"
        EARLIEST_CONFIRMED_FIRST = "earliest_confirmed_first", "Earliest confirmed first"
        SMALLEST_FIRST = "smallest_first", "Fewest GPUs first"
        LARGEST_FIRST = "largest_first", "Most GPUs first"

    position = models.PositiveSmallIntegerField(unique=True)
    order = models.CharField(max_length=30, choices=Order.choices, unique=True)

    history = AuditHistory()

    class Meta:
        ordering = ["position"]
        constraints = [
            models.CheckConstraint(
                condition=Q(
                    order__in=[
                        "recallable_first",
                        "latest_confirmed_first",
                        "earliest_confirmed_first",
                        "smallest_first",
                        "largest_first",
                    ]
                ),
                name="displacement_rule_order_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.position}. {self.get_order_display()}"


class IdempotencyRecord(models.Model):
    """Remembers the outcome of a write made under an ``Idempotency-Key`` header, so that a retry
    with the same key and body gets the same reservation (and the API the same status), and a
    reuse of the key with another body is refused. Kept IDEMPOTENCY_KEY_TTL_HOURS after
    ``created_at``: older records are ignored (the key may be used again) and pruned."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    scope = models.CharField(max_length=50, help_text="Which operation, e.g. reservation.create.")
    key = models.CharField(max_length=200)
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the canonical request.")
    reservation = models.ForeignKey(Reservation, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "scope", "key"], name="idem_unique_key"),
        ]
        indexes = [models.Index(fields=["created_at"], name="idem_created_at")]

    def __str__(self) -> str:
        return f"{self.tenant_id}:{self.scope}:{self.key}"
