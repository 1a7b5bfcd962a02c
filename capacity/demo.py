"""Demo catalogue: real providers and GPU models, plausible sizes and prices. Loaded by
``manage.py seed_demo``; every row is keyed by a slug so loading twice changes nothing."""

from datetime import UTC, datetime
from decimal import Decimal

PROVIDERS = [
    # slug, name, kind, website
    ("aws", "Amazon Web Services", "hyperscaler", "https://aws.amazon.com"),
    ("azure", "Microsoft Azure", "hyperscaler", "https://azure.microsoft.com"),
    ("gcp", "Google Cloud", "hyperscaler", "https://cloud.google.com"),
    ("oci", "Oracle Cloud", "hyperscaler", "https://www.oracle.com/cloud"),
    ("coreweave", "CoreWeave", "neocloud", "https://www.coreweave.com"),
    ("abilene", "Abilene campus", "owned", ""),
]

REGIONS = [
    # provider, code, name, country
    ("aws", "us-east-1", "US East (N. Virginia)", "US"),
    ("aws", "eu-west-1", "Europe (Ireland)", "IE"),
    ("azure", "eastus2", "East US 2", "US"),
    ("azure", "swedencentral", "Sweden Central", "SE"),
    ("gcp", "us-central1", "Iowa", "US"),
    ("gcp", "europe-west4", "Netherlands", "NL"),
    ("oci", "us-ashburn-1", "US East (Ashburn)", "US"),
    ("oci", "ap-tokyo-1", "Japan East (Tokyo)", "JP"),
    ("coreweave", "us-east-04", "US East 04", "US"),
    ("coreweave", "eu-north-01", "EU North 01", "SE"),
    ("abilene", "abl-1", "Abilene, Texas", "US"),
]

GPU_MODELS = [
    # slug, vendor, name, memory GB, interconnect, architecture
    ("h100-sxm-80gb", "nvidia", "NVIDIA H100 SXM 80GB", 80, "NVLink 4", "Hopper"),
    ("h200-sxm-141gb", "nvidia", "NVIDIA H200 SXM 141GB", 141, "NVLink 4", "Hopper"),
    ("gb200-nvl72", "nvidia", "NVIDIA GB200 NVL72", 186, "NVLink 5", "Blackwell"),
    ("gb300-nvl72", "nvidia", "NVIDIA GB300 NVL72", 288, "NVLink 5", "Blackwell Ultra"),
    ("mi300x-192gb", "amd", "AMD Instinct MI300X 192GB", 192, "Infinity Fabric", "CDNA 3"),
]

CONTRACT_START = datetime(2026, 1, 1, tzinfo=UTC)
CONTRACT_END = datetime(2028, 12, 31, tzinfo=UTC)

POOLS = [
    # slug, provider, region, gpu model, gpus/node, nodes, held back, cost, price, tier
    # (cost and price in the pool's own currency, see POOL_CURRENCIES)
    ("aws-use1-h100-a", "aws", "us-east-1", "h100-sxm-80gb", 8, 64, 8, "2.10", "2.95", "primary"),
    ("aws-use1-h200-a", "aws", "us-east-1", "h200-sxm-141gb", 8, 32, 0, "2.90", "3.80", "primary"),
    ("aws-euw1-h100-b", "aws", "eu-west-1", "h100-sxm-80gb", 8, 16, 0, "1.60", "2.20", "backup"),
    ("azure-eus2-gb200-a", "azure", "eastus2", "gb200-nvl72", 4, 72, 8, "4.80", "6.20", "primary"),
    ("azure-eus2-h100-b", "azure", "eastus2", "h100-sxm-80gb", 8, 24, 0, "1.55", "2.15", "backup"),
    (
        "azure-sec-h200-a",
        "azure",
        "swedencentral",
        "h200-sxm-141gb",
        8,
        16,
        0,
        "2.70",
        "3.60",
        "primary",
    ),
    ("gcp-usc1-h100-a", "gcp", "us-central1", "h100-sxm-80gb", 8, 48, 0, "2.05", "2.90", "primary"),
    ("gcp-usc1-gb200-b", "gcp", "us-central1", "gb200-nvl72", 4, 18, 0, "3.90", "5.10", "backup"),
    (
        "gcp-euw4-h200-a",
        "gcp",
        "europe-west4",
        "h200-sxm-141gb",
        8,
        24,
        8,
        "2.85",
        "3.70",
        "primary",
    ),
    (
        "oci-ash1-mi300x-a",
        "oci",
        "us-ashburn-1",
        "mi300x-192gb",
        8,
        32,
        0,
        "1.70",
        "2.45",
        "primary",
    ),
    ("oci-ash1-gb300-a", "oci", "us-ashburn-1", "gb300-nvl72", 4, 36, 4, "5.60", "7.40", "primary"),
    ("oci-tyo1-h100-b", "oci", "ap-tokyo-1", "h100-sxm-80gb", 8, 8, 0, "1.70", "2.30", "backup"),
    (
        "cw-use04-h100-a",
        "coreweave",
        "us-east-04",
        "h100-sxm-80gb",
        8,
        128,
        16,
        "1.95",
        "2.75",
        "primary",
    ),
    (
        "cw-use04-h200-a",
        "coreweave",
        "us-east-04",
        "h200-sxm-141gb",
        8,
        64,
        0,
        "2.60",
        "3.45",
        "primary",
    ),
    (
        "cw-use04-gb200-a",
        "coreweave",
        "us-east-04",
        "gb200-nvl72",
        4,
        144,
        0,
        "4.50",
        "5.95",
        "primary",
    ),
    (
        "cw-eun01-mi300x-b",
        "coreweave",
        "eu-north-01",
        "mi300x-192gb",
        8,
        16,
        0,
        "1.40",
        "1.95",
        "backup",
    ),
    ("abl-gb200-a", "abilene", "abl-1", "gb200-nvl72", 4, 288, 32, "3.20", "5.40", "primary"),
    ("abl-gb300-a", "abilene", "abl-1", "gb300-nvl72", 4, 144, 16, "4.10", "6.90", "primary"),
    ("abl-h100-b", "abilene", "abl-1", "h100-sxm-80gb", 8, 64, 0, "1.20", "1.85", "backup"),
    ("abl-gb300-b", "abilene", "abl-1", "gb300-nvl72", 4, 36, 0, "3.80", "5.90", "backup"),
    # Paid for in euros and sold in euros only: offered to EUR tenants, never to USD ones.
    (
        "gcp-euw4-h100-a",
        "gcp",
        "europe-west4",
        "h100-sxm-80gb",
        8,
        16,
        0,
        "1.85",
        "2.60",
        "primary",
    ),
]

# The cost and the first list price of a pool are in its own currency: USD unless named here.
POOL_CURRENCIES = {"gcp-euw4-h100-a": "EUR"}

# The price book keeps one list price per pool and currency (as a payment platform keeps one
# price per currency): these pools are also sold in euros, so a EUR tenant has offers.
EXTRA_PRICES = {
    "aws-use1-h100-a": {"EUR": "2.75"},
    "aws-euw1-h100-b": {"EUR": "2.05"},
    "azure-sec-h200-a": {"EUR": "3.35"},
    "gcp-euw4-h200-a": {"EUR": "3.45"},
    "cw-eun01-mi300x-b": {"EUR": "1.80"},
    "abl-gb200-a": {"EUR": "5.05"},
}


def pool_defaults(row: tuple) -> dict:
    slug, _, _, _, per_node, nodes, held, cost, _, tier = row
    return {
        "gpus_per_node": per_node,
        "node_count": nodes,
        "reserved_gpus": held,
        "cost_per_gpu_hour": Decimal(cost),
        "tier": tier,
        "available_from": CONTRACT_START,
        "available_until": CONTRACT_END,
        "currency": POOL_CURRENCIES.get(slug, "USD"),
        "status": "active",
    }


def pool_prices(row: tuple) -> dict[str, Decimal]:
    """The pool's list prices per GPU-hour by currency: its own currency first."""
    slug, price = row[0], row[8]
    prices = {POOL_CURRENCIES.get(slug, "USD"): Decimal(price)}
    prices.update({currency: Decimal(p) for currency, p in EXTRA_PRICES.get(slug, {}).items()})
    return prices
