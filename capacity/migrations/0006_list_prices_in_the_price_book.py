from decimal import Decimal

from django.db import migrations, models


def backwards(apps, schema_editor):
    """Going back: a pool's list price is its price-book price in its own currency (0 where
    the book has none)."""
    CapacityPool = apps.get_model("capacity", "CapacityPool")
    PoolPrice = apps.get_model("marketplace", "PoolPrice")
    for pool in CapacityPool.objects.all():
        price = (
            PoolPrice.objects.filter(pool_id=pool.pk, currency=pool.currency)
            .values_list("price_per_gpu_hour", flat=True)
            .first()
        )
        if price is not None:
            CapacityPool.objects.filter(pk=pool.pk).update(price_per_gpu_hour=price)


class Migration(migrations.Migration):
    """List prices live in the price book (``marketplace.PoolPrice``, per pool and currency),
    which ``marketplace.0010`` filled from this column: the column goes."""

    dependencies = [
        ("capacity", "0005_pool_cost_rates_backfill"),
        ("marketplace", "0010_prices_and_terms_backfill"),
    ]

    operations = [
        # A default, so that going back can add the column to existing rows before refilling it.
        migrations.AlterField(
            model_name="capacitypool",
            name="price_per_gpu_hour",
            field=models.DecimalField(decimal_places=4, default=Decimal("0"), max_digits=12),
        ),
        migrations.RunPython(migrations.RunPython.noop, backwards),
        migrations.RemoveConstraint(
            model_name="capacitypool",
            name="pool_price_nonnegative",
        ),
        migrations.RemoveField(
            model_name="capacitypool",
            name="price_per_gpu_hour",
        ),
        migrations.AlterField(
            model_name="capacitypool",
            name="cost_per_gpu_hour",
            field=models.DecimalField(
                decimal_places=4,
                help_text="What we pay the provider now; earlier rates are kept in the cost "
                "history.",
                max_digits=12,
            ),
        ),
        migrations.AlterField(
            model_name="capacitypool",
            name="currency",
            field=models.CharField(
                choices=[
                    ("AUD", "AUD"),
                    ("CAD", "CAD"),
                    ("CHF", "CHF"),
                    ("EUR", "EUR"),
                    ("GBP", "GBP"),
                    ("JPY", "JPY"),
                    ("USD", "USD"),
                ],
                default="USD",
                help_text="The cost currency: what the provider is paid in. List prices to "
                "tenants are in the price book, per currency.",
                max_length=3,
            ),
        ),
    ]
