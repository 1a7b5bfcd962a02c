from django.urls import path

from billing.api import views

urlpatterns = [
    path("invoices/", views.InvoiceListApi.as_view(), name="invoice-list"),
    path("invoices/<int:pk>/", views.InvoiceDetailApi.as_view(), name="invoice-detail"),
    path("usage/", views.UsageApi.as_view(), name="billing-usage"),
    path("balance/", views.BalanceApi.as_view(), name="billing-balance"),
]
