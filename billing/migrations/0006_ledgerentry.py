import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0005_default_sla_rules'),
        ('marketplace', '0007_incident_schedule'),
    ]

    # The tenant ledger moves from marketplace to billing: the table is renamed, its rows,
    # constraints and append-only trigger stay; marketplace drops it from its state after this.
    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    "ALTER TABLE marketplace_ledgerentry RENAME TO billing_ledgerentry",
                    "ALTER TABLE billing_ledgerentry RENAME TO marketplace_ledgerentry",
                )
            ],
            state_operations=[
        migrations.CreateModel(
            name='LedgerEntry',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.CharField(choices=[('top_up', 'Prepaid top-up'), ('invoice', 'Invoice charge'), ('credit_note', 'Credit note'), ('payment', 'Payment'), ('adjustment', 'Adjustment')], max_length=20)),
                ('amount', models.DecimalField(decimal_places=2, help_text='Signed.', max_digits=14)),
                ('currency', models.CharField(choices=[('AUD', 'AUD'), ('CAD', 'CAD'), ('CHF', 'CHF'), ('EUR', 'EUR'), ('GBP', 'GBP'), ('JPY', 'JPY'), ('USD', 'USD')], max_length=3)),
                ('reference', models.CharField(help_text='What caused it, e.g. INV-2026-000123; unique per tenant.', max_length=200)),
                ('memo', models.CharField(blank=True, max_length=500)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('tenant', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='ledger_entries', to='marketplace.tenant')),
            ],
            options={
                'verbose_name_plural': 'ledger entries',
                'ordering': ['tenant', 'created_at', 'id'],
                'constraints': [models.UniqueConstraint(fields=('tenant', 'kind', 'reference'), name='ledger_unique_reference'), models.CheckConstraint(condition=models.Q(('amount', 0), _negated=True), name='ledger_amount_nonzero')],
            },
        ),
            ],
        )
    ]
