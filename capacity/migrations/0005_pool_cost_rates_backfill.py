from django.db import migrations


def forwards(apps, schema_editor):
    """Each pool's current cost is its rate from the start of its contract."""
    CapacityPool = apps.get_model("capacity", "CapacityPool")
    PoolCostRate = apps.get_model("capacity", "PoolCostRate")
    PoolCostRate.objects.bulk_create(
        [
            PoolCostRate(
                pool_id=pk, effective_from=available_from, cost_per_gpu_hour=cost
            )
            for pk, available_from, cost in CapacityPool.objects.values_list(
                "pk", "available_from", "cost_per_gpu_hour"
            )
        ],
        ignore_conflicts=True,
    )


class Migration(migrations.Migration):
    dependencies = [("capacity", "0004_pool_cost_rates")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
