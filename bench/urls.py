"""The product's URLs plus the bare baseline view (never in the production URLconf)."""

from django.urls import path

from supportsite.urls import urlpatterns as site_urlpatterns

from .endpoints import BARE_BEHIND_MIDDLEWARE_PATH, BARE_PATH
from .views import bare_insert, bare_insert_behind_middleware

urlpatterns = [
    *site_urlpatterns,
    path(BARE_PATH[1:], bare_insert, name="bench-insert"),
    path(BARE_BEHIND_MIDDLEWARE_PATH[1:], bare_insert_behind_middleware, name="bench-insert-behind-middleware"),
]
