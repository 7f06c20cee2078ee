"""The product's ASGI application with the bare relay and the no-middleware baseline beside it (bench.settings
points here)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

from django.core.handlers.asgi import ASGIHandler
from django.test.utils import override_settings

from supportsite.asgi import application as site_application

from .endpoints import BARE_PATH
from .relay import RELAY_PATH, RelayConsumer

relay = RelayConsumer.as_asgi()

# Django's request cycle for the bare view, with no middleware: a handler loads its middleware as it starts.
with override_settings(MIDDLEWARE=[]):
    bare_django = ASGIHandler()


async def application(scope, receive, send):
    if scope["type"] == "websocket" and scope["path"] == RELAY_PATH:
        return await relay(scope, receive, send)
    if scope["type"] == "http" and scope["path"] == BARE_PATH:
        return await bare_django(scope, receive, send)
    return await site_application(scope, receive, send)
