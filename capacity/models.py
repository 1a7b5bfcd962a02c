"""The supply side: who we rent GPUs from, where, which GPUs, and how many of them we can sell.

Invariants that must hold whatever code writes the rows are database constraints here."""

from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import F, Q, Value
from django.db.models.functions import Greatest

from core.history import AuditHistory
from core.money import CURRENCY_CHOICES


class Provider(models.Model):
    class Kind(models.TextChoices):
        HYPERSCALER = "hyperscaler", "Hyperscaler"
        NEOCLOUD = "neocloud", "Neocloud"
        OWNED = "owned", "Owned data centre"

    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=50, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    website = models.URLField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = AuditHistory()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=["hyperscaler", "neocloud", "owned"]),
                name="provider_kind_valid",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Region(models.Model):
    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="regions")
    code = models.CharField(max_length=50, help_text="The provider's own code, e.g. us-east-1.")
    name = models.CharField(max_length=100)
    country = models.CharField(max_length=2, help_text="ISO 3166-1 alpha-2, e.g. US.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = AuditHistory()

    class Meta:
        ordering = ["provider__name", "code"]
        constraints = [
            models.UniqueConstraint(fields=["provider", "code"], name="region_unique_code"),
            models.CheckConstraint(
                condition=Q(country__regex=r"^[A-Z]{2}$"), name="region_country_iso2"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider.slug}/{self.code}"


class GpuModel(models.Model):
    class Vendor(models.TextChoices):
        NVIDIA = "nvidia", "NVIDIA"
        AMD = "amd", "AMD"
        INTEL = "intel", "Intel"

    slug = models.SlugField(max_length=50, unique=True, help_text="e.g. h100-sxm-80gb")
    vendor = models.CharField(max_length=20, choices=Vendor.choices)
    name = models.CharField(max_length=100)
    memory_gb = models.PositiveIntegerField(validators=[MinValueValidator(1)])
    interconnect = models.CharField(max_length=100, blank=True, help_text="e.g. NVLink 4")
    architecture = models.CharField(max_length=50, blank=True, help_text="e.g. Hopper")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = AuditHistory()

    class Meta:
        ordering = ["vendor", "name"]
        verbose_name = "GPU model"
        constraints = [
            models.CheckConstraint(condition=Q(memory_gb__gt=0), name="gpumodel_memory_positive"),
        ]

    def __str__(self) -> str:
        return self.name


class CapacityPool(models.Model):
    """GPUs of one model in one provider region, sold in whole nodes.

    ``total_gpus`` is derived by the database (``gpus_per_node * node_count``) so it can never
    disagree with the node figures."""

    class Tier(models.TextChoices):
        PRIMARY = "primary", "Primary"
        BACKUP = "backup", "Backup"

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        DRAINING = "draining", "Draining"
        RETIRED = "retired", "Retired"

    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200, blank=True)
    region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="pools")
    gpu_model = models.ForeignKey(GpuModel, on_delete=models.PROTECT, related_name="pools")
    gpus_per_node = models.PositiveSmallIntegerField()
    node_count = models.PositiveIntegerField()
    total_gpus = models.GeneratedField(
        expression=F("gpus_per_node") * F("node_count"),
        output_field=models.IntegerField(),
        db_persist=True,
    )
    reserved_gpus = models.PositiveIntegerField(
        default=0, help_text="Operator hold-back: GPUs never offered to tenants."
    )
    allow_partial_nodes = models.BooleanField(
        default=False, help_text="Sell single GPUs instead of whole nodes."
    )
    available_from = models.DateTimeField(help_text="Start of the provider contract (UTC).")
    available_until = models.DateTimeField(help_text="End of the provider contract (UTC).")
    currency = models.CharField(
        max_length=3,
        choices=CURRENCY_CHOICES,
        default="USD",
        help_text="The cost currency: what the provider is paid in. List prices to tenants are "
        "in the price book, per currency.",
    )
    cost_per_gpu_hour = models.DecimalField(
        max_digits=12,
        decimal_places=4,
        help_text="What we pay the provider now; earlier rates are kept in the cost history.",
    )
    tier = models.CharField(
        max_length=10,
        choices=Tier.choices,
        default=Tier.PRIMARY,
        help_text="Backup capacity is sold as recallable: the owner may take it back.",
    )
    recall_notice_hours = models.PositiveIntegerField(
        default=2, help_text="Backup tier: the notice tenants get before a recall."
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    external_id = models.CharField(
        max_length=200, blank=True, help_text="The provider catalogue's id, for inventory sync."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # total_gpus is generated by the database from the node figures, which are kept.
    history = AuditHistory(excluded_fields=["total_gpus"])

    class Meta:
        ordering = ["slug"]
        indexes = [
            models.Index(fields=["gpu_model", "status"], name="pool_model_status_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(gpus_per_node__gt=0), name="pool_gpus_per_node_positive"
            ),
            models.CheckConstraint(condition=Q(node_count__gt=0), name="pool_node_count_positive"),
            models.CheckConstraint(
                condition=Q(reserved_gpus__gte=0), name="pool_reserved_nonnegative"
            ),
            models.CheckConstraint(
                condition=Q(reserved_gpus__lte=F("gpus_per_node") * F("node_count")),
                name="pool_reserved_within_total",
            ),
            models.CheckConstraint(
                condition=Q(available_until__gt=F("available_from")), name="pool_window_ordered"
            ),
            models.CheckConstraint(
                condition=Q(cost_per_gpu_hour__gte=0), name="pool_cost_nonnegative"
            ),
            models.CheckConstraint(
                condition=Q(tier__in=["primary", "backup"]), name="pool_tier_valid"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["active", "draining", "retired"]), name="pool_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.slug

    @property
    def sellable_gpus(self) -> int:
        """GPUs offered to tenants before maintenance: total minus the operator hold-back."""
        return self.gpus_per_node * self.node_count - self.reserved_gpus

    @property
    def booking_step(self) -> int:
        """Bookings come in multiples of this many GPUs (Placement's ``step_size``)."""
        return 1 if self.allow_partial_nodes else self.gpus_per_node

    @property
    def recallable(self) -> bool:
        return self.tier == self.Tier.BACKUP


class PoolCostRate(models.Model):
    """What we pay the provider per GPU-hour from ``effective_from`` on (in the pool's
    currency): the cost of an hour is the rate in force at that hour, whenever it is metered.
    ``CapacityPool.cost_per_gpu_hour`` is the rate in force now; changing it through
    ``pool_update`` adds a row from the hour in progress on."""

    pool = models.ForeignKey(CapacityPool, on_delete=models.CASCADE, related_name="cost_rates")
    effective_from = models.DateTimeField()
    cost_per_gpu_hour = models.DecimalField(max_digits=12, decimal_places=4)

    history = AuditHistory()

    class Meta:
        ordering = ["pool", "-effective_from"]
        constraints = [
            models.UniqueConstraint(fields=["pool", "effective_from"], name="cost_rate_unique"),
            models.CheckConstraint(
                condition=Q(cost_per_gpu_hour__gte=0), name="cost_rate_nonnegative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.pool_id} from {self.effective_from:%Y-%m-%d %H:%M}: {self.cost_per_gpu_hour}"


class Incident(models.Model):
    """GPUs of a pool out of service for whole UTC hours: a failure, a recall of backup capacity,
    a provider taking servers back, or planned maintenance.

    ``end`` is empty while the incident is open: the GPUs are out from ``start`` until it is
    closed. Recording an incident never fails because GPUs are booked: the capacity ledger
    lowers ``capacity`` at once and marks the booked GPUs that no longer fit as ``excess``;
    the marketplace then moves or shrinks those reservations (``displaced_at`` once done)."""

    class Kind(models.TextChoices):
        OUTAGE = "outage", "Outage"
        RECALL = "recall", "Backup recall"
        PROVIDER_RECLAIM = "provider_reclaim", "Provider reclaim"
        MAINTENANCE = "maintenance", "Planned maintenance"

    pool = models.ForeignKey(CapacityPool, on_delete=models.PROTECT, related_name="incidents")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    gpus = models.PositiveIntegerField(help_text="GPUs out of service during the incident.")
    start = models.DateTimeField(help_text="First hour out (UTC); may lie in the past.")
    end = models.DateTimeField(
        null=True,
        blank=True,
        help_text="First hour back (UTC); empty while the incident is open. Equal to the start "
        "once withdrawn before it began.",
    )
    reason = models.CharField(max_length=500, blank=True)
    recorded_by = models.CharField(max_length=200, blank=True)
    short_notice = models.BooleanField(
        default=False,
        help_text="A recall recorded with less than the pool's recall notice before it starts.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    displaced_at = models.DateTimeField(
        null=True, blank=True, help_text="When the reservations it displaced were all dealt with."
    )

    history = AuditHistory()

    class Meta:
        ordering = ["-start", "pk"]
        indexes = [
            models.Index(fields=["pool", "start", "end"], name="incident_pool_window_idx"),
            models.Index(
                fields=["start"],
                condition=Q(displaced_at__isnull=True),
                name="incident_pending_idx",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(end__isnull=True) | Q(end__gte=F("start")),
                name="incident_window_ordered",
            ),
            models.CheckConstraint(condition=Q(gpus__gt=0), name="incident_gpus_positive"),
            models.CheckConstraint(
                condition=Q(kind__in=["outage", "recall", "provider_reclaim", "maintenance"]),
                name="incident_kind_valid",
            ),
        ]

    def __str__(self) -> str:
        until = f"{self.end:%Y-%m-%d %H:%M}" if self.end else "open"
        return f"#{self.pk} {self.kind} on {self.pool.slug}, {self.start:%Y-%m-%d %H:%M}–{until}"

    @property
    def is_open(self) -> bool:
        return self.end is None

    def covers(self, hour) -> bool:
        return self.start <= hour and (self.end is None or hour < self.end)


class PoolHour(models.Model):
    """The capacity ledger: one row per pool and UTC hour that anyone has tried to book.

    ``capacity`` is what may be sold in that hour (total − hold-back − incidents, zero outside
    the contract window); ``booked`` is the sum of ``gpus`` of the reservation placements that
    cover the hour (live ones, and the delivered hours of finished or cancelled ones).

    ``excess`` is what an incident left booked beyond capacity, waiting to be moved: always
    ``max(0, booked - capacity)`` (a CHECK), set when capacity changes and falling as GPUs are
    released. A claim adds to ``booked`` only, so in an hour over capacity it breaks that
    CHECK: no booking lands there. The CHECK constraints make overbooking impossible whatever
    code writes the row; rows are created lazily and locked in (pool, hour) order (see
    capacity/locks.py)."""

    pool = models.ForeignKey(CapacityPool, on_delete=models.CASCADE, related_name="hours")
    hour = models.DateTimeField()
    capacity = models.IntegerField()
    booked = models.IntegerField(default=0)
    excess = models.IntegerField(
        default=0, help_text="Booked GPUs beyond capacity after an incident, not yet moved."
    )

    class Meta:
        ordering = ["pool", "hour"]
        indexes = [
            models.Index(
                fields=["pool", "hour"], condition=Q(excess__gt=0), name="poolhour_excess_idx"
            ),
            # Searches read free GPUs (capacity − booked) of many pools over a span from the
            # index alone (index-only scans), not from a heap page per ledger row.
            models.Index(
                fields=["pool", "hour"], include=["capacity", "booked"], name="poolhour_free_idx"
            ),
        ]
        constraints = [
            models.UniqueConstraint(fields=["pool", "hour"], name="poolhour_unique_hour"),
            models.CheckConstraint(
                condition=Q(capacity__gte=0), name="poolhour_capacity_nonnegative"
            ),
            models.CheckConstraint(condition=Q(booked__gte=0), name="poolhour_booked_nonnegative"),
            # Booked beyond capacity only as the recorded excess of an incident: a claim adds
            # to ``booked`` alone, so in an hour at or over capacity it breaks this; a release
            # that does not pay the excess off breaks it too.
            models.CheckConstraint(
                condition=Q(excess=Greatest(Value(0), F("booked") - F("capacity"))),
                name="poolhour_never_overbooked",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.pool_id}@{self.hour:%Y-%m-%dT%H}: {self.booked}/{self.capacity}"

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.booked)
