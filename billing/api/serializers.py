"""Shapes of the tenant billing API (no logic). Money is a decimal string."""

from rest_framework import serializers

from billing.models import Invoice


class InvoiceLineSerializer(serializers.Serializer):
    kind = serializers.CharField()
    reservation = serializers.UUIDField(source="reservation_id")
    description = serializers.CharField()
    gpu_model = serializers.CharField()
    pool = serializers.CharField()
    gpus = serializers.IntegerField()
    hours = serializers.IntegerField(help_text="Billed wall-clock hours.")
    gpu_hours = serializers.DecimalField(max_digits=14, decimal_places=4)
    list_unit_price = serializers.DecimalField(max_digits=12, decimal_places=4)
    unit_price = serializers.DecimalField(
        max_digits=12, decimal_places=4, help_text="Per GPU-hour, locked at booking."
    )
    gross_amount = serializers.DecimalField(max_digits=14, decimal_places=2)
    discount_amount = serializers.DecimalField(max_digits=14, decimal_places=2)
    amount = serializers.DecimalField(
        max_digits=14, decimal_places=2, help_text="Rounded half up to the minor unit."
    )
    first_hour = serializers.DateTimeField()
    last_hour = serializers.DateTimeField()


class CreditNoteSerializer(serializers.Serializer):
    number = serializers.CharField()
    amount = serializers.DecimalField(max_digits=14, decimal_places=2)
    reason = serializers.CharField()
    memo = serializers.CharField()
    issued_at = serializers.DateTimeField()


class InvoiceSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    number = serializers.CharField(allow_null=True, help_text="Null while the invoice is a draft.")
    status = serializers.ChoiceField(choices=Invoice.Status.choices)
    currency = serializers.CharField()
    period_start = serializers.DateTimeField()
    period_end = serializers.DateTimeField()
    subtotal = serializers.DecimalField(
        max_digits=14, decimal_places=2, help_text="Lines at list price."
    )
    discount_total = serializers.DecimalField(max_digits=14, decimal_places=2)
    tax_rate_percent = serializers.DecimalField(max_digits=5, decimal_places=2)
    tax_amount = serializers.DecimalField(max_digits=14, decimal_places=2)
    total = serializers.DecimalField(max_digits=14, decimal_places=2)
    prepaid_applied = serializers.DecimalField(
        max_digits=14,
        decimal_places=2,
        help_text="Prepaid balance that covered part of the total when the invoice was issued.",
    )
    amount_paid = serializers.DecimalField(
        max_digits=14,
        decimal_places=2,
        help_text="Received after issue: bank transfers, and prepaid top-ups applied to the "
        "invoice (a top-up settles unpaid invoices oldest due date first).",
    )
    amount_credited = serializers.DecimalField(
        max_digits=14, decimal_places=2, help_text="Given back by credit notes."
    )
    amount_due = serializers.DecimalField(
        max_digits=14,
        decimal_places=2,
        help_text="total - prepaid_applied - amount_paid - amount_credited, never negative. "
        "The invoice is paid when it reaches 0.",
    )
    finalized_at = serializers.DateTimeField(allow_null=True)
    due_at = serializers.DateTimeField(
        allow_null=True,
        help_text="The due date: payment is due by this instant (issue time + the tenant's "
        "payment terms, net 30 days by default). Null while the invoice is a draft.",
    )
    overdue = serializers.BooleanField(
        help_text="True when the invoice is finalized, something is still due and due_at has "
        "passed."
    )
    paid_at = serializers.DateTimeField(allow_null=True)


class InvoiceDetailSerializer(InvoiceSerializer):
    lines = InvoiceLineSerializer(many=True)
    credit_notes = CreditNoteSerializer(many=True)


class UsageRowSerializer(serializers.Serializer):
    day = serializers.DateField()
    reservation = serializers.UUIDField(source="reservation_id")
    pool = serializers.CharField(source="pool__slug")
    gpu_model = serializers.CharField(source="pool__gpu_model__slug")
    hours = serializers.IntegerField()
    gpu_hours = serializers.DecimalField(max_digits=14, decimal_places=4)
    unit_price = serializers.DecimalField(max_digits=12, decimal_places=4)
    amount = serializers.DecimalField(
        max_digits=16,
        decimal_places=4,
        help_text="Metered, four decimals; invoices round each line to the minor unit.",
    )
    currency = serializers.CharField()


class BalanceSerializer(serializers.Serializer):
    currency = serializers.CharField()
    ledger_balance = serializers.DecimalField(
        max_digits=14, decimal_places=2, help_text="Positive: prepaid credit; negative: owed."
    )
    credit_limit = serializers.DecimalField(max_digits=14, decimal_places=2)
    uninvoiced_commitments = serializers.DecimalField(
        max_digits=14,
        decimal_places=2,
        help_text="Booked reservations (and fees) not yet on a finalized invoice.",
    )
    uninvoiced_tax = serializers.DecimalField(
        max_digits=14,
        decimal_places=2,
        help_text="The tax invoices will add to uninvoiced_commitments.",
    )
    credit_available = serializers.DecimalField(
        max_digits=14,
        decimal_places=2,
        help_text="What new bookings may still cost before tax: (credit_limit + ledger_balance "
        "- uninvoiced_commitments - uninvoiced_tax) / (1 + tax rate), rounded down. A booking "
        "is checked with the tax its invoice will add.",
    )
    outstanding_invoices = serializers.DecimalField(
        max_digits=14,
        decimal_places=2,
        help_text="Still due on finalized invoices in `currency` (their amount_due summed).",
    )
    overdue_invoices = serializers.DecimalField(
        max_digits=14,
        decimal_places=2,
        help_text="The part of outstanding_invoices on invoices past their due date.",
    )
