"""Row locks for capacity, always taken in one order so concurrent transactions cannot deadlock:

1. the ``CapacityPool`` row (only by writers that change capacity or create ledger rows),
2. then ``PoolHour`` rows in ascending ``(pool_id, hour)`` order.

No code takes a pool lock while holding ledger-row locks."""

from collections.abc import Iterable
from datetime import datetime

from capacity.models import CapacityPool, PoolHour


def pool_lock(pool_id: int) -> CapacityPool:
    return CapacityPool.objects.select_for_update(no_key=True, of=("self",)).get(pk=pool_id)


def pool_hours_lock(pool_ids: Iterable[int], start: datetime, end: datetime) -> list[PoolHour]:
    return list(
        PoolHour.objects.filter(pool_id__in=list(pool_ids), hour__gte=start, hour__lt=end)
        .order_by("pool_id", "hour")
        .select_for_update(of=("self",))
    )
