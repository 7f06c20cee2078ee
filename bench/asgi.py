"""The product's ASGI application with the bare relay beside it (bench.settings points here)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

from supportsite.asgi import application as site_application

from .relay import RELAY_PATH, RelayConsumer

relay = RelayConsumer.as_asgi()


async def application(scope, receive, send):
    if scope["type"] == "websocket" and scope["path"] == RELAY_PATH:
        return await relay(scope, receive, send)
    return await site_application(scope, receive, send)
