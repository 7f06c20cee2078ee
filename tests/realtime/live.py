"""The desk against real server processes: agents logged in through a server, real WebSocket clients."""

import json
from contextlib import contextmanager

import httpx
from django.contrib.auth import get_user_model
from websockets.sync.client import connect

from tests.conftest import wait_until
from tickets.models import Message

from .conftest import TIMEOUT


def log_in(url, username, password):
    """Log in through the admin login page of the server at ``url``, as a browser does; returns the session
    cookie."""
    with httpx.Client(base_url=url, timeout=30) as browser:
        browser.get("/admin/login/")
        login = {"username": username, "password": password, "csrfmiddlewaretoken": browser.cookies["csrftoken"]}
        response = browser.post("/admin/login/", data=login)
        assert response.status_code == 302, response.text
        return browser.cookies["sessionid"]


def staff_session(server, username):
    """A new agent, logged in through ``server``: (user, session cookie)."""
    user = get_user_model().objects.create_user(username, password=f"{username}-password-1", is_staff=True)
    return user, log_in(server.url, username, f"{username}-password-1")


class LiveSocket:
    """A desk socket on a live server, as a client sees it; it remembers every event it received."""

    def __init__(self, websocket):
        self.websocket = websocket
        self.received = []

    def send(self, frame):
        self.websocket.send(json.dumps(frame))

    def receive(self):
        event = json.loads(self.websocket.recv(TIMEOUT))
        self.received.append(event)
        return event

    def receive_until(self, predicate):
        """The events received up to and including the first for which ``predicate`` is true."""
        events = [self.receive()]
        while not predicate(events[-1]):
            events.append(self.receive())
        return events

    def resume(self, after):
        """Resume after ``after``: the replayed events, ``resumed`` excluded (it is the last of ``received``)."""
        self.send({"type": "resume", "after": after})
        return self.receive_until(lambda event: event["type"] == "resumed")[:-1]

    def seqs(self):
        """The seqs of the ticket events received, in order of arrival."""
        return [event["seq"] for event in self.received if event["type"] not in ("resumed", "typing", "error")]


@contextmanager
def live_socket(url, cookie, path):
    """A LiveSocket on ``path`` of the server at ``url``, as the agent of the session ``cookie``; closed after."""
    with connect(
        url.replace("http://", "ws://") + path,
        origin=url,
        additional_headers={"Cookie": f"sessionid={cookie}"},
        open_timeout=TIMEOUT,
    ) as websocket:
        yield LiveSocket(websocket)


def stored_message(text, telegram_user_id):
    """The customer's message with ``text`` once the webhook has stored it."""
    return wait_until(
        lambda: Message.objects.filter(text=text, ticket__customer__telegram_user_id=telegram_user_id).first(),
        message=f"the message {text!r} to be stored",
    )
