"""Schemathesis over every operation of ``/api/schema/``, against a live gunicorn on production
settings: schema examples, coverage of each parameter's edges, random valid and invalid
inputs, then a stateful run that follows the schema's OpenAPI links (quote → reservation →
extend → cancel; webhook endpoint → rotate secret, deliveries, delete; API key → revoke).

Every response must be no 5xx, a status the operation documents, the content type and body
the schema gives for it, and schema-violating input must be refused. The run is bounded
(``FUZZ_MAX_EXAMPLES`` examples per operation, default 25) and seeded (``FUZZ_SEED``) so that
``make test`` gives the same run each time; set another seed to explore further."""

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from capacity.models import CapacityPool
from marketplace.services.tenants import api_key_create
from tests.factories import CapacityPoolFactory, GpuModelFactory, RegionFactory, TenantFactory
from tests.live_server import gunicorn

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
)
UNLIMITED = str(10**9)


@pytest.fixture
def raw_key() -> str:
    """A tenant with every scope and room to book, and pools of the GPU model the hooks book."""
    model = GpuModelFactory(slug="h100-sxm-80gb")
    region = RegionFactory()
    for index in range(3):
        CapacityPoolFactory(slug=f"fuzz-{index}", region=region, gpu_model=model, node_count=64)
    CapacityPoolFactory(
        slug="fuzz-backup",
        region=region,
        gpu_model=model,
        node_count=16,
        tier=CapacityPool.Tier.BACKUP,
        price_per_gpu_hour=Decimal("1.5000"),
    )
    tenant = TenantFactory(credit_limit=Decimal("100000000.00"))
    _, key = api_key_create(tenant=tenant, name="fuzz")
    return key


def _answered(har: dict) -> set[tuple[str, str, int]]:
    """(method, path with ids as {id}, status) of every exchange in a HAR log."""
    seen = set()
    for entry in har["log"]["entries"]:
        path = entry["request"]["url"].split("/api/v1/", 1)[-1].split("?")[0]
        parts = [
            "{id}" if (any(c.isdigit() for c in part) and "-" in part) or part.isdigit() else part
            for part in path.split("/")
        ]
        seen.add((entry["request"]["method"], "/".join(parts), entry["response"]["status"]))
    return seen


def test_schemathesis_finds_no_failure_on_any_operation(raw_key, tmp_path):
    har = tmp_path / "run.har"
    with gunicorn(
        RATE_LIMIT_SEARCH=UNLIMITED,
        RATE_LIMIT_WRITE=UNLIMITED,
        RATE_LIMIT_ANONYMOUS=UNLIMITED,
        RATE_LIMIT_REDIS_URL="redis://127.0.0.1:6379/14",
        WEBHOOK_ALLOW_PRIVATE_URLS="true",
    ) as base:
        run = subprocess.run(
            [
                SCHEMATHESIS,
                "--config-file",
                ROOT / "tests/core/schemathesis.toml",
                "run",
                f"{base}/api/schema/",
                "--header",
                f"Authorization: Bearer {raw_key}",
                "--checks",
                ",".join(CHECKS),
                "--phases",
                "examples,coverage,fuzzing,stateful",
                "--max-examples",
                os.environ.get("FUZZ_MAX_EXAMPLES", "25"),
                "--seed",
                os.environ.get("FUZZ_SEED", "20261123"),
                "--workers",
                "1",
                "--no-color",
                "--suppress-health-check",
                "all",
                "--generation-database",
                "none",
                "--report",
                "har",
                "--report-har-path",
                har,
            ],
            cwd=ROOT,
            env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.core.schemathesis_hooks"},
            capture_output=True,
            text=True,
            timeout=600,
        )
    report = run.stdout + run.stderr
    assert run.returncode == 0, report
    # and the stateful phase really walked the links: booked, extended, cancelled, rotated
    answered = _answered(json.loads(har.read_text()))
    for wanted in (
        ("POST", "quotes/", 201),
        ("POST", "reservations/", 201),
        ("POST", "reservations/{id}/extend/", 200),
        ("POST", "reservations/{id}/cancel/", 200),
        ("POST", "webhook-endpoints/", 201),
        ("POST", "webhook-endpoints/{id}/rotate-secret/", 200),
        ("DELETE", "api-keys/{id}/", 204),
    ):
        assert wanted in answered, (wanted, report)
