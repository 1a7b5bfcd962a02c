from datetime import timedelta

from django.db import migrations

UPDATE = """
    UPDATE billing_invoice AS i
    SET due_at = i.finalized_at + make_interval(days => t.payment_terms_days)
    FROM marketplace_tenant AS t
    WHERE t.id = i.tenant_id AND i.finalized_at IS NOT NULL AND i.due_at IS NULL
"""


def forwards(apps, schema_editor):
    """Invoices issued before due dates existed get one: issue date + the tenant's payment
    terms (net 30 for all of them then). Only this one column of issued invoices is written;
    the immutability trigger is set aside for the statement, in this transaction."""
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "ALTER TABLE billing_invoice DISABLE TRIGGER billing_invoice_immutable"
        )
        schema_editor.execute(UPDATE)
        schema_editor.execute(
            "ALTER TABLE billing_invoice ENABLE TRIGGER billing_invoice_immutable"
        )
        return
    Invoice = apps.get_model("billing", "Invoice")
    for invoice in Invoice.objects.filter(
        finalized_at__isnull=False, due_at__isnull=True
    ).select_related("tenant"):
        Invoice.objects.filter(pk=invoice.pk).update(
            due_at=invoice.finalized_at + timedelta(days=invoice.tenant.payment_terms_days)
        )


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0008_overdue_schedule"),
        ("marketplace", "0011_idempotency_without_http_status"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
