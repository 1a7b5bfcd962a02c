from datetime import UTC, datetime

import pytest
import time_machine

from marketplace.services.booking import BookingRequest
from tests.factories import CapacityPoolFactory, TenantFactory

# Every booking test runs at a fixed instant so windows are deterministic.
NOW = datetime(2026, 12, 1, 8, 30, tzinfo=UTC)
MONDAY_9 = datetime(2026, 12, 7, 9, tzinfo=UTC)


@pytest.fixture
def frozen_now():
    with time_machine.travel(NOW, tick=False):
        yield NOW


@pytest.fixture
def tenant(db):
    return TenantFactory()


@pytest.fixture
def pool(db):
    return CapacityPoolFactory(slug="pool-a", gpus_per_node=8, node_count=4)  # 32 GPUs


def booking(gpus: int = 8, start: datetime = MONDAY_9, hours: int = 4, **extra) -> BookingRequest:
    from datetime import timedelta

    return BookingRequest(
        gpu_model=extra.pop("gpu_model", "h100-sxm-80gb"),
        gpu_count=gpus,
        start=start,
        end=start + timedelta(hours=hours),
        **extra,
    )
