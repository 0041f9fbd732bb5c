"""URL configuration: the admin, and the predictor app (pages and api/)."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("predictor.urls")),
]
