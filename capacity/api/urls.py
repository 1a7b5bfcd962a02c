from rest_framework.routers import SimpleRouter

from capacity.api import views

router = SimpleRouter()
router.register("providers", views.ProviderViewSet, basename="provider")
router.register("regions", views.RegionViewSet, basename="region")
router.register("gpu-models", views.GpuModelViewSet, basename="gpu-model")
router.register("pools", views.PoolViewSet, basename="pool")

urlpatterns = router.urls
