"""ASGI entry point: HTTP through Django behind a request-body limit, WebSockets through Channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "supportsite.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402  (needs Django set up first)
from django.conf import settings  # noqa: E402

from .body_limit import BodySizeLimit, limit_daphne_request_bodies  # noqa: E402

limit_daphne_request_bodies(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)

application = ProtocolTypeRouter(
    {
        "http": BodySizeLimit(django_asgi_app, max_bytes=settings.DATA_UPLOAD_MAX_MEMORY_SIZE),
    }
)
