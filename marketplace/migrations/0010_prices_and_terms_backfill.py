from django.db import migrations


def forwards(apps, schema_editor):
    """The price book starts with each pool's list price in its own currency; existing
    reservations keep the cancellation schedule in force now (the best record there is)."""
    CapacityPool = apps.get_model("capacity", "CapacityPool")
    PoolPrice = apps.get_model("marketplace", "PoolPrice")
    CancellationRule = apps.get_model("marketplace", "CancellationRule")
    Reservation = apps.get_model("marketplace", "Reservation")
    PoolPrice.objects.bulk_create(
        [
            PoolPrice(pool_id=pk, currency=currency, price_per_gpu_hour=price)
            for pk, currency, price in CapacityPool.objects.values_list(
                "pk", "currency", "price_per_gpu_hour"
            )
        ],
        ignore_conflicts=True,
    )
    terms = [
        {"min_notice_hours": notice, "fee_percent": str(fee)}
        for notice, fee in CancellationRule.objects.order_by("-min_notice_hours").values_list(
            "min_notice_hours", "fee_percent"
        )
    ]
    Reservation.objects.filter(cancellation_terms=[]).update(cancellation_terms=terms)


class Migration(migrations.Migration):
    dependencies = [("marketplace", "0009_terms_prices_payment_terms")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
