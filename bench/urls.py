"""The product's URLs plus the bare baseline view (never in the production URLconf)."""

from django.urls import path

from supportsite.urls import urlpatterns as site_urlpatterns

from .endpoints import BARE_BEHIND_MIDDLEWARE_PATH, BARE_IN_FRONT_PATH, BARE_PATH
from .views import bare_insert, bare_insert_in_front

urlpatterns = [
    *site_urlpatterns,
    path(BARE_PATH[1:], bare_insert, name="bench-insert"),
    path(BARE_IN_FRONT_PATH[1:], bare_insert_in_front, name="bench-insert-in-front"),
    # The same view as BARE_PATH's: bench.asgi serves that path with no middleware, this one with the site's.
    path(BARE_BEHIND_MIDDLEWARE_PATH[1:], bare_insert, name="bench-insert-behind-middleware"),
]
