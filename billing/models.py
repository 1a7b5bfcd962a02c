"""Billing: metered usage, charges, monthly invoices, credit notes and payments.

Money is ``Decimal``: usage rows keep four decimals (a GPU-hour rate has four), documents are
rounded half up to the currency's minor unit per line (``core.money.round_money``), then summed.

Invariants that must hold whatever code writes the rows are database constraints here; the
immutability of finalized documents is also enforced by PostgreSQL triggers (migration 0002)."""

from decimal import Decimal

from django.db import models
from django.db.models import F, Q

from billing.errors import DocumentImmutable
from capacity.models import CapacityPool
from core.history import AuditHistory
from core.money import CURRENCY_CHOICES
from marketplace.models import Reservation, Tenant

ZERO = Decimal("0.00")


class LedgerEntry(models.Model):
    """The tenant's money account, append-only: top-ups and payments add, invoice charges
    subtract, credit notes add back. The balance is always the sum of entries."""

    class Kind(models.TextChoices):
        TOP_UP = "top_up", "Prepaid top-up"
        INVOICE = "invoice", "Invoice charge"
        CREDIT_NOTE = "credit_note", "Credit note"
        PAYMENT = "payment", "Payment"
        ADJUSTMENT = "adjustment", "Adjustment"

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="ledger_entries")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    amount = models.DecimalField(max_digits=14, decimal_places=2, help_text="Signed.")
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    reference = models.CharField(
        max_length=200, help_text="What caused it, e.g. INV-2026-000123; unique per tenant."
    )
    memo = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["tenant", "created_at", "id"]
        verbose_name_plural = "ledger entries"
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "kind", "reference"], name="ledger_unique_reference"
            ),
            models.CheckConstraint(condition=~Q(amount=0), name="ledger_amount_nonzero"),
        ]

    def __str__(self) -> str:
        return f"{self.tenant} {self.kind} {self.amount} {self.currency} ({self.reference})"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            raise ValueError("Ledger entries are append-only; post a correcting entry.")
        super().save(*args, **kwargs)


class MeteringCursor(models.Model):
    """One row (pk 1): how far metering has run. Locked for the whole metering run, so two
    runs never interleave; the unique (reservation, hour) key is what makes a re-run harmless."""

    metered_until = models.DateTimeField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"metered until {self.metered_until}"


class UsageRecord(models.Model):
    """One delivered hour of one reservation's placement: the idempotency key is
    (reservation, hour, pool) — a reservation partly moved by an incident delivers an hour on
    two pools.

    ``amount`` = ``unit_price`` x ``gpus`` and ``provider_cost`` = ``cost_per_gpu_hour`` x
    ``gpus``, both kept at four decimals; invoices round per line. ``invoice`` is the invoice
    that first picked the record up: once set it never changes, so an hour is billed once."""

    # No single-column indexes on reservation and tenant: the unique (reservation, hour) and the
    # (tenant, hour) indexes serve those lookups, and every index costs on the hot paths
    # (metering inserts, invoices claiming rows). ``tenant`` and ``pool`` are copies of the
    # reservation's, written by metering from the reservation row, and carry no database
    # foreign key: the reservation's own (PROTECT) keys already keep both alive, and two more
    # row-by-row checks per record were half the cost of metering a month (bench/billing.py).
    reservation = models.ForeignKey(
        Reservation, on_delete=models.PROTECT, related_name="usage", db_index=False
    )
    tenant = models.ForeignKey(
        Tenant,
        on_delete=models.PROTECT,
        related_name="usage",
        db_index=False,
        db_constraint=False,
    )
    pool = models.ForeignKey(
        CapacityPool, on_delete=models.PROTECT, related_name="usage", db_constraint=False
    )
    hour = models.DateTimeField(help_text="Start of the delivered UTC hour.")
    gpus = models.PositiveIntegerField()
    gpu_hours = models.DecimalField(max_digits=12, decimal_places=4)
    unit_price = models.DecimalField(
        max_digits=12, decimal_places=4, help_text="Per GPU-hour, locked at booking."
    )
    amount = models.DecimalField(max_digits=16, decimal_places=4)
    cost_per_gpu_hour = models.DecimalField(
        max_digits=12, decimal_places=4, help_text="What we pay the provider, at metering time."
    )
    provider_cost = models.DecimalField(max_digits=16, decimal_places=4)
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    invoice = models.ForeignKey(
        "Invoice", on_delete=models.PROTECT, null=True, blank=True, related_name="usage"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["hour", "reservation_id"]
        indexes = [
            # Reports and the tenant usage endpoint read by time.
            models.Index(fields=["hour"], name="usage_hour_idx"),
            models.Index(fields=["tenant", "hour"], name="usage_tenant_hour_idx"),
            # The draft run looks for what no invoice has picked up yet.
            models.Index(
                fields=["tenant", "currency", "hour"],
                condition=Q(invoice__isnull=True),
                name="usage_unclaimed_idx",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["reservation", "hour", "pool"], name="usage_unique_hour"
            ),
            models.CheckConstraint(condition=Q(gpus__gt=0), name="usage_gpus_positive"),
            models.CheckConstraint(
                condition=Q(
                    gpu_hours__gte=0,
                    unit_price__gte=0,
                    amount__gte=0,
                    cost_per_gpu_hour__gte=0,
                    provider_cost__gte=0,
                ),
                name="usage_money_nonnegative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.reservation_id} @ {self.hour:%Y-%m-%dT%H}Z: {self.amount} {self.currency}"


class Charge(models.Model):
    """A one-off charge on a reservation, billed like usage: today only cancellation fees."""

    class Kind(models.TextChoices):
        CANCELLATION_FEE = "cancellation_fee", "Cancellation fee"

    reservation = models.ForeignKey(Reservation, on_delete=models.PROTECT, related_name="charges")
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="charges")
    kind = models.CharField(max_length=30, choices=Kind.choices)
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    incurred_at = models.DateTimeField()
    invoice = models.ForeignKey(
        "Invoice", on_delete=models.PROTECT, null=True, blank=True, related_name="charges"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["incurred_at"]
        constraints = [
            models.UniqueConstraint(fields=["reservation", "kind"], name="charge_unique_kind"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="charge_amount_positive"),
            models.CheckConstraint(
                condition=Q(kind__in=["cancellation_fee"]), name="charge_kind_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.amount} {self.currency} ({self.reservation_id})"


class DocumentSequence(models.Model):
    """Gapless numbering per series and year. The row is locked FOR UPDATE by the transaction
    that issues a number and commits or rolls back with the document, so no number is lost."""

    series = models.CharField(max_length=10, help_text="INV or CN.")
    year = models.PositiveSmallIntegerField()
    last_number = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["series", "year"], name="sequence_unique_year"),
        ]

    def __str__(self) -> str:
        return f"{self.series}-{self.year}: {self.last_number}"


class ImmutableAfterIssue(models.Model):
    """Refuses ``save()`` once the stored row is issued (not a draft), except the fields named in
    ``MUTABLE_AFTER_ISSUE`` with ``update_fields``. A guard for callers that go through the ORM;
    the PostgreSQL trigger is the one that holds for every writer."""

    MUTABLE_AFTER_ISSUE: frozenset[str] = frozenset()

    class Meta:
        abstract = True

    def save(self, *args, **kwargs) -> None:
        if getattr(self, "_stored_issued", False):
            update_fields = kwargs.get("update_fields")
            if update_fields is None or not set(update_fields) <= self.MUTABLE_AFTER_ISSUE:
                raise DocumentImmutable(
                    f"{self._meta.verbose_name.capitalize()} {self} is issued and cannot be "
                    "changed; issue a credit note or void it."
                )
        super().save(*args, **kwargs)
        self._stored_issued = self._is_issued()

    def delete(self, *args, **kwargs):
        if getattr(self, "_stored_issued", False):
            raise DocumentImmutable(f"{self._meta.verbose_name.capitalize()} {self} is issued.")
        return super().delete(*args, **kwargs)

    @classmethod
    def from_db(cls, db, field_names, values):
        instance = super().from_db(db, field_names, values)
        instance._stored_issued = instance._is_issued()
        return instance

    def _is_issued(self) -> bool:
        return True


class Invoice(ImmutableAfterIssue):
    """One invoice per tenant, currency and calendar month (UTC).

    ``draft`` while the month runs and during the grace period (lines rebuilt from usage on
    every run), then ``finalized`` with a gapless number, or straight to ``paid`` when prepaid
    credit covers it. After that only ``status`` (to ``paid`` or ``void``) and its timestamps
    may change: corrections are credit notes.

    total = subtotal (at list prices) - discount_total + tax_amount (a CHECK constraint on
    PostgreSQL, added in migration 0002: SQLite compares decimals as floats)."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        FINALIZED = "finalized", "Finalized"
        PAID = "paid", "Paid"
        VOID = "void", "Void"

    MUTABLE_AFTER_ISSUE = frozenset({"status", "paid_at", "voided_at", "void_reason"})

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="invoices")
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    period_start = models.DateTimeField(help_text="First instant of the month (UTC).")
    period_end = models.DateTimeField(help_text="First instant of the next month (UTC).")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    number = models.CharField(max_length=20, unique=True, null=True, blank=True)
    subtotal = models.DecimalField(
        max_digits=14, decimal_places=2, default=ZERO, help_text="Sum of lines at list price."
    )
    discount_total = models.DecimalField(max_digits=14, decimal_places=2, default=ZERO)
    tax_rate_percent = models.DecimalField(max_digits=5, decimal_places=2, default=ZERO)
    tax_amount = models.DecimalField(max_digits=14, decimal_places=2, default=ZERO)
    total = models.DecimalField(max_digits=14, decimal_places=2, default=ZERO)
    prepaid_applied = models.DecimalField(
        max_digits=14,
        decimal_places=2,
        default=ZERO,
        help_text="Prepaid balance that covered part of the total at finalization.",
    )
    built_at = models.DateTimeField(null=True, blank=True)
    finalized_at = models.DateTimeField(null=True, blank=True)
    due_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Payment is due by then: issued + the tenant's payment terms.",
    )
    paid_at = models.DateTimeField(null=True, blank=True)
    voided_at = models.DateTimeField(null=True, blank=True)
    void_reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    history = AuditHistory()

    class Meta:
        ordering = ["-period_start", "tenant_id"]
        indexes = [
            models.Index(fields=["status", "period_end"], name="invoice_status_period_idx"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "currency", "period_start"], name="invoice_unique_period"
            ),
            models.CheckConstraint(
                condition=Q(period_end__gt=F("period_start")), name="invoice_period_ordered"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["draft", "finalized", "paid", "void"]),
                name="invoice_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(status="draft", number__isnull=True)
                | (~Q(status="draft") & Q(number__isnull=False, finalized_at__isnull=False)),
                name="invoice_number_iff_issued",
            ),
            models.CheckConstraint(
                condition=Q(
                    subtotal__gte=0,
                    discount_total__gte=0,
                    tax_amount__gte=0,
                    total__gte=0,
                    prepaid_applied__gte=0,
                    prepaid_applied__lte=F("total"),
                ),
                name="invoice_money_nonnegative",
            ),
        ]

    def __str__(self) -> str:
        label = self.number or f"draft {self.period_start:%Y-%m}"
        return f"{label} ({self.tenant_id})"

    def _is_issued(self) -> bool:
        return self.status != self.Status.DRAFT

    @property
    def is_issued(self) -> bool:
        return self._is_issued()


class InvoiceLine(models.Model):
    """One reservation's usage (or one charge) on an invoice, rounded half up to the minor unit.

    amount = round(cumulative usage amount up to this invoice) - what earlier invoices billed
    (invoicing.py); gross_amount likewise at list price x GPU-hours;
    discount_amount = gross_amount - amount (commitment and negotiated discounts; a CHECK
    constraint on PostgreSQL, see migration 0002)."""

    class Kind(models.TextChoices):
        USAGE = "usage", "GPU usage"
        CANCELLATION_FEE = "cancellation_fee", "Cancellation fee"

    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="lines")
    kind = models.CharField(max_length=30, choices=Kind.choices, default=Kind.USAGE)
    reservation = models.ForeignKey(Reservation, on_delete=models.PROTECT, related_name="+")
    description = models.CharField(max_length=300)
    gpu_model = models.CharField(max_length=100, blank=True)
    pool = models.CharField(max_length=100, blank=True)
    gpus = models.PositiveIntegerField(default=0)
    hours = models.PositiveIntegerField(default=0, help_text="Billed wall-clock hours.")
    gpu_hours = models.DecimalField(max_digits=14, decimal_places=4, default=Decimal(0))
    list_unit_price = models.DecimalField(max_digits=12, decimal_places=4, default=Decimal(0))
    unit_price = models.DecimalField(max_digits=12, decimal_places=4, default=Decimal(0))
    gross_amount = models.DecimalField(max_digits=14, decimal_places=2)
    discount_amount = models.DecimalField(max_digits=14, decimal_places=2, default=ZERO)
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    first_hour = models.DateTimeField(null=True, blank=True)
    last_hour = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["invoice", "first_hour", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["invoice", "reservation", "kind"], name="line_unique_reservation"
            ),
            models.CheckConstraint(
                condition=Q(amount__gte=0, discount_amount__gte=0), name="line_money_nonnegative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.description}: {self.amount}"

    def save(self, *args, **kwargs) -> None:
        if Invoice.objects.filter(pk=self.invoice_id).exclude(status=Invoice.Status.DRAFT).exists():
            raise DocumentImmutable("Lines of an issued invoice cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        if Invoice.objects.filter(pk=self.invoice_id).exclude(status=Invoice.Status.DRAFT).exists():
            raise DocumentImmutable("Lines of an issued invoice cannot be deleted.")
        return super().delete(*args, **kwargs)


class CreditNote(ImmutableAfterIssue):
    """A correction of a finalized invoice (refund, goodwill, SLA credit), numbered like
    invoices in its own gapless series (CN-2026-000001). Never more than the invoice total
    minus what earlier credit notes already gave back."""

    class Reason(models.TextChoices):
        REFUND = "refund", "Refund"
        GOODWILL = "goodwill", "Goodwill"
        SLA = "sla", "SLA credit"
        CORRECTION = "correction", "Billing correction"

    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="credit_notes")
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="credit_notes")
    number = models.CharField(max_length=20, unique=True)
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    reason = models.CharField(max_length=20, choices=Reason.choices)
    memo = models.CharField(max_length=500, blank=True)
    issued_at = models.DateTimeField()
    issued_by = models.CharField(max_length=200, blank=True)

    history = AuditHistory()

    class Meta:
        ordering = ["-issued_at"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="credit_note_amount_positive"),
        ]

    def __str__(self) -> str:
        return self.number


class Payment(ImmutableAfterIssue):
    """Money received against an invoice, recorded by an operator (no card gateway), or
    prepaid credit applied to it: a top-up settles unpaid invoices oldest first.
    ``reference`` is the bank transfer's reference (or the top-up's and the invoice's): unique
    per tenant, so recording the same transfer twice changes nothing. Only a transfer posts to
    the ledger; prepaid credit is already there, as the top-up."""

    class Method(models.TextChoices):
        TRANSFER = "transfer", "Bank transfer"
        PREPAID_CREDIT = "prepaid_credit", "Prepaid credit applied"

    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="payments")
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="payments")
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    reference = models.CharField(max_length=200)
    method = models.CharField(max_length=20, choices=Method.choices, default=Method.TRANSFER)
    received_at = models.DateTimeField()
    recorded_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    history = AuditHistory()

    class Meta:
        ordering = ["-received_at"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "reference"], name="payment_unique_ref"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="payment_amount_positive"),
            models.CheckConstraint(
                condition=Q(method__in=["transfer", "prepaid_credit"]),
                name="payment_method_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.amount} {self.currency} ({self.reference})"


class SlaCreditRule(models.Model):
    """The SLA policy as data. ``availability`` rules: a reservation whose delivered share of
    promised GPU-hours in a month is below ``below_percent`` gets ``credit_percent`` of that
    month's charge for it (the lowest tier it falls under wins). ``short_notice_recall``: a
    reservation displaced by a recall recorded inside the pool's notice gets at least
    ``credit_percent``. Re-placed hours count as delivered."""

    class Kind(models.TextChoices):
        AVAILABILITY = "availability", "Availability below"
        SHORT_NOTICE_RECALL = "short_notice_recall", "Recall inside the notice"

    kind = models.CharField(max_length=30, choices=Kind.choices)
    below_percent = models.DecimalField(
        max_digits=6,
        decimal_places=3,
        null=True,
        blank=True,
        help_text="Availability rules: delivered / promised GPU-hours below this, in percent.",
    )
    credit_percent = models.DecimalField(
        max_digits=5, decimal_places=2, help_text="Of the month's charge for the reservation."
    )

    history = AuditHistory()

    class Meta:
        ordering = ["kind", "-below_percent"]
        verbose_name = "SLA credit rule"
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=["availability", "short_notice_recall"]),
                name="sla_rule_kind_valid",
            ),
            models.CheckConstraint(
                condition=Q(kind="availability", below_percent__gt=0, below_percent__lte=100)
                | Q(kind="short_notice_recall", below_percent__isnull=True),
                name="sla_rule_threshold_fits_kind",
            ),
            models.CheckConstraint(
                condition=Q(credit_percent__gt=0, credit_percent__lte=100),
                name="sla_rule_credit_range",
            ),
            models.UniqueConstraint(
                fields=["kind", "below_percent"], name="sla_rule_unique_threshold"
            ),
        ]

    def __str__(self) -> str:
        if self.kind == self.Kind.AVAILABILITY:
            return f"below {self.below_percent} %: {self.credit_percent} % credit"
        return f"recall inside the notice: {self.credit_percent} % credit"


class SlaCredit(models.Model):
    """One reservation's SLA credit for one month: what was promised and delivered, the rule's
    percent and the amount, on the credit note that gave it. Unique per reservation and
    month, so closing a month twice credits nothing twice."""

    reservation = models.ForeignKey(Reservation, on_delete=models.PROTECT, related_name="+")
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="sla_credits")
    period_start = models.DateTimeField()
    incident = models.ForeignKey(
        "capacity.Incident", on_delete=models.PROTECT, related_name="sla_credits"
    )
    promised_gpu_hours = models.PositiveIntegerField()
    delivered_gpu_hours = models.PositiveIntegerField()
    credit_percent = models.DecimalField(max_digits=5, decimal_places=2)
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    credit_note = models.ForeignKey(
        "CreditNote", on_delete=models.PROTECT, null=True, blank=True, related_name="sla_credits"
    )
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-period_start", "reservation_id"]
        verbose_name = "SLA credit"
        constraints = [
            models.UniqueConstraint(
                fields=["reservation", "period_start"], name="sla_credit_unique_month"
            ),
            models.CheckConstraint(
                condition=Q(delivered_gpu_hours__lte=F("promised_gpu_hours")),
                name="sla_credit_delivered_within_promised",
            ),
            models.CheckConstraint(condition=Q(amount__gte=0), name="sla_credit_nonnegative"),
        ]

    def __str__(self) -> str:
        return f"{self.reservation_id} {self.period_start:%Y-%m}: {self.amount} {self.currency}"


class UsageCorrection(models.Model):
    """Billing has applied one displacement to the usage: hours metered before an incident
    took them away are dropped from drafts, or credited when already on an issued invoice."""

    displacement = models.OneToOneField(
        "marketplace.Displacement", on_delete=models.PROTECT, related_name="usage_correction"
    )
    usage_removed = models.PositiveIntegerField(default=0)
    credit_note = models.ForeignKey(
        "CreditNote", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"displacement {self.displacement_id}: {self.usage_removed} usage rows"


class FxRate(models.Model):
    """What one unit of ``currency`` is worth in the reporting currency (setting
    REPORTING_CURRENCY) from ``effective_from`` on, kept by operators. Reports convert each
    amount at the rate in force on its date and say which rates they used."""

    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    effective_from = models.DateField()
    rate = models.DecimalField(
        max_digits=18, decimal_places=8, help_text="Reporting-currency units per unit."
    )
    source = models.CharField(max_length=200, blank=True, help_text="e.g. ECB reference rate.")
    created_at = models.DateTimeField(auto_now_add=True)

    history = AuditHistory()

    class Meta:
        ordering = ["currency", "-effective_from"]
        verbose_name = "FX rate"
        constraints = [
            models.UniqueConstraint(fields=["currency", "effective_from"], name="fx_rate_unique"),
            models.CheckConstraint(condition=Q(rate__gt=0), name="fx_rate_positive"),
        ]

    def __str__(self) -> str:
        return f"1 {self.currency} = {self.rate} from {self.effective_from}"


class TenantAccount(Tenant):
    """The tenant seen from billing: balance, credit, top-ups (admin only)."""

    class Meta:
        proxy = True
        verbose_name = "tenant account"


class RevenueReport(UsageRecord):
    """Admin entry point for the operator reports (revenue, margin, utilisation)."""

    class Meta:
        proxy = True
        verbose_name = "revenue & utilisation report"
        verbose_name_plural = "revenue & utilisation reports"
