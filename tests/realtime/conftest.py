"""Desk sockets in tests: sessions for agents, and sockets in-process (Channels' WebsocketCommunicator)."""

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from asgiref.testing import ApplicationCommunicator
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from bots.application import shutdown_application
from supportsite.asgi import application
from tests.conftest import unique_bot_token
from tickets import services
from tickets.services import TelegramProfile

ORIGIN = "http://127.0.0.1"
TIMEOUT = 10

# The communicators the running test opened; close_all() ends them, so no consumer outlives its test's loop.
_opened = []


def logged_in(user):
    """A test client (a browser) logged in as ``user``."""
    client = Client()
    client.force_login(user)
    return client


def session_cookie(user):
    """A logged-in session for ``user``, as the value of the session cookie."""
    return logged_in(user).cookies[settings.SESSION_COOKIE_NAME].value


def customer_writes(user_id=111, text="hello", telegram_message_id=1):
    message, _ = services.record_inbound_message(
        TelegramProfile(user_id=user_id, first_name="Alice"), text=text, telegram_message_id=telegram_message_id
    )
    return message


@pytest_asyncio.fixture
async def sandbox_bot(sandbox, settings):
    """This process's bot talks to the test's sandbox (agent typing reaches Telegram through it). Afterwards
    the test's sockets are closed and the bot shut down, before the test's event loop ends."""
    bot = sandbox.client(unique_bot_token())
    settings.TELEGRAM_BOT_TOKEN = bot.token
    settings.TELEGRAM_API_URL = sandbox.url
    yield bot
    await close_all()
    await shutdown_application()


@pytest.fixture
def ticket(transactional_db):
    return customer_writes().ticket


class Communicator(WebsocketCommunicator):
    """Channels' WebsocketCommunicator without its test-only patch that stops consumers from closing their
    database connections: the consumers' worker threads would keep pooled connections until the pool ran dry."""

    async def send_input(self, message):
        return await ApplicationCommunicator.send_input(self, message)

    async def receive_output(self, timeout=1):
        return await ApplicationCommunicator.receive_output(self, timeout)


class Socket:
    """A desk socket on the in-process ASGI application, speaking JSON."""

    def __init__(self, communicator):
        self.communicator = communicator

    async def send(self, frame):
        await self.communicator.send_json_to(frame)

    async def receive(self):
        return await self.communicator.receive_json_from(TIMEOUT)

    async def receive_until(self, event_type):
        """The events received up to and including the first of ``event_type``."""
        received = [await self.receive()]
        while received[-1]["type"] != event_type:
            received.append(await self.receive())
        return received

    async def resume(self, after=0):
        """Resume after ``after``; returns the replayed events (``resumed`` excluded)."""
        await self.send({"type": "resume", "after": after})
        return (await self.receive_until("resumed"))[:-1]

    async def close(self):
        await self.communicator.disconnect()


async def open_socket(path, user=None, origin=ORIGIN, browser=None):
    """(accepted, communicator) for a socket opened as ``user`` (None: no session), or in the session of
    ``browser`` (a logged-in test client)."""
    headers = [(b"origin", origin.encode())]
    if browser is not None:
        cookie = browser.cookies[settings.SESSION_COOKIE_NAME].value
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    elif user is not None:
        cookie = await sync_to_async(session_cookie)(user)
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    communicator = Communicator(application, path, headers=headers)
    _opened.append(communicator)
    accepted, _ = await communicator.connect(TIMEOUT)
    return accepted, communicator


async def close_all():
    """Disconnect every socket the test opened (a consumer left running would hang its loop's closing)."""
    while _opened:
        await _opened.pop().disconnect(timeout=TIMEOUT)


async def connect(path, user):
    """An open desk socket for ``user``; fails the test if it was refused or closed."""
    accepted, communicator = await open_socket(path, user)
    assert accepted
    return Socket(communicator)
