"""What happened, for tenants: the event outbox, webhook endpoints and their deliveries.

This app sits beside ``core``: capacity, marketplace and billing record events through
``events.services.event_record``; it imports none of them. A tenant is therefore referred to
by its id (``tenant_id``) without a database foreign key: events outlive nothing and are
pruned by age, and tenants are never deleted (their reservations protect them)."""

from django.db import models
from django.db.models import Q

from core.history import AuditHistory


class Event(models.Model):
    """One thing that happened to a tenant's resource, recorded in the transaction that made
    it happen (the transactional outbox): an event exists if and only if the change committed.

    ``id`` is ``evt_`` + a ULID (time-ordered); ``sequence`` is strictly increasing per tenant,
    so clients can order what they receive. Immutable once written (a PostgreSQL trigger
    refuses UPDATE); deleted only by the retention job."""

    id = models.CharField(primary_key=True, max_length=40, editable=False)
    tenant_id = models.BigIntegerField(db_index=False)
    sequence = models.BigIntegerField(help_text="Per tenant, strictly increasing.")
    type = models.CharField(max_length=60)
    data = models.JSONField(help_text="The resource as the API showed it at that moment.")
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["tenant_id", "sequence"]
        indexes = [
            models.Index(fields=["created_at"], name="event_created_idx"),
            models.Index(fields=["tenant_id", "type", "sequence"], name="event_tenant_type_idx"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["tenant_id", "sequence"], name="event_unique_sequence"),
            models.CheckConstraint(condition=Q(sequence__gt=0), name="event_sequence_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.type}"

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding:
            raise ValueError("Events are immutable.")
        super().save(*args, **kwargs)


class EventSequence(models.Model):
    """The last sequence number given to each tenant's events. Incremented with one
    ``INSERT … ON CONFLICT DO UPDATE … RETURNING`` that holds the row until commit, so a
    tenant's events are numbered in commit order and without gaps."""

    tenant_id = models.BigIntegerField(primary_key=True)
    last_sequence = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"tenant {self.tenant_id}: {self.last_sequence}"


class WebhookEndpoint(models.Model):
    """A tenant's URL that receives its events, signed as Standard Webhooks specify.

    ``secret`` signs every delivery; after a rotation ``previous_secret`` signs beside it until
    ``previous_secret_expires_at``, so receivers can switch without losing a message."""

    class DisabledReason(models.TextChoices):
        NONE = "", "—"
        BY_TENANT = "by_tenant", "Disabled by the tenant"
        GONE = "gone", "The endpoint answered 410 Gone"
        FAILING = "failing", "Every delivery failed for too long"
        BY_OPERATOR = "by_operator", "Disabled by an operator"

    tenant_id = models.BigIntegerField(db_index=True)
    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=500, blank=True)
    event_types = models.JSONField(
        default=list, blank=True, help_text="Event types sent here; empty means all."
    )
    enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(
        max_length=20, choices=DisabledReason.choices, blank=True, default=""
    )
    disabled_at = models.DateTimeField(null=True, blank=True)
    secret = models.CharField(max_length=100)
    previous_secret = models.CharField(max_length=100, blank=True)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    failing_since = models.DateTimeField(
        null=True, blank=True, help_text="First failed attempt since the last success."
    )
    last_success_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # Never the signing secrets.
    history = AuditHistory(excluded_fields=["secret", "previous_secret"])

    class Meta:
        ordering = ["tenant_id", "created_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(enabled=True, disabled_reason="") | Q(enabled=False),
                name="endpoint_enabled_has_no_reason",
            ),
        ]

    def __str__(self) -> str:
        return self.url


class Delivery(models.Model):
    """One event to one endpoint: created with the event (same transaction), then sent by the
    delivery workers until the endpoint answers 2xx or the retry schedule runs out.

    A worker claims a due delivery by moving ``next_attempt_at`` past a short lease before it
    sends; if it dies mid-send, the delivery is due again when the lease ends and is sent with
    the same ``webhook-id`` (the event id), so receivers can de-duplicate."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    tenant_id = models.BigIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField()
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "deliveries"
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status="pending"),
                name="delivery_due_idx",
            ),
            models.Index(fields=["endpoint", "created_at"], name="delivery_endpoint_idx"),
            models.Index(fields=["event"], name="delivery_event_idx"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["event", "endpoint"], name="delivery_unique_event"),
            models.CheckConstraint(
                condition=~Q(status="pending") | Q(next_attempt_at__isnull=False),
                name="delivery_pending_is_scheduled",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["pending", "succeeded", "failed", "cancelled"]),
                name="delivery_status_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} → {self.endpoint_id} ({self.status})"


class DeliveryAttempt(models.Model):
    """One HTTP request of a delivery: what the endpoint answered, and how fast."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempts_made")
    attempted_at = models.DateTimeField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField()
    response_body = models.CharField(max_length=500, blank=True, help_text="First bytes.")
    error = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["delivery", "attempted_at", "id"]
        indexes = [models.Index(fields=["delivery", "attempted_at"], name="attempt_delivery_idx")]

    def __str__(self) -> str:
        return f"{self.delivery_id} @ {self.attempted_at:%Y-%m-%dT%H:%M:%S}: {self.status_code}"

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300
