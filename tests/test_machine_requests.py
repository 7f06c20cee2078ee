"""supportsite.machine_requests in-process, as the ASGI server calls it: machine endpoints answered in front of
Django's request cycle with Django's checks and error handling, everything else handed on."""

import asyncio
import json
import logging

import pytest
from django.core.handlers.asgi import ASGIHandler
from django.http import JsonResponse
from django.urls import path

from supportsite.machine_requests import MachineRequests, machine_endpoint
from supportsite.urls import urlpatterns as site_urlpatterns


@machine_endpoint
async def answers(request):
    return JsonResponse({"body": json.loads(request.body)})


@machine_endpoint
async def fails(request):
    raise RuntimeError("the endpoint broke")


urlpatterns = [path("machine/", answers), path("broken/", fails), *site_urlpatterns]


@pytest.fixture
def app(settings):
    settings.ROOT_URLCONF = __name__
    settings.ALLOWED_HOSTS = ["support.example.com"]
    handed_on = []

    class Django(ASGIHandler):
        async def __call__(self, scope, receive, send):
            handed_on.append(scope["path"])
            await super().__call__(scope, receive, send)

    machine_requests = MachineRequests(Django())
    machine_requests.handed_on = handed_on
    return machine_requests


def call(app, path, *, host="support.example.com", body=b"{}", method="POST", disconnect=False):
    """The response's status, headers and body, or None if nothing was sent."""
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": b"",
        "headers": [(b"host", host.encode()), (b"content-type", b"application/json")],
    }
    received = [{"type": "http.disconnect"}] if disconnect else [{"type": "http.request", "body": body}]
    sent = []

    async def receive():
        if received:
            return received.pop(0)
        await asyncio.Event().wait()  # the client stays connected

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    if not sent:
        return None
    start, *bodies = sent
    return start["status"], dict(start["headers"]), b"".join(part.get("body", b"") for part in bodies)


@pytest.mark.django_db
def test_a_machine_endpoint_is_answered_here_with_its_body_and_the_security_headers(app):
    status, headers, body = call(app, "/machine/", body=b'{"update_id": 1}')

    assert (status, json.loads(body)) == (200, {"body": {"update_id": 1}})
    assert headers[b"X-Content-Type-Options"] == b"nosniff"
    assert app.handed_on == []


@pytest.mark.django_db
def test_a_machine_endpoint_validates_the_host_as_django_does_and_its_400_has_the_security_headers(app, caplog):
    status, headers, _ = call(app, "/machine/", host="evil.example")

    assert status == 400 and headers[b"X-Content-Type-Options"] == b"nosniff"
    assert any(record.name == "django.security.DisallowedHost" for record in caplog.records)
    assert app.handed_on == []


@pytest.mark.django_db
def test_an_error_in_a_machine_endpoint_is_a_500_logged_as_django_logs_it_with_the_security_headers(app, caplog):
    with caplog.at_level(logging.ERROR, logger="django.request"):
        status, headers, body = call(app, "/broken/")

    assert status == 500 and headers[b"X-Content-Type-Options"] == b"nosniff"
    assert app.handed_on == []
    assert b"the endpoint broke" not in body
    (record,) = [record for record in caplog.records if record.name == "django.request"]
    assert record.exc_info[1].args == ("the endpoint broke",)


@pytest.mark.django_db
def test_other_requests_go_on_to_django_and_a_client_gone_before_its_body_gets_nothing(app):
    status, headers, _ = call(app, "/accounts/login/", method="GET")

    assert status == 200 and b"X-Frame-Options" in headers  # the browser middleware's work
    assert app.handed_on == ["/accounts/login/"]
    assert call(app, "/machine/", disconnect=True) is None
    assert app.handed_on == ["/accounts/login/"]
