"""Bounded database connections (G9): the pool holds under load, and nothing keeps a pooled connection
while it waits on the network."""

import asyncio
import threading
import uuid

import httpx
import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from tests.bots import factories
from tests.conftest import SUBPROCESS_SECRET_KEY, WEBHOOK_SECRET, wait_until
from tests.conftest import test_database_url as server_database_url
from tickets import services
from tickets.models import Message

pytestmark = pytest.mark.needs_postgres

POOL_MAX = 4


SERVER = "supportsite-under-test"


class ConnectionSampler:
    """Counts the server's connections to PostgreSQL (by their application_name) every few milliseconds."""

    QUERY = f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{SERVER}'"

    def __init__(self):
        self.samples = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        with psycopg.connect(server_database_url().replace("postgres://", "postgresql://"), autocommit=True) as conn:
            while not self.stopped.is_set():
                self.samples.append(conn.execute(self.QUERY).fetchone()[0])
                self.stopped.wait(0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stopped.set()
        self.thread.join()


def test_2000_webhook_requests_at_50_concurrent_stay_within_the_pool(start_server):
    server = start_server(
        DATABASE_URL=f"{server_database_url()}?application_name={SERVER}",
        DATABASE_POOL_MAX_SIZE=POOL_MAX,
        DATABASE_POOL_TIMEOUT=30,
    )
    updates = [factories.update(100_000 + i % 300, f"message {i}") for i in range(2000)]

    async def send_all():
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            gate = asyncio.Semaphore(50)

            async def post(update):
                async with gate:
                    response = await client.post(
                        f"{server.url}/telegram/webhook/",
                        json=update,
                        headers={"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET},
                    )
                    return response.status_code

            return await asyncio.gather(*(post(update) for update in updates))

    with ConnectionSampler() as during:
        statuses = asyncio.run(send_all())
    with ConnectionSampler() as after:
        wait_until(lambda: len(after.samples) >= 20, message="samples after the run")

    assert statuses == [200] * 2000
    assert Message.objects.filter(direction=Message.Direction.IN).count() == 2000
    assert len(during.samples) > 50
    assert max(during.samples) <= POOL_MAX, f"peak {max(during.samples)} connections"
    assert max(after.samples) <= POOL_MAX
    print(f"\nserver connections: peak {max(during.samples)}, {after.samples[-1]} after the run")


def logged_in_agents(count, settings):
    """``count`` agents, each with a session cookie (signed for the servers the tests start) and a CSRF
    token a browser would send."""
    settings.SECRET_KEY = SUBPROCESS_SECRET_KEY
    agents = []
    for number in range(count):
        user = get_user_model().objects.create_user(f"typist{number}", password="pw-typist", is_staff=True)
        browser = Client()
        browser.force_login(user)
        csrf = uuid.uuid4().hex  # a CSRF secret (32 characters), sent as cookie and header alike
        agents.append({"sessionid": browser.cookies["sessionid"].value, "csrftoken": csrf})
    return agents


def test_ten_agents_typing_while_telegram_is_slow_do_not_starve_the_webhook(start_server, sandbox, settings):
    server = start_server(DATABASE_POOL_MAX_SIZE=POOL_MAX, DATABASE_POOL_TIMEOUT=2)
    bot = sandbox.client(server.token)
    tickets = []
    for number in range(10):
        bot.send_message(200 + number, "hello")  # the customer's chat, as Telegram knows it
        customer, _ = services.get_or_create_customer(services.TelegramProfile(user_id=200 + number, first_name="C"))
        tickets.append(services.get_or_open_ticket(customer)[0])
    agents = logged_in_agents(10, settings)
    bot.add_fault("sendChatAction", delay=8, times=None)

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:

            async def type_in(ticket, agent):
                async with httpx.AsyncClient(base_url=server.url, timeout=60, cookies=agent) as browser:
                    response = await browser.post(
                        reverse("admin:tickets_ticket_typing", args=[ticket.pk]),
                        headers={"X-CSRFToken": agent["csrftoken"]},
                    )
                return response.status_code, response.json() if response.status_code == 200 else response.text

            typing = [asyncio.create_task(type_in(*pair)) for pair in zip(tickets, agents, strict=True)]
            # As many typing requests wait on Telegram's slow sendChatAction as the pool has connections: had
            # they kept theirs, the pool would now be empty.
            await asyncio.to_thread(bot.wait_until, lambda: len(bot.calls("sendChatAction")) >= POOL_MAX, 30)
            webhook = await client.post(
                "/telegram/webhook/",
                json=factories.update(300, "a customer writes meanwhile"),
                headers={"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET},
            )
            return webhook.status_code, await asyncio.gather(*typing)

    webhook_status, typing_answers = asyncio.run(scenario())

    assert webhook_status == 200
    assert typing_answers == [(200, {"shown": True})] * 10
    assert Message.objects.filter(text="a customer writes meanwhile").exists()


def test_after_a_burst_of_updates_the_webhook_threads_hold_no_connection(start_server, settings):
    server = start_server(DATABASE_POOL_MAX_SIZE=POOL_MAX, DATABASE_POOL_TIMEOUT=2)
    (agent,) = logged_in_agents(1, settings)
    updates = [factories.update(400_000 + i, f"burst {i}") for i in range(10 * POOL_MAX)]

    async def burst():
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        f"{server.url}/telegram/webhook/",
                        json=update,
                        headers={"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET},
                    )
                    for update in updates
                )
            )

    statuses = [response.status_code for response in asyncio.run(burst())]
    # Every one of the webhook's threads has run an update by now; had any kept its connection, pages needing
    # the database would wait for the pool's timeout. As many pages at once as the pool has connections:
    pages = asyncio.run(desk_pages_at_once(server, agent, POOL_MAX))

    assert statuses == [200] * len(updates)
    assert pages == [200] * POOL_MAX


async def desk_pages_at_once(server, agent, count):
    async with httpx.AsyncClient(base_url=server.url, timeout=60, cookies=agent) as browser:
        responses = await asyncio.gather(*(browser.get(reverse("desk-inbox")) for _ in range(count)))
    return [response.status_code for response in responses]
