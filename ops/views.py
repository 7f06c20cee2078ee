"""Readiness for load balancers and orchestrators: GET /readyz (liveness, /healthz, does no I/O)."""

import asyncio

from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from .health import check_health

# The health check under way in this process: probes arriving meanwhile share it rather than pile up
# threads and connections on a service that is already slow.
_in_flight = None


@never_cache
@require_GET
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
