"""The product's URLs plus the bare baseline view (never in the production URLconf)."""

from django.urls import path

from supportsite.urls import urlpatterns as site_urlpatterns

from .views import bare_insert

urlpatterns = [*site_urlpatterns, path("bench/insert/", bare_insert, name="bench-insert")]
