"""The API over HTTP: gunicorn on production settings, driven by wrk.

    .venv/bin/python bench/http_api.py [--seconds 8] [--connections 32] [--workers 2]

(Not ``http.py``: a script's directory comes first on ``sys.path``, so a ``bench/http.py``
would shadow the standard library's ``http`` package in every bench.)

Creates (drops first) the database ``bench_http`` on the PostgreSQL server of
BENCH_DATABASE_SERVER (default postgres://postgres@127.0.0.1:5432), migrates it and seeds it
through the project's models and services: 32 pools of 4,096 GPUs sold by the GPU
(``allow_partial_nodes``), 32 tenants with an API key each (``api_key_create``). Then it
starts gunicorn on config.settings.production on a loopback port, as configured there (sync
workers, no threads; ``--workers`` of them, default 2), with the rate limits raised through
RATE_LIMIT_* (counted in Redis as in production, under a key prefix of this run only), and
drives it with wrk (``apt-get install -y wrk`` when it is missing), one endpoint at a time,
C connections each, after a short unmeasured warm-up:

1. ``GET /healthz`` (no database, no authentication);
2. the authenticated one-row read ``GET /api/v1/pools/{slug}/`` with a Bearer API key (random
   pool and key per request);
3. an availability search ``GET /api/v1/availability/`` (1 GPU, a random 1-8 h window in the
   next two weeks, every pool);
4. booking ``POST /api/v1/reservations/``: 1 GPU for 1-4 h on a random pool in the next two
   weeks, a random tenant, a fresh Idempotency-Key per request (generated in wrk's Lua), so
   bookings succeed.

It prints req/s, p50, p99 and the non-2xx count of each, and the ratios booking / one-row read
(goal >= 40 %) and one-row read / healthz (goal >= 20 %); then checks the ledger and the books
of what the bookings left (bench/benchlib.py). Exit 1 if a check fails or wrk cannot run.
Figures go to var/bench/http.json for bench/summary.py.

BENCH_SCALE multiplies the measuring time per endpoint (default 8 s) and the pools."""

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "bench"
# This directory first on sys.path is harmless (nothing here shadows the standard library),
# but the project comes first for Django.
sys.path.insert(0, str(ROOT))

from benchlib import (  # noqa: E402
    RESULTS,
    SCALE,
    ledger_problems,
    row,
    scaled,
    verdict,
    write_results,
)

DATABASE = "bench_http"
SERVER = os.environ.get("BENCH_DATABASE_SERVER", "postgres://postgres@127.0.0.1:5432")
DATABASE_URL = f"{SERVER}/{DATABASE}"
BROKER_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/13")
os.environ["DATABASE_URL"] = DATABASE_URL
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.test"  # for seeding in this process
os.environ.setdefault("LOG_LEVEL", "WARNING")

GPU_MODEL = "h100-sxm-80gb"
TENANTS = 32
SPAN_HOURS = 14 * 24
GOAL_BOOKING_PER_READ = 0.40
GOAL_READ_PER_HEALTHZ = 0.20


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk is missing: apt-get install -y wrk ...", flush=True)
    try:
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        raise SystemExit(
            "bench/http_api.py needs wrk (https://github.com/wg/wrk) and could not install it "
            f"with `apt-get install -y wrk` ({exc}; {detail.decode(errors='replace')[-300:]}). "
            "Install it (Debian/Ubuntu: apt-get install wrk) and run again."
        ) from exc
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("apt-get installed wrk but it is not on PATH.")
    return found


def recreate_database() -> None:
    import psycopg

    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')


def seed(pools: int) -> tuple[list[str], list[str]]:
    """Pools sold by the GPU and tenants with an API key each; returns (pool slugs, keys)."""
    from capacity.models import CapacityPool, GpuModel, Provider, Region
    from core.timeutils import utcnow
    from marketplace.models import PoolPrice, Tenant
    from marketplace.services.tenants import api_key_create

    gpu = GpuModel.objects.create(
        slug=GPU_MODEL, vendor="nvidia", name="H100 SXM 80GB", memory_gb=80
    )
    provider = Provider.objects.create(name="Bench", slug="bench", kind="neocloud")
    region = Region.objects.create(provider=provider, code="bench-1", name="Bench", country="US")
    now = utcnow()
    created = CapacityPool.objects.bulk_create(
        CapacityPool(
            slug=f"bench-{i:03d}",
            region=region,
            gpu_model=gpu,
            gpus_per_node=8,
            node_count=512,
            allow_partial_nodes=True,
            available_from=now - timedelta(days=1),
            available_until=now + timedelta(days=400),
            cost_per_gpu_hour=Decimal("2.0000"),
        )
        for i in range(pools)
    )
    PoolPrice.objects.bulk_create(
        PoolPrice(pool=pool, currency="USD", price_per_gpu_hour=Decimal("3.0000"))
        for pool in created
    )
    keys = []
    for i in range(TENANTS):
        tenant = Tenant.objects.create(
            name=f"Bench tenant {i}",
            slug=f"bench-tenant-{i}",
            credit_limit=Decimal("100000000000.00"),
            max_gpus=10_000_000,
        )
        keys.append(api_key_create(tenant=tenant)[1])
    return [pool.slug for pool in created], keys


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_gunicorn(port: int, workers: int, prefix: str, log: Path) -> subprocess.Popen:
    limit = "1000000000"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "SECRET_KEY": "bench-http-" + secrets.token_hex(16),
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",  # plain HTTP on loopback, no TLS proxy in front
        "DATABASE_URL": DATABASE_URL,
        "CELERY_BROKER_URL": BROKER_URL,
        "RATE_LIMIT_SEARCH": limit,
        "RATE_LIMIT_WRITE": limit,
        "RATE_LIMIT_ANONYMOUS": limit,
        "RATE_LIMIT_KEY_PREFIX": prefix,
        "LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "config.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"gunicorn exited at start; see {log}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return server
        except OSError:
            time.sleep(0.2)
    server.terminate()
    raise SystemExit(f"gunicorn did not answer within 60 s; see {log}")


LUA_COMMON = """
local threads = {}
local next_id = 1
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local non2xx = 0
local counted = {}
-- What a thread counted reaches done() through thread:set, only when there is something.
function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    counted[status] = (counted[status] or 0) + 1
    local parts = {}
    for code, n in pairs(counted) do table.insert(parts, code .. "x" .. n) end
    wrk.thread:set("non2xx", non2xx)
    wrk.thread:set("statuses", table.concat(parts, ","))
  end
end

function done(summary, latency, requests)
  local total_non2xx = 0
  local statuses = {}
  for _, thread in ipairs(threads) do
    total_non2xx = total_non2xx + (thread:get("non2xx") or 0)
    local text = thread:get("statuses")
    if text then table.insert(statuses, text) end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "seconds": %.6f, "p50_ms": %.3f, "p99_ms": %.3f, ' ..
    '"non2xx": %d, "socket_errors": %d, "statuses": "%s"}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, total_non2xx,
    e.connect + e.read + e.write + e.timeout, table.concat(statuses, " ")))
end
"""

LUA_REQUEST = """
local keys = {%(keys)s}
local pools = {%(pools)s}
local first_hour = %(first_hour)d
local span_hours = %(span_hours)d
local counter = 0
local run = "%(run)s"

function init(args)
  math.randomseed(id * 7919 + os.time())
end

local function iso(epoch)
  return os.date("!%%Y-%%m-%%dT%%H:%%M:%%SZ", epoch)
end

function request()
  counter = counter + 1
  local key = keys[math.random(#keys)]
  local headers = {["Authorization"] = "Bearer " .. key}
  local mode = "%(mode)s"
  if mode == "healthz" then
    return wrk.format("GET", "/healthz")
  elseif mode == "read" then
    return wrk.format("GET", "/api/v1/pools/" .. pools[math.random(#pools)] .. "/", headers)
  elseif mode == "search" then
    local start = first_hour + math.random(0, span_hours - 9) * 3600
    local path = string.format(
      "/api/v1/availability/?gpu_model=%(gpu_model)s&gpu_count=1&start=%%s&end=%%s",
      iso(start), iso(start + math.random(1, 8) * 3600))
    return wrk.format("GET", path, headers)
  else
    local start = first_hour + math.random(0, span_hours - 5) * 3600
    local body = string.format(
      '{"gpu_model": "%(gpu_model)s", "gpu_count": 1, "start": "%%s", "end": "%%s", ' ..
      '"pool": "%%s"}',
      iso(start), iso(start + math.random(1, 4) * 3600), pools[math.random(#pools)])
    headers["Content-Type"] = "application/json"
    headers["Idempotency-Key"] = run .. "-" .. id .. "-" .. counter
    return wrk.format("POST", "/api/v1/reservations/", headers, body)
  end
end
"""


def lua_script(mode: str, keys: list[str], pools: list[str], first_hour: int, run: str) -> str:
    script = LUA_REQUEST % {
        "keys": ", ".join(f'"{key}"' for key in keys),
        "pools": ", ".join(f'"{pool}"' for pool in pools),
        "first_hour": first_hour,
        "span_hours": SPAN_HOURS,
        "run": run,
        "mode": mode,
        "gpu_model": GPU_MODEL,
    }
    return script + LUA_COMMON


def drive(
    wrk: str, url: str, mode: str, seconds: float, connections: int, script: Path, lua: str
) -> dict:
    script.write_text(lua)
    threads = min(2, connections)
    command = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "30s",
        "-s",
        str(script),
        url,
    ]
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    for line in finished.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            figures = json.loads(line.removeprefix("BENCH_JSON "))
            figures["per_second"] = figures["requests"] / figures["seconds"]
            return figures
    raise SystemExit(
        f"wrk gave no figures for {mode}:\n{finished.stdout[-2000:]}\n{finished.stderr[-2000:]}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=8 * SCALE, help="per endpoint (default 8 x BENCH_SCALE)"
    )
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--pools", type=int, default=scaled(32), help="default 32 x BENCH_SCALE")
    args = parser.parse_args()
    wrk = ensure_wrk()

    print(f"Database {DATABASE}: recreating, migrating, seeding...", flush=True)
    recreate_database()
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from core.timeutils import floor_hour, utcnow

    call_command("migrate", verbosity=0)
    pools, keys = seed(args.pools)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    connection.close()
    first_hour = int((floor_hour(utcnow()) + timedelta(days=1)).timestamp())

    RESULTS.mkdir(parents=True, exist_ok=True)
    prefix = f"bench-http-{secrets.token_hex(4)}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = RESULTS / "http-gunicorn.log"
    script = RESULTS / "http-wrk.lua"
    figures: dict[str, dict] = {}
    server = start_gunicorn(port, args.workers, prefix, log)
    try:
        print(
            f"gunicorn on {url}, {args.workers} sync workers (production settings); wrk with "
            f"{args.connections} connections, {args.seconds:.0f} s per endpoint",
            flush=True,
        )
        for mode in ("read", "search", "booking"):  # warm every worker up; not measured
            lua = lua_script(mode, keys, pools, first_hour, f"warm-{prefix}")
            drive(wrk, url, mode, 1, args.connections, script, lua)
        labels = {
            "healthz": "GET /healthz",
            "read": "GET /api/v1/pools/{slug}/ (API key)",
            "search": "GET /api/v1/availability/",
            "booking": "POST /api/v1/reservations/",
        }
        for mode, label in labels.items():
            lua = lua_script(mode, keys, pools, first_hour, prefix)
            result = drive(wrk, url, mode, args.seconds, args.connections, script, lua)
            figures[mode] = result
            print(
                f"   {label:<40} {result['per_second']:8.1f} req/s   "
                f"p50 {result['p50_ms']:7.1f} ms   p99 {result['p99_ms']:7.1f} ms   "
                f"non-2xx {result['non2xx']}"
                + (f" ({result['statuses']})" if result["statuses"] else "")
                + (f", socket errors {result['socket_errors']}" if result["socket_errors"] else ""),
                flush=True,
            )
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        try:
            import redis

            client = redis.Redis.from_url(BROKER_URL, socket_timeout=5)
            for key in client.scan_iter(match=f"{prefix}*"):
                client.delete(key)
        except Exception as exc:  # only tidying up
            print(f"(could not delete the rate-limit counters {prefix}*: {exc})")

    booking_per_read = figures["booking"]["per_second"] / figures["read"]["per_second"]
    read_per_healthz = figures["read"]["per_second"] / figures["healthz"]["per_second"]
    print(
        f"   booking / one-row read   {booking_per_read:6.1%}   goal >= "
        f"{GOAL_BOOKING_PER_READ:.0%}   {verdict(booking_per_read >= GOAL_BOOKING_PER_READ)}"
    )
    print(
        f"   one-row read / healthz   {read_per_healthz:6.1%}   goal >= "
        f"{GOAL_READ_PER_HEALTHZ:.0%}   {verdict(read_per_healthz >= GOAL_READ_PER_HEALTHZ)}"
    )
    from marketplace.models import Reservation

    problems = ledger_problems()
    booked = Reservation.objects.count()
    print(
        f"   {booked} reservations in the database; guarantee check: "
        + ("OK" if not problems else "; ".join(problems))
    )
    booking, read, healthz = figures["booking"], figures["read"], figures["healthz"]
    rows = [
        row(
            "HTTP booking / one-row read (req/s)",
            f"{booking_per_read:.1%} ({booking['per_second']:.0f} vs {read['per_second']:.0f}/s)",
            f">= {GOAL_BOOKING_PER_READ:.0%}",
            booking_per_read >= GOAL_BOOKING_PER_READ and not booking["non2xx"],
        ),
        row(
            "HTTP one-row read / healthz (req/s)",
            f"{read_per_healthz:.1%} ({read['per_second']:.0f} vs {healthz['per_second']:.0f}/s)",
            f">= {GOAL_READ_PER_HEALTHZ:.0%}",
            read_per_healthz >= GOAL_READ_PER_HEALTHZ and not read["non2xx"],
        ),
        row(
            "HTTP availability search (32 pools) p99",
            f"{figures['search']['p99_ms']:.0f} ms ({figures['search']['per_second']:.0f}/s)",
            "-",
            None,
        ),
    ]
    write_results("http", rows, guarantee_ok=not problems, problems=problems)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
