"""Operator screens for billing. Invoices, usage and charges are read-only (issued documents
never change; drafts are rebuilt from usage); payments, credit notes and top-ups are added
through their services; the SLA credit rules are edited here, the SLA credits and usage
corrections the billing runs wrote are read-only; the reports page has CSV downloads."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import DecimalField, OuterRef, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils.html import format_html

from billing import selectors
from billing.credit import CreditFigures, credit_figures
from billing.errors import CreditExceedsInvoice, InvoiceNotFinalized, PaymentExceedsDue
from billing.models import (
    Charge,
    CreditNote,
    FxRate,
    Invoice,
    InvoiceLine,
    LedgerEntry,
    Payment,
    RevenueReport,
    SlaCredit,
    SlaCreditRule,
    TenantAccount,
    UsageCorrection,
    UsageRecord,
)
from billing.services import accounts, credit_notes, invoicing, payments, reports
from core.admin import ServiceFormAdminMixin, show_refusal
from core.errors import ApplicationError
from core.history_admin import HistoryAdmin
from core.timeutils import utcnow

ZERO = Decimal("0.00")


class ReadOnlyMixin:
    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class ServiceAddMixin(ServiceFormAdminMixin):
    """Added through a service (``perform_save``), never changed or deleted. The service's
    refusal, checked under its locks, is shown on the add form (``ServiceFormAdminMixin``)."""

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


# --- invoices ----------------------------------------------------------------------------------


class InvoiceLineInline(ReadOnlyMixin, admin.TabularInline):
    model = InvoiceLine
    extra = 0
    fields = [
        "kind",
        "description",
        "hours",
        "gpu_hours",
        "list_unit_price",
        "unit_price",
        "gross_amount",
        "discount_amount",
        "amount",
    ]
    readonly_fields = fields


class CreditNoteInline(ReadOnlyMixin, admin.TabularInline):
    model = CreditNote
    extra = 0
    fields = ["number", "issued_at", "reason", "amount", "memo", "issued_by"]
    readonly_fields = fields
    show_change_link = True


class PaymentInline(ReadOnlyMixin, admin.TabularInline):
    model = Payment
    extra = 0
    fields = ["received_at", "method", "reference", "amount", "recorded_by"]
    readonly_fields = fields


class OverdueFilter(admin.SimpleListFilter):
    """Finalized invoices past their due date with something still due (``overdue``, annotated
    by ``selectors.with_settlement``)."""

    title = "overdue"
    parameter_name = "overdue"

    def lookups(self, request: HttpRequest, model_admin) -> list[tuple[str, str]]:
        return [("yes", "Overdue"), ("no", "Not overdue")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Invoice]) -> QuerySet[Invoice]:
        if self.value() in ("yes", "no"):
            return queryset.filter(overdue=self.value() == "yes")
        return queryset


@admin.register(Invoice)
class InvoiceAdmin(ReadOnlyMixin, HistoryAdmin):
    """Invoices are built by the billing runs and never edited by hand: finalize early (after
    the month ended), void, and record payments or credit notes on their own screens."""

    list_display = [
        "__str__",
        "tenant",
        "period_start",
        "currency",
        "status",
        "total",
        "amount_due",
        "finalized_at",
        "due_at",
        "overdue",
    ]
    list_filter = ["status", OverdueFilter, "currency", "period_start"]
    search_fields = ["number", "tenant__name", "tenant__slug"]
    list_select_related = ["tenant"]
    show_full_result_count = False
    inlines = [InvoiceLineInline, CreditNoteInline, PaymentInline]
    actions = ["finalize_now", "void"]
    fieldsets = [
        (None, {"fields": ["number", "tenant", "currency", "status"]}),
        ("Period", {"fields": ["period_start", "period_end"]}),
        (
            "Amounts",
            {
                "fields": [
                    "subtotal",
                    "discount_total",
                    "tax_rate_percent",
                    "tax_amount",
                    "total",
                    "prepaid_applied",
                    "amount_paid",
                    "amount_credited",
                    "amount_due",
                    "overdue",
                ]
            },
        ),
        (
            "Record",
            {
                "fields": [
                    "built_at",
                    "finalized_at",
                    "due_at",
                    "paid_at",
                    "voided_at",
                    "void_reason",
                    "created_at",
                ]
            },
        ),
    ]
    readonly_fields = [field for _, options in fieldsets for field in options["fields"]]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Invoice]:
        return selectors.with_settlement(super().get_queryset(request))

    @admin.display(description="Paid")
    def amount_paid(self, obj: Invoice) -> Decimal:
        return obj.amount_paid

    @admin.display(description="Credited")
    def amount_credited(self, obj: Invoice) -> Decimal:
        return obj.amount_credited

    @admin.display(description="Due", ordering="amount_due")
    def amount_due(self, obj: Invoice) -> Decimal | str:
        return obj.amount_due if obj.is_issued else "-"

    @admin.display(description="Overdue", boolean=True, ordering="overdue")
    def overdue(self, obj: Invoice) -> bool:
        return obj.overdue

    def has_issue_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("billing.change_invoice")

    @admin.action(
        description="Finalize now (month must be over; skips the grace period)",
        permissions=["issue"],
    )
    def finalize_now(self, request: HttpRequest, queryset: QuerySet[Invoice]) -> None:
        finalized = 0
        for invoice_id in queryset.filter(status=Invoice.Status.DRAFT).values_list("pk", flat=True):
            try:
                if invoicing.invoice_finalize(invoice_id=invoice_id) is not None:
                    finalized += 1
            except ApplicationError as exc:
                self.message_user(request, f"#{invoice_id}: {exc.detail}", level=messages.ERROR)
        self.message_user(request, f"{finalized} invoice(s) finalized.")

    @admin.action(description="Void (unpaid, uncredited invoices only)", permissions=["issue"])
    def void(self, request: HttpRequest, queryset: QuerySet[Invoice]) -> None:
        voided = 0
        for invoice_id in queryset.values_list("pk", flat=True):
            try:
                invoicing.invoice_void(
                    invoice_id=invoice_id, reason=f"Voided by {request.user.get_username()}"
                )
                voided += 1
            except ApplicationError as exc:
                self.message_user(request, f"#{invoice_id}: {exc.detail}", level=messages.ERROR)
        self.message_user(request, f"{voided} invoice(s) voided.")


class PaymentForm(forms.ModelForm):
    """The payment's input; whether the invoice takes it is the service's call."""

    class Meta:
        model = Payment
        fields = ["invoice", "amount", "reference", "received_at"]


@admin.register(Payment)
class PaymentAdmin(ServiceAddMixin, HistoryAdmin):
    """Record a bank transfer against a finalized invoice; it is paid when nothing is due.
    Prepaid credit a top-up applied to invoices is listed here too (method "Prepaid credit
    applied"), recorded by the top-up itself."""

    form = PaymentForm
    refusal_fields = {
        InvoiceNotFinalized.code: ["invoice"],
        PaymentExceedsDue.code: ["amount"],
        payments.PaymentReferenceReused.code: ["reference"],
    }
    list_display = [
        "received_at",
        "invoice",
        "tenant",
        "method",
        "amount",
        "currency",
        "reference",
    ]
    list_filter = ["method", "currency"]
    search_fields = ["reference", "invoice__number", "tenant__name"]
    list_select_related = ["invoice", "tenant"]
    raw_id_fields = ["invoice"]

    def get_changeform_initial_data(self, request: HttpRequest) -> dict:
        return {"received_at": utcnow(), **super().get_changeform_initial_data(request)}

    def perform_save(self, request: HttpRequest, form: PaymentForm, change: bool) -> Payment:
        data = form.cleaned_data
        return payments.invoice_payment_record(
            invoice_id=data["invoice"].pk,
            amount=data["amount"],
            reference=data["reference"],
            received_at=data["received_at"],
            recorded_by=request.user.get_username(),
        )


class CreditNoteForm(forms.ModelForm):
    """The credit note's input; whether the invoice can take it is the service's call."""

    class Meta:
        model = CreditNote
        fields = ["invoice", "amount", "reason", "memo"]


@admin.register(CreditNote)
class CreditNoteAdmin(ServiceAddMixin, HistoryAdmin):
    """Refunds, goodwill and SLA credits on a finalized invoice, numbered CN-<year>-<n>."""

    form = CreditNoteForm
    refusal_fields = {InvoiceNotFinalized.code: ["invoice"], CreditExceedsInvoice.code: ["amount"]}
    list_display = ["number", "issued_at", "invoice", "tenant", "reason", "amount", "currency"]
    list_filter = ["reason", "currency"]
    search_fields = ["number", "invoice__number", "tenant__name"]
    list_select_related = ["invoice", "tenant"]
    raw_id_fields = ["invoice"]

    def get_readonly_fields(self, request: HttpRequest, obj: CreditNote | None = None):
        return ["number", "tenant", "currency", "issued_at", "issued_by"] if obj else []

    def perform_save(self, request: HttpRequest, form: CreditNoteForm, change: bool) -> CreditNote:
        data = form.cleaned_data
        return credit_notes.credit_note_create(
            invoice_id=data["invoice"].pk,
            amount=data["amount"],
            reason=data["reason"],
            memo=data["memo"],
            issued_by=request.user.get_username(),
        )


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = [
        "hour",
        "reservation",
        "tenant",
        "pool",
        "gpus",
        "unit_price",
        "amount",
        "provider_cost",
        "currency",
        "invoice",
    ]
    list_filter = ["currency", "pool"]
    search_fields = ["reservation__id", "tenant__name"]
    list_select_related = ["tenant", "pool", "invoice", "reservation"]
    show_full_result_count = False


@admin.register(Charge)
class ChargeAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["incurred_at", "kind", "reservation", "tenant", "amount", "currency", "invoice"]
    list_filter = ["kind", "currency"]
    search_fields = ["reservation__id", "tenant__name"]
    list_select_related = ["tenant", "invoice", "reservation"]


# --- SLA credits and usage corrections ---------------------------------------------------------


def _link(obj: object | None) -> str:
    """``obj`` as a link to its admin page (plain text when it has none)."""
    if obj is None:
        return "-"
    meta = obj._meta
    try:
        url = reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])
    except NoReverseMatch:
        return str(obj)
    return format_html('<a href="{}">{}</a>', url, obj)


@admin.register(SlaCreditRule)
class SlaCreditRuleAdmin(HistoryAdmin):
    """The SLA policy: a reservation delivered below an availability threshold in a month gets
    the credit of the lowest threshold it falls under; one displaced by a recall inside the
    pool's notice gets at least the short-notice percent. Applies to months not closed yet."""

    list_display = ["kind", "below_percent", "credit_percent"]
    list_filter = ["kind"]


@admin.register(SlaCredit)
class SlaCreditAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """What each month's close credited: written by the finalize run, one per reservation and
    month."""

    list_display = [
        "period_start",
        "reservation",
        "tenant_link",
        "incident_link",
        "promised_gpu_hours",
        "delivered_gpu_hours",
        "credit_percent",
        "amount",
        "currency",
        "credit_note_link",
    ]
    list_filter = ["period_start", "currency"]
    search_fields = ["reservation__id", "tenant__name", "credit_note__number"]
    list_select_related = ["reservation", "tenant", "incident", "credit_note"]

    @admin.display(description="Tenant", ordering="tenant__name")
    def tenant_link(self, obj: SlaCredit) -> str:
        return _link(obj.tenant)

    @admin.display(description="Incident")
    def incident_link(self, obj: SlaCredit) -> str:
        return _link(obj.incident)

    @admin.display(description="Credit note")
    def credit_note_link(self, obj: SlaCredit) -> str:
        return _link(obj.credit_note)


@admin.register(UsageCorrection)
class UsageCorrectionAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Incidents applied to usage metered before they were recorded: usage rows dropped from
    drafts, or the credit note given on an issued invoice. Written by the metering run."""

    list_display = [
        "created_at",
        "displacement",
        "incident_link",
        "tenant_link",
        "usage_removed",
        "credit_note_link",
    ]
    search_fields = ["displacement__reservation__id", "credit_note__number"]
    list_select_related = [
        "displacement__incident",
        "displacement__reservation__tenant",
        "credit_note",
    ]

    @admin.display(description="Incident")
    def incident_link(self, obj: UsageCorrection) -> str:
        return _link(obj.displacement.incident)

    @admin.display(description="Tenant")
    def tenant_link(self, obj: UsageCorrection) -> str:
        return _link(obj.displacement.reservation.tenant)

    @admin.display(description="Credit note")
    def credit_note_link(self, obj: UsageCorrection) -> str:
        return _link(obj.credit_note)


# --- tenant accounts and top-ups -----------------------------------------------------------------


class LedgerEntryInline(ReadOnlyMixin, admin.TabularInline):
    model = LedgerEntry
    fk_name = "tenant"
    extra = 0
    fields = ["created_at", "kind", "amount", "currency", "reference", "memo"]
    readonly_fields = fields
    ordering = ["-created_at", "-id"]


class TopUpForm(forms.Form):
    amount = forms.DecimalField(
        max_digits=14,
        decimal_places=2,
        min_value=Decimal("0.01"),
        help_text="Settles the tenant's unpaid invoices, oldest due first; the rest is credit.",
    )
    reference = forms.CharField(
        max_length=200, help_text="The bank transfer's reference: recording it twice is harmless."
    )
    memo = forms.CharField(max_length=500, required=False)


def _sum_of(queryset: QuerySet, field: str) -> Coalesce:
    return Coalesce(
        Subquery(
            queryset.filter(tenant=OuterRef("pk"))
            .order_by()
            .values("tenant")
            .annotate(total=Sum(field))
            .values("total")
        ),
        Value(ZERO),
        output_field=DecimalField(),
    )


class LedgerPostingForm(forms.ModelForm):
    """An operator's posting: a prepaid top-up or a signed adjustment, in the tenant's
    currency. The form only checks its input (and the ledger's unique reference); the admin
    posts it through the services (``LedgerEntryAdmin.perform_save``)."""

    class Meta:
        model = LedgerEntry
        fields = ["tenant", "kind", "amount", "reference", "memo"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["kind"].choices = [
            (LedgerEntry.Kind.TOP_UP, LedgerEntry.Kind.TOP_UP.label),
            (LedgerEntry.Kind.ADJUSTMENT, LedgerEntry.Kind.ADJUSTMENT.label),
        ]
        self.fields["reference"].help_text = "Unique per tenant and kind, e.g. TOPUP-2026-0001."
        self.fields[
            "amount"
        ].help_text = (
            "A top-up settles the tenant's unpaid invoices, oldest due first; the rest is credit."
        )


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyMixin, ServiceFormAdminMixin, admin.ModelAdmin):
    """The money ledger is append-only: entries are never changed or deleted. Operators may
    add top-ups (``payments.top_up_create``: they settle unpaid invoices, oldest due first)
    and adjustments (``accounts.ledger_post``); invoices, credit notes and payments come from
    billing."""

    refusal_fields = {accounts.LedgerReferenceReused.code: ["reference"]}
    list_display = ["created_at", "tenant", "kind", "amount", "currency", "reference", "memo"]
    list_filter = ["kind", "currency", "tenant"]
    search_fields = ["reference", "memo", "tenant__name"]
    list_select_related = ["tenant"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("billing.add_ledgerentry")

    def get_form(self, request: HttpRequest, obj: LedgerEntry | None = None, **kwargs):
        if obj is None:
            kwargs["form"] = LedgerPostingForm
            kwargs["fields"] = LedgerPostingForm.Meta.fields
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request: HttpRequest, obj: LedgerEntry | None = None):
        if obj is None:
            return LedgerPostingForm.Meta.fields
        return super().get_fields(request, obj)

    def perform_save(
        self, request: HttpRequest, form: LedgerPostingForm, change: bool
    ) -> LedgerEntry:
        data = form.cleaned_data
        tenant = data["tenant"]
        if data["kind"] == LedgerEntry.Kind.TOP_UP:
            return payments.top_up_create(
                tenant=tenant, amount=data["amount"], reference=data["reference"], memo=data["memo"]
            )
        entry, _ = accounts.ledger_post(
            tenant=tenant,
            kind=LedgerEntry.Kind.ADJUSTMENT,
            amount=data["amount"],
            currency=tenant.currency,
            reference=data["reference"],
            memo=data["memo"],
        )
        return entry


@admin.register(TenantAccount)
class TenantAccountAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Each tenant's money: ledger balance (prepaid credit when positive), what reservations
    still owe outside invoices, the credit the booking check sees, and what is overdue on
    invoices in its currency. Top-ups are added with the action (they settle unpaid invoices,
    oldest due first); the ledger is shown below each account."""

    list_display = [
        "name",
        "currency",
        "credit_limit",
        "ledger_balance",
        "uninvoiced",
        "credit_available",
        "overdue",
    ]
    search_fields = ["name", "slug"]
    list_filter = ["currency", "status"]
    fields = ["name", "currency", "credit_limit", "ledger_balance", "uninvoiced", "overdue"]
    readonly_fields = fields
    inlines = [LedgerEntryInline]
    actions = ["top_up"]

    @staticmethod
    def _figures(obj: TenantAccount) -> CreditFigures:
        # The booking check's own formula (billing.credit), once per row shown.
        if not hasattr(obj, "_credit_figures"):
            obj._credit_figures = credit_figures(tenant=obj)
        return obj._credit_figures

    @admin.display(description="Ledger balance")
    def ledger_balance(self, obj: TenantAccount) -> Decimal:
        return self._figures(obj).ledger_balance

    @admin.display(description="Uninvoiced commitments")
    def uninvoiced(self, obj: TenantAccount) -> Decimal:
        return self._figures(obj).uninvoiced_commitments

    @admin.display(description="Credit available (before tax)")
    def credit_available(self, obj: TenantAccount) -> Decimal:
        return self._figures(obj).credit_available

    @admin.display(description="Overdue invoices")
    def overdue(self, obj: TenantAccount) -> Decimal:
        return selectors.overdue_amount(tenant=obj, currency=obj.currency)

    def has_top_up_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("billing.add_ledgerentry")

    @admin.action(description="Record a prepaid top-up", permissions=["top_up"])
    def top_up(self, request: HttpRequest, queryset: QuerySet[TenantAccount]):
        if queryset.count() != 1:
            self.message_user(request, "Top up one tenant at a time.", level=messages.WARNING)
            return None
        tenant = queryset.get()
        form = TopUpForm(request.POST if "amount" in request.POST else None)
        if form.is_valid():
            try:
                payments.top_up_create(tenant=tenant, **form.cleaned_data)
            except ApplicationError as exc:
                # Shown on the form again, with what was entered (the service wrote nothing).
                reused = exc.code == accounts.LedgerReferenceReused.code
                show_refusal(form, exc, ["reference"] if reused else [])
            else:
                self.message_user(
                    request,
                    f"Top-up of {form.cleaned_data['amount']} {tenant.currency} recorded for "
                    f"{tenant.name}.",
                )
                return None
        return TemplateResponse(
            request,
            "admin/billing/top_up.html",
            {
                **self.admin_site.each_context(request),
                "title": f"Prepaid top-up for {tenant.name}",
                "opts": self.model._meta,
                "tenant": tenant,
                "form": form,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            },
        )


# --- reports -----------------------------------------------------------------------------------


def _month(value: str | None, default: datetime) -> datetime:
    try:
        return datetime.strptime(value or "", "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        return default


@admin.register(RevenueReport)
class RevenueReportAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """The operator reports page (margin per provider and per pool, utilisation, backup share)
    with a CSV download per report; ``?from=YYYY-MM&to=YYYY-MM`` picks the months (default:
    the last three). The margin reports are in REPORTING_CURRENCY and name the FX rates used."""

    def get_urls(self):
        info = self.model._meta.app_label, self.model._meta.model_name
        return [
            path(
                "csv/<slug:report>/",
                self.admin_site.admin_view(self.csv_view),
                name="{}_{}_csv".format(*info),
            ),
            *super().get_urls(),
        ]

    def _range(self, request: HttpRequest) -> tuple[datetime, datetime, datetime]:
        """(first month, last month, end of the last month) from ``?from=&to=``."""
        this_month = invoicing.month_start(utcnow())
        first = _month(request.GET.get("from"), _months_back(this_month, 2))
        last = max(first, _month(request.GET.get("to"), this_month))
        return first, last, invoicing.next_month(last)

    def changelist_view(self, request: HttpRequest, extra_context=None):
        if not self.has_view_permission(request):
            return super().changelist_view(request, extra_context)
        start, last, end = self._range(request)
        return TemplateResponse(
            request,
            "admin/billing/report.html",
            {
                **self.admin_site.each_context(request),
                "title": "Revenue & utilisation",
                "opts": self.model._meta,
                "reports": [
                    (report, reverse("admin:billing_revenuereport_csv", args=[report.slug]))
                    for report in reports.reports_build(start=start, end=end)
                ],
                "from": f"{start:%Y-%m}",
                "to": f"{last:%Y-%m}",
                "query": request.GET.urlencode(),
                "reporting_currency": settings.REPORTING_CURRENCY,
            },
        )

    def csv_view(self, request: HttpRequest, report: str) -> HttpResponse:
        if report not in reports.REPORTS or not self.has_view_permission(request):
            return HttpResponse(status=404)
        start, last, end = self._range(request)
        built = reports.REPORTS[report](start=start, end=end)
        response = HttpResponse(built.to_csv(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = (
            f'attachment; filename="{report}-{start:%Y-%m}-{last:%Y-%m}.csv"'
        )
        return response


def _months_back(month: datetime, count: int) -> datetime:
    for _ in range(count):
        month = invoicing.month_start(month - timedelta(days=1))
    return month


# --- FX rates ----------------------------------------------------------------------------------


class FxRateForm(forms.ModelForm):
    class Meta:
        model = FxRate
        fields = ["currency", "effective_from", "rate", "source"]

    def clean_currency(self) -> str:
        currency = self.cleaned_data["currency"]
        if currency == settings.REPORTING_CURRENCY:
            raise forms.ValidationError(
                f"{currency} is the reporting currency: its rate is always 1."
            )
        return currency


@admin.register(FxRate)
class FxRateAdmin(HistoryAdmin):
    """The FX table the reports convert with: what one unit of a currency is worth in the
    reporting currency (REPORTING_CURRENCY) from a date on, until the next row of that
    currency. A report names the rates it used, and an amount dated before a currency's first
    rate is reported as missing a rate, never converted at a guess. The database constraints
    (rate above zero, one rate per currency and date) are checked by the form."""

    form = FxRateForm
    list_display = ["currency", "effective_from", "rate", "source", "created_at"]
    list_editable = ["rate", "source"]
    list_filter = ["currency"]
    search_fields = ["currency", "source"]
    ordering = ["-effective_from", "currency"]
    date_hierarchy = "effective_from"
