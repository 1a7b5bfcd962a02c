import pytest
from django.core.management import call_command

from capacity.models import CapacityPool, GpuModel, Provider, Region

pytestmark = pytest.mark.django_db


def _snapshot() -> dict:
    return {
        model.__name__: sorted(
            model.objects.values_list("pk", "slug" if hasattr(model, "slug") else "code")
        )
        for model in (Provider, Region, GpuModel, CapacityPool)
    }


def test_seed_demo_loads_the_promised_catalogue():
    call_command("seed_demo", "--no-history")
    assert Provider.objects.count() >= 5
    assert Region.objects.count() >= 10
    assert CapacityPool.objects.count() >= 20
    assert CapacityPool.objects.filter(tier="backup").exists()
    slugs = set(GpuModel.objects.values_list("slug", flat=True))
    for wanted in ("h100", "h200", "gb200", "gb300", "mi300x"):
        assert any(slug.startswith(wanted) for slug in slugs), wanted


def test_seed_demo_twice_gives_the_same_rows():
    call_command("seed_demo", "--no-history")
    first = _snapshot()
    call_command("seed_demo", "--no-history")
    assert _snapshot() == first
