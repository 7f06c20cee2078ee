"""Requests from machines, answered before the middleware that serves browsers.

The health probes and Telegram's webhook need no session, user, CSRF token, messages, CSP or frame
options. Under ASGI each of Django's ``MiddlewareMixin`` middlewares hands its ``process_request`` and
``process_response`` to the request's thread (``sync_to_async``): about fourteen thread hops per request,
a fifth of a webhook update's CPU (bench/profiles/webhook-after.txt). So the outermost middleware answers
these requests itself:

- the probes (``ops.views.PROBES``) before host validation too, since load balancers and supervisors probe
  a server by its address (``Host: 10.0.0.5:8000``), which ``ALLOWED_HOSTS`` would refuse;
- views marked with ``machine_endpoint`` (the webhook) after host validation, straight from the URLconf,
  with SecurityMiddleware's checks and headers applied inline (no I/O there, so no thread): an HTTPS-only
  deployment redirects them like any other request.
"""

from asgiref.sync import async_to_sync, iscoroutinefunction, markcoroutinefunction
from django.middleware.security import SecurityMiddleware
from django.urls import Resolver404, resolve

from ops.views import PROBES, answer_probe


def machine_endpoint(view):
    """Mark an async view as one that machines call with a credential of their own (a secret header):
    it is served without the browser middleware (sessions, authentication, CSRF, messages, CSP)."""
    if not iscoroutinefunction(view):
        raise TypeError(f"{view.__qualname__}: a machine endpoint must be an async view")
    view.machine_endpoint = True
    return view


def _machine_view(request):
    """The URLconf's match for the request if its view is a machine endpoint, else None."""
    try:
        match = resolve(request.path_info, getattr(request, "urlconf", None))
    except Resolver404:
        return None
    return match if getattr(match.func, "machine_endpoint", False) else None


def machine_requests_first(get_response):
    """Middleware (first in MIDDLEWARE): answer the probes and the machine endpoints, pass the rest on."""
    if iscoroutinefunction(get_response):
        security = SecurityMiddleware(get_response)

        async def middleware(request):
            if (probe := PROBES.get(request.path_info)) is not None:
                return await answer_probe(request, probe)
            if (match := _machine_view(request)) is None:
                return await get_response(request)
            request.get_host()  # DisallowedHost (400) for a host not in ALLOWED_HOSTS, as CommonMiddleware would
            if (redirect := security.process_request(request)) is not None:
                return redirect  # SECURE_SSL_REDIRECT
            request.resolver_match = match
            response = await match.func(request, *match.args, **match.kwargs)
            return security.process_response(request, response)

        return markcoroutinefunction(middleware)

    # Under WSGI (Django's test client) only the probes take the short way: the middleware has no threads to save.
    def middleware(request):
        probe = PROBES.get(request.path_info)
        return get_response(request) if probe is None else async_to_sync(answer_probe)(request, probe)

    return middleware


machine_requests_first.sync_capable = machine_requests_first.async_capable = True
