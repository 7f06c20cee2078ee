"""ASGI entry point: HTTP behind a request-body limit, machines' requests answered in front of Django's request
cycle (supportsite.machine_requests) and the rest by Django; the desk's WebSockets through Channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "supportsite.settings")
django_asgi_app = get_asgi_application()

# Everything below needs Django set up first.
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from realtime.routing import websocket_urlpatterns  # noqa: E402

from .body_limit import BodySizeLimit, install_daphne_request_class  # noqa: E402
from .machine_requests import MachineRequests  # noqa: E402
from .worker_in_server import WorkerInServer  # noqa: E402

install_daphne_request_class(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)

application = ProtocolTypeRouter(
    {
        "http": BodySizeLimit(MachineRequests(django_asgi_app), max_bytes=settings.DATA_UPLOAD_MAX_MEMORY_SIZE),
        # Identity and role come from the session cookie only; a page of another origin cannot connect.
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
if settings.WORKER_IN_SERVER:
    # One process does it all (SUPPORTSITE_SINGLE_PROCESS, `make run`): the worker's delivery ticks reach
    # the sockets through this process's channel layer.
    application = WorkerInServer(application)
