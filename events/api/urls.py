from django.urls import path

from events.api import views

# Ids are matched as strings so that a malformed id is a JSON 404 from the API, not the HTML
# 404 of an unmatched URL.
urlpatterns = [
    path("events/", views.EventListApi.as_view(), name="event-list"),
    path("events/<str:event_id>/", views.EventDetailApi.as_view(), name="event-detail"),
    path(
        "webhook-endpoints/",
        views.EndpointListCreateApi.as_view(),
        name="webhook-endpoint-list",
    ),
    path(
        "webhook-endpoints/<str:endpoint_id>/",
        views.EndpointDetailApi.as_view(),
        name="webhook-endpoint-detail",
    ),
    path(
        "webhook-endpoints/<str:endpoint_id>/rotate-secret/",
        views.EndpointRotateSecretApi.as_view(),
        name="webhook-endpoint-rotate-secret",
    ),
    path(
        "webhook-endpoints/<str:endpoint_id>/deliveries/",
        views.EndpointDeliveryListApi.as_view(),
        name="webhook-delivery-list",
    ),
    path(
        "webhook-deliveries/<str:delivery_id>/",
        views.DeliveryDetailApi.as_view(),
        name="webhook-delivery-detail",
    ),
]
