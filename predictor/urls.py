from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from predictor import api, views

app_name = "predictor"

urlpatterns = [
    path("", views.index, name="index"),
    path("history/", views.history, name="history"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("drawings/<uuid:drawing_id>/image", views.drawing_image, name="drawing-image"),
    path("api/predictions/", api.PredictionCreateApi.as_view(), name="prediction-create"),
    path("api/predictions/<uuid:drawing_id>/", api.PredictionDetailApi.as_view(), name="prediction-detail"),
    path(
        "api/predictions/<uuid:drawing_id>/feedback/",
        api.PredictionFeedbackApi.as_view(),
        name="prediction-feedback",
    ),
    path("api/health/", api.HealthApi.as_view(), name="health"),
    # Text first, so a browser shows the schema; clients asking for YAML or JSON by type still get it.
    path(
        "api/schema/",
        SpectacularAPIView.as_view(renderer_classes=[api.SchemaTextRenderer, *SpectacularAPIView.renderer_classes]),
        name="schema",
    ),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="predictor:schema"), name="api-docs"),
]
