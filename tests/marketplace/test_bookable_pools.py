"""A booking reads its candidate pools in one plain statement (``bookable_pools``): the same
pools, prices and catalogue names as the ORM's ``candidate_pools``, for every filter."""

import itertools
from decimal import Decimal

import pytest

from capacity.models import CapacityPool
from marketplace.selectors import PoolFilter, bookable_pools, candidate_pools
from tests.factories import CapacityPoolFactory, GpuModelFactory, RegionFactory

pytestmark = pytest.mark.django_db


def shown(pools) -> list[tuple]:
    return [
        (
            pool.slug,
            pool.tier,
            pool.booking_step,
            pool.list_price,
            pool.list_price_currency,
            pool.region.code,
            pool.region.provider.slug,
            pool.gpu_model.slug,
        )
        for pool in pools
    ]


def test_every_filter_finds_the_same_pools_with_the_same_prices_and_names():
    # given pools of two models in two regions of two providers, primary and backup, one
    # draining, priced in USD, in EUR, in both or in neither
    east, west = RegionFactory(code="us-east"), RegionFactory(code="eu-west")
    a100 = GpuModelFactory(slug="a100-80gb")
    for n, (region, tier, prices) in enumerate(
        itertools.product(
            (east, west),
            (CapacityPool.Tier.PRIMARY, CapacityPool.Tier.BACKUP),
            ({"USD": "3.1000"}, {"EUR": "2.9000"}, {"USD": "2.5000", "EUR": "2.3000"}, {}),
        )
    ):
        CapacityPoolFactory(
            slug=f"pool-{n:02d}",
            region=region,
            tier=tier,
            gpus_per_node=8 if n % 3 else 1,
            price_per_gpu_hour=None,
            prices={currency: Decimal(price) for currency, price in prices.items()},
        )
    CapacityPoolFactory(slug="a100-pool", region=east, gpu_model=a100, prices={"EUR": 2})
    CapacityPoolFactory(slug="draining", status=CapacityPool.Status.DRAINING)

    # when each combination of filters is asked for in each currency
    filters = itertools.product(
        ("h100-sxm-80gb", "a100-80gb", "unknown"),
        (None, "us-east", "eu-west"),
        (None, east.provider.slug, west.provider.slug),
        (None, "primary", "backup"),
        (None, "pool-05", "a100-pool"),
        ("USD", "EUR", "GBP"),
    )
    for gpu_model, region, provider, tier, pool, currency in filters:
        criteria = PoolFilter(gpu_model, region=region, provider=provider, tier=tier, pool=pool)
        expected = shown(candidate_pools(criteria, currency=currency).order_by("slug"))

        # then the one statement finds the same pools, prices and names
        assert shown(bookable_pools(criteria, currency=currency)) == expected, criteria
    # and the comparison saw pools (it is not empty-equals-empty)
    assert len(bookable_pools(PoolFilter("h100-sxm-80gb"), currency="USD")) == 8
