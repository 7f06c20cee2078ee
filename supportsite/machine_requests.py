"""Requests from machines, answered in front of Django's request cycle.

The health probes and Telegram's webhook need no session, user, CSRF token, messages, CSP or frame options,
and they do their database work on threads that give their connections back themselves (bots.db_executor,
ops.health), never on the request's own. Django's ASGI handler still starts a thread for every request,
hands its request_started and request_finished signals and the response's closing to that thread, and
watches for the client's disconnect in a task of its own: 1.3 of the 5.2 ms of the server's CPU that a
webhook update cost (docs/performance.md, "Machine requests in front of Django"). So an ASGI application
in front of Django's handler answers these requests itself, with Django's request and response classes:

- the probes (``ops.views.PROBES``) before host validation too, since load balancers and supervisors probe
  a server by its address (``Host: 10.0.0.5:8000``), which ``ALLOWED_HOSTS`` would refuse;
- views marked with ``machine_endpoint`` (the webhook) after host validation, straight from the URLconf,
  with SecurityMiddleware's checks and headers applied inline (no I/O there): an HTTPS-only deployment
  redirects them like any other request.

An exception is answered as Django's handler answers it (400 for a host not allowed, 500 logged by
django.request, got_request_exception sent); a response the view returns with an error status is not
logged by django.request as Django's handler would (the webhook logs every request itself). Every other
request goes on to Django's handler, and so do machine endpoints under Django's test client.
"""

import io

from asgiref.sync import iscoroutinefunction
from django.core.handlers.asgi import get_script_prefix
from django.core.handlers.exception import response_for_exception
from django.middleware.security import SecurityMiddleware
from django.urls import Resolver404, resolve, set_script_prefix

from ops.views import PROBES, answer_probe


def machine_endpoint(view):
    """Mark an async view as one that machines call with a credential of their own (a secret header): it is
    served in front of Django's request cycle, without the browser middleware and without a thread of its
    own. So it must not touch the database on the request's thread (the async ORM, a thread-sensitive
    ``sync_to_async``), since no request_finished gives that thread's connection back: its database work
    goes through ``bots.db_executor.run_in_db_thread``."""
    if not iscoroutinefunction(view):
        raise TypeError(f"{view.__qualname__}: a machine endpoint must be an async view")
    view.machine_endpoint = True
    return view


def _machine_view(path_info):
    """The URLconf's match for the path if its view is a machine endpoint, else None."""
    try:
        match = resolve(path_info)
    except Resolver404:
        return None
    return match if getattr(match.func, "machine_endpoint", False) else None


class MachineRequests:
    """ASGI application: the probes and the machine endpoints answered here, the rest by ``django_app`` (Django's
    ASGIHandler, whose way of sending a response is used for these too)."""

    def __init__(self, django_app):
        self.django_app = django_app
        # Only its checks of the request and the response are used: nothing comes after it to call.
        self.security = SecurityMiddleware(get_response=lambda request: None)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            # The path within the site, as ASGIRequest computes it.
            path_info = scope["path"].removeprefix(get_script_prefix(scope))
            probe = PROBES.get(path_info)
            match = None if probe is not None else _machine_view(path_info)
            if probe is not None or match is not None:
                body = await _read_body(receive)
                if body is None:
                    return  # the client went away
                request, refusal = self.django_app.create_request(scope, io.BytesIO(body))
                if request is None:
                    return await self.django_app.send_response(refusal, send)  # headers not decodable: 400
                set_script_prefix(get_script_prefix(scope))  # for reverse(), as Django's handler does
                response = await self._respond(request, probe, match)
                return await self.django_app.send_response(response, send)
        return await self.django_app(scope, receive, send)

    async def _respond(self, request, probe, match):
        try:
            if probe is not None:
                response = await answer_probe(request, probe)  # whatever the host, over plain HTTP too
            else:
                request.get_host()  # DisallowedHost (400) for a host not in ALLOWED_HOSTS, as CommonMiddleware would
                response = self.security.process_request(request)  # SECURE_SSL_REDIRECT
                if response is None:
                    request.resolver_match = match
                    response = await match.func(request, *match.args, **match.kwargs)
        except Exception as error:
            response = response_for_exception(request, error)
        return self.security.process_response(request, response)


async def _read_body(receive):
    """The request's whole body, or None if the client disconnected first. (The server and
    supportsite.body_limit have already bounded its size.)"""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
