"""The dashboard's admin views: parse the query, call the selectors, render. Each chart's
data goes to the page as JSON (``json_script``) beside the table of the same numbers."""

import csv
import io
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse

from capacity.models import CapacityPool, Provider
from core.timeutils import utcnow
from dashboard import selectors
from marketplace.models import Tenant

DAY = timedelta(days=1)
WEEK = timedelta(days=7)
USAGE_DAYS = 90


def _today(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _int(value: str | None, default: int) -> int:
    try:
        return int(value or default)
    except ValueError:
        return default


def _series(label: str, data: list, color: int, **extra: object) -> dict:
    return {"label": label, "data": data, "color": color, **extra}


def dashboard_context(request: HttpRequest, now: datetime) -> dict:
    start, last, end = selectors.report_months(now)
    today = _today(now)
    provider = request.GET.get("provider") or None
    pools, page, pages = selectors.pool_page(
        provider=provider, page=_int(request.GET.get("page"), 1)
    )
    utilisation = selectors.pool_utilisation(pools, today)
    margin = selectors.margin_chart(start=start, end=end)
    backup = selectors.reports.backup_share_report(start=start, end=end)
    tenants = selectors.top_tenants(today - selectors.WINDOW_DAYS * DAY, today)
    sla = selectors.sla_credits_by_month(start, end)
    report_query = f"from={start:%Y-%m}&to={last:%Y-%m}"
    csv_url = "admin:billing_revenuereport_csv"

    margin_datasets = []
    for index, name in enumerate(margin.providers):
        margin_datasets.append(
            _series(f"{name} revenue", margin.revenue[name], index, stack="revenue")
        )
        margin_datasets.append(
            _series(f"{name} cost", margin.cost[name], index, stack="cost", pattern="cost")
        )
    margin_datasets.append(
        _series("Margin (all providers)", margin.margin, 7, type="line", order=-1)
    )
    backup_columns = {name: index for index, name in enumerate(backup.columns)}
    backup_currencies = sorted({str(row[backup_columns["currency"]]) for row in backup.rows})
    backup_months = sorted({str(row[backup_columns["month"]]) for row in backup.rows})
    backup_share: dict[str, list[float | None]] = {
        currency: [None] * len(backup_months) for currency in backup_currencies
    }
    for row in backup.rows:
        share = row[backup_columns["backup_share_percent"]]
        backup_share[str(row[backup_columns["currency"]])][
            backup_months.index(str(row[backup_columns["month"]]))
        ] = None if share is None else float(share)  # type: ignore[arg-type]

    charts = {
        "margin": {
            "type": "bar",
            "labels": margin.months,
            "datasets": margin_datasets,
            "stacked": True,
            "axis": settings.REPORTING_CURRENCY,
        },
        "utilisation": {
            "type": "bar",
            "horizontal": True,
            "labels": [row.pool.slug for row in utilisation],
            "datasets": [
                _series(
                    "Booked / capacity, past 30 days (%)",
                    [
                        None if row.past.percent is None else float(row.past.percent)
                        for row in utilisation
                    ],
                    0,
                )
            ],
            "axis": "%",
            "max": 100,
        },
        "backup": {
            "type": "bar",
            "labels": backup_months,
            "datasets": [
                _series(
                    f"Backup share of {currency} revenue (%)", backup_share[currency], index + 2
                )
                for index, currency in enumerate(backup_currencies)
            ],
            "axis": "%",
        },
        "tenants": {
            "type": "bar",
            "horizontal": True,
            "labels": [f"{row.tenant.name} ({row.currency})" for row in tenants],
            "datasets": [
                _series("GPU-hours, past 30 days", [float(row.gpu_hours) for row in tenants], 4)
            ],
            "axis": "GPU-hours",
        },
        "sla": {
            "type": "bar",
            "labels": sla.months,
            "datasets": [
                _series(
                    f"SLA credits ({currency})",
                    [float(a) for a in sla.amounts[currency]],
                    index + 5,
                )
                for index, currency in enumerate(sla.currencies)
            ],
            "axis": "amount",
        },
    }
    outlook_days = [today + offset * DAY for offset in range(selectors.WINDOW_DAYS)]
    return {
        "title": "Operations dashboard",
        "now": now,
        "months": f"{start:%Y-%m} to {last:%Y-%m}",
        "reporting_currency": settings.REPORTING_CURRENCY,
        "charts": charts,
        "margin": margin,
        "margin_csv": f"{reverse(csv_url, args=['margin'])}?{report_query}",
        "margin_pools_csv": f"{reverse(csv_url, args=['margin-pools'])}?{report_query}",
        "backup": backup,
        "backup_csv": f"{reverse(csv_url, args=['backup-share'])}?{report_query}",
        "utilisation_csv": f"{reverse(csv_url, args=['utilisation'])}?{report_query}",
        "reports_url": f"{reverse('admin:billing_revenuereport_changelist')}?{report_query}",
        "utilisation": utilisation,
        "outlook_days": outlook_days,
        "outlook_csv": reverse("admin:dashboard_outlook_csv")
        + (f"?provider={provider}" if provider else ""),
        "providers": Provider.objects.order_by("name").values_list("slug", "name"),
        "provider": provider,
        "page": page,
        "pages": pages,
        "page_range": range(1, pages + 1),
        "tenants": tenants,
        "contracts": selectors.contracts_ending(now),
        "incidents": selectors.incidents_open(now),
        "sla": sla,
        "sla_rows": [
            (month, currency, sla.amounts[currency][index], sla.count[currency][index])
            for index, month in enumerate(sla.months)
            for currency in sla.currencies
        ],
        "overdue": selectors.invoices_overdue(now),
        "endpoints": selectors.endpoints_failing(now),
    }


def dashboard_view(request: HttpRequest, extra: dict) -> HttpResponse:
    context = {**extra, **dashboard_context(request, utcnow())}
    return TemplateResponse(request, "dashboard/dashboard.html", context)


def outlook_csv_view(request: HttpRequest) -> HttpResponse:
    """Booked and capacity GPU-hours per pool and day, past and next 30 days, every pool (of
    the provider in ``?provider=``): the data of the heatmap and the utilisation chart."""
    today = _today(utcnow())
    pools = selectors.CapacityPool.objects.select_related("region__provider").order_by(
        "region__provider__name", "slug"
    )
    if provider := request.GET.get("provider"):
        pools = pools.filter(region__provider__slug=provider)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        ["pool", "provider", "day", "capacity_gpu_hours", "booked_gpu_hours", "booked_percent"]
    )
    pools = list(pools)
    start = today - selectors.WINDOW_DAYS * DAY
    ledger = selectors.ledger_by_pool_and_day(pools, start, today + selectors.WINDOW_DAYS * DAY)
    for pool in pools:
        for day, figures in ledger[pool.pk].items():
            writer.writerow(
                [
                    pool.slug,
                    pool.region.provider.name,
                    day,
                    figures.capacity,
                    figures.booked,
                    figures.percent,
                ]
            )
    response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="outlook-{today:%Y-%m-%d}.csv"'
    return response


def _monday(value: str | None, default: datetime) -> datetime:
    try:
        day = datetime.strptime(value or "", "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        day = default
    return day - day.weekday() * DAY


def pool_view(request: HttpRequest, pool_id: int, extra: dict) -> HttpResponse:
    pool = get_object_or_404(
        CapacityPool.objects.select_related("region__provider", "gpu_model"), pk=pool_id
    )
    week = _monday(request.GET.get("week"), _today(utcnow()))
    hours = selectors.pool_timeline(pool, week, week + WEEK)
    labels = [f"{figures.hour:%a %d %H:00}" for figures in hours]
    chart = {
        "type": "bar",
        "labels": labels,
        "stacked": True,
        "axis": "GPUs",
        "datasets": [
            _series(
                "Capacity",
                [f.capacity for f in hours],
                0,
                type="line",
                stepped=True,
                stack="capacity",
            ),
            _series("Booked", [f.booked for f in hours], 1, stack="gpus"),
            _series("Maintenance", [f.maintenance for f in hours], 3, stack="gpus"),
            _series("Incidents", [f.incidents for f in hours], 6, stack="gpus"),
        ],
    }
    return TemplateResponse(
        request,
        "dashboard/pool.html",
        {
            **extra,
            "title": f"Capacity timeline: {pool.slug}",
            "pool": pool,
            "week": week,
            "week_end": week + WEEK - DAY,
            "previous": f"{week - WEEK:%Y-%m-%d}",
            "next": f"{week + WEEK:%Y-%m-%d}",
            "hours": hours,
            "charts": {"timeline": chart},
            "change_url": reverse("admin:capacity_capacitypool_change", args=[pool.pk]),
        },
    )


def tenant_view(request: HttpRequest, tenant_id: int, extra: dict) -> HttpResponse:
    tenant = get_object_or_404(Tenant, pk=tenant_id)
    today = _today(utcnow())
    figures = selectors.tenant_usage_by_day(tenant, today - USAGE_DAYS * DAY, today + DAY)
    balance = figures.balance
    used = balance.credit_limit - balance.credit_available
    charts = {
        "usage": {
            "type": "bar",
            "labels": figures.usage_days,
            "axis": "GPU-hours",
            "datasets": [
                _series("GPU-hours per day", [float(v) for v in figures.usage_gpu_hours], 0),
                _series(
                    f"Amount per day ({tenant.currency})",
                    [float(v) for v in figures.usage_amount],
                    4,
                    type="line",
                    axis="amount",
                ),
            ],
        },
        "credit": {
            "type": "bar",
            "horizontal": True,
            "stacked": True,
            "labels": [f"Credit limit {balance.credit_limit} {tenant.currency}"],
            "axis": tenant.currency,
            "datasets": [
                _series("Credit used", [float(used)], 6),
                _series("Credit available", [float(balance.credit_available)], 2),
            ],
        },
    }
    return TemplateResponse(
        request,
        "dashboard/tenant.html",
        {
            **extra,
            "title": f"Tenant: {tenant.name}",
            "tenant": tenant,
            "balance": balance,
            "credit_used": used,
            "usage": list(
                zip(figures.usage_days, figures.usage_gpu_hours, figures.usage_amount, strict=True)
            ),
            "usage_days": USAGE_DAYS,
            "invoices": selectors.tenant_invoices(tenant),
            "reservations": selectors.tenant_reservations(tenant),
            "charts": charts,
            "change_url": reverse("admin:marketplace_tenant_change", args=[tenant.pk]),
        },
    )
