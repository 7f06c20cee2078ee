"""The health probes: GET /healthz (liveness, no I/O) and GET /readyz (readiness, the health checks).

They are answered in front of Django's request cycle (supportsite.machine_requests), before anything else runs:
load balancers and process supervisors probe a server by its address (``Host: 10.0.0.5:8000``), which
``ALLOWED_HOSTS`` would refuse with 400, and a probe needs no session, CSRF check or HTTPS redirect.
"""

import asyncio

from django.http import HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.utils.cache import add_never_cache_headers

from .health import check_health

# The health check under way in this process: probes arriving meanwhile share it rather than pile up
# threads and connections on a service that is already slow.
_in_flight = None


async def healthz(request):
    """Liveness: the process is up and serving requests."""
    return HttpResponse("ok\n", content_type="text/plain")


async def readyz(request):
    """The health report as JSON (see ops.health); 503 when a critical check fails. Answers within
    HEALTH_TIMEOUT whatever the services do, and says nothing about hosts, secrets or settings."""
    global _in_flight
    if _in_flight is None:
        _in_flight = asyncio.ensure_future(check_health())
        _in_flight.add_done_callback(_finished)
    report = await asyncio.shield(_in_flight)
    return JsonResponse(report.as_json(), status=200 if report.ready else 503)


def _finished(task):
    global _in_flight
    _in_flight = None


PROBES = {"/healthz": healthz, "/readyz": readyz}


async def answer_probe(request, probe):
    response = await probe(request) if request.method in ("GET", "HEAD") else HttpResponseNotAllowed(["GET"])
    add_never_cache_headers(response)
    return response
