from decimal import Decimal

from django.db import migrations

# Cloud-style tiers: below 99.9 % delivered 10 %, below 99 % 25 %, below 95 % 100 %; a recall
# inside the pool's notice 50 % at least.
DEFAULT_RULES = [
    ("availability", Decimal("99.9"), Decimal("10")),
    ("availability", Decimal("99"), Decimal("25")),
    ("availability", Decimal("95"), Decimal("100")),
    ("short_notice_recall", None, Decimal("50")),
]


def forwards(apps, schema_editor):
    SlaCreditRule = apps.get_model("billing", "SlaCreditRule")
    for kind, below, credit in DEFAULT_RULES:
        SlaCreditRule.objects.get_or_create(
            kind=kind, below_percent=below, defaults={"credit_percent": credit}
        )


class Migration(migrations.Migration):
    dependencies = [("billing", "0004_sla_credits")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
