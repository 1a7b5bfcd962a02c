from django.db import migrations


class Migration(migrations.Migration):
    """The tenant ledger now lives in billing (billing 0006 renamed the table)."""

    dependencies = [("marketplace", "0007_incident_schedule"), ("billing", "0006_ledgerentry")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="LedgerEntry")], database_operations=[]
        )
    ]
