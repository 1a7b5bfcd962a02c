from django.urls import path

from marketplace.api import views

# Reservation ids are matched as strings so that a malformed id is a JSON 404 from the API,
# not the HTML 404 of an unmatched URL.
urlpatterns = [
    path("availability/", views.AvailabilityApi.as_view(), name="availability"),
    path(
        "availability/earliest/",
        views.EarliestWindowsApi.as_view(),
        name="availability-earliest",
    ),
    path("quotes/", views.QuoteCreateApi.as_view(), name="quote-create"),
    path("reservations/", views.ReservationListCreateApi.as_view(), name="reservation-list"),
    path(
        "reservations/<str:reservation_id>/",
        views.ReservationDetailApi.as_view(),
        name="reservation-detail",
    ),
    path(
        "reservations/<str:reservation_id>/cancel/",
        views.ReservationCancelApi.as_view(),
        name="reservation-cancel",
    ),
    path(
        "reservations/<str:reservation_id>/extend/",
        views.ReservationExtendApi.as_view(),
        name="reservation-extend",
    ),
    path("tenant/", views.TenantApi.as_view(), name="tenant"),
    path("api-keys/", views.ApiKeyListCreateApi.as_view(), name="api-key-list"),
    path("api-keys/<str:key_id>/", views.ApiKeyDetailApi.as_view(), name="api-key-detail"),
]
