"""The desk's attachments proxy (SPEC §4) on a real daphne server against the sandbox: a customer's file
reaches an agent's browser through the server, and Telegram's file URL (with the bot token) never does."""

import asyncio
from types import SimpleNamespace

import httpx
import pytest
from django.urls import reverse

from tests.bots import factories
from tests.conftest import WEBHOOK_SECRET, wait_until
from tests.e2e.pictures import png
from tickets.models import Message


@pytest.fixture
def start_desk(start_server, sandbox, agent):
    """A server whose sandbox bot delivers updates to it, and an HTTP client logged in as an agent."""

    def start(**env):
        server = start_server(**env)
        bot = sandbox.client(server.token)
        bot.set_webhook(f"{server.url}/telegram/webhook/", secret=WEBHOOK_SECRET)
        return SimpleNamespace(server=server, bot=bot, browser=logged_in(server, "agent", "agent-password"))

    return start


def logged_in(server, username, password):
    """An HTTP client that logged in through the login page, as a browser does."""
    browser = httpx.Client(base_url=server.url)
    browser.get(reverse("login"))
    form = {"username": username, "password": password, "csrfmiddlewaretoken": browser.cookies["csrftoken"]}
    assert browser.post(reverse("login"), data=form).status_code == 302
    return browser


def customer_sends(bot, user_id=42, **fields):
    """The customer's message as the webhook stored it."""
    update = bot.send_message(user_id, **fields)
    telegram_id = update["message"]["message_id"]
    return wait_until(
        lambda: Message.objects.filter(telegram_message_id=telegram_id, direction="in").first(),
        message="the customer's message to be stored",
    )


def attachment_url(message):
    return reverse("desk-attachment", args=[message.pk])


def test_an_agent_gets_the_customers_photo_through_the_server(start_desk):
    desk = start_desk()
    bot, browser = desk.bot, desk.browser
    picture = png()
    message = customer_sends(bot, photo=bot.upload_file("photo", picture, "photo.png", "image/png"))

    response = browser.get(attachment_url(message))

    assert response.status_code == 200
    assert response.content == picture
    assert response.headers["Content-Type"] == "image/jpeg"  # Telegram serves every photo as a JPEG
    assert response.headers["Content-Disposition"].startswith("inline")
    assert response.headers["Cache-Control"] == "private, max-age=86400, immutable"
    assert response.headers["Content-Security-Policy"].endswith("sandbox")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert desk.server.token not in str(response.headers)
    assert "/file/bot" not in str(response.headers)

    # Again: the file's path comes from the cache, not from another getFile.
    assert browser.get(attachment_url(message)).content == picture
    assert len(bot.calls("getFile")) == 1


def test_a_document_downloads_under_its_own_name(start_desk):
    desk = start_desk()
    bot, browser = desk.bot, desk.browser
    file_id = bot.upload_file("document", b"%PDF-1.4 invoice", "invoice 42.pdf", "application/pdf")
    message = customer_sends(bot, document={"file_id": file_id, "file_unique_id": "u1", "file_name": "invoice 42.pdf"})

    response = browser.get(attachment_url(message))

    assert response.status_code == 200
    assert response.content == b"%PDF-1.4 invoice"
    assert response.headers["Content-Disposition"] == 'attachment; filename="invoice 42.pdf"'


def test_a_file_over_the_limit_is_refused_before_it_is_fetched(start_desk):
    desk = start_desk(DESK_ATTACHMENT_MAX_BYTES=1000)
    bot, browser = desk.bot, desk.browser
    message = customer_sends(bot, photo=bot.upload_file("photo", png(), "photo.png", "image/png"))

    response = browser.get(attachment_url(message))

    assert response.status_code == 413
    assert "the desk shows files up to 0.0 MB" in response.json()["error"]
    assert bot.calls("getFile") == []


def test_a_message_without_a_file_is_404(start_desk):
    desk = start_desk()
    bot, browser = desk.bot, desk.browser
    message = customer_sends(bot, text="just words")

    response = browser.get(attachment_url(message))

    assert response.status_code == 404
    assert response.json() == {"error": f"Message {message.pk} has no file attached."}
    assert browser.get(reverse("desk-attachment", args=[999999])).status_code == 404


def test_a_file_telegram_no_longer_has_is_404_and_telegram_down_is_502(start_desk):
    desk = start_desk()
    bot, browser = desk.bot, desk.browser
    message = customer_sends(bot, photo=bot.upload_file("photo", png(), "photo.png", "image/png"))

    bot.add_fault("getFile", error_code=400, description="Bad Request: invalid file_id")
    response = browser.get(attachment_url(message))
    assert response.status_code == 404
    assert response.json() == {"error": "Telegram no longer has this file."}

    bot.add_fault("getFile", error_code=502)
    response = browser.get(attachment_url(message))
    assert response.status_code == 502
    assert "try again" in response.json()["error"]

    assert browser.get(attachment_url(message)).status_code == 200
    assert desk.server.token not in desk.server.log()


def test_agents_waiting_on_a_slow_telegram_for_files_do_not_starve_the_webhook(start_desk):
    pool_max = 3
    desk = start_desk(DATABASE_POOL_MAX_SIZE=pool_max, DATABASE_POOL_TIMEOUT=2)
    photos = [
        customer_sends(desk.bot, 500 + number, photo=desk.bot.upload_file("photo", png(), "p.png", "image/png"))
        for number in range(pool_max + 1)
    ]
    desk.bot.add_fault("getFile", delay=8, times=None)

    async def scenario():
        async with httpx.AsyncClient(base_url=desk.server.url, cookies=desk.browser.cookies, timeout=60) as browser:
            fetches = [asyncio.create_task(browser.get(attachment_url(photo))) for photo in photos]
            # More agents wait on Telegram's slow getFile than the pool has connections: had they kept
            # theirs, the webhook would find none within DATABASE_POOL_TIMEOUT.
            await asyncio.to_thread(desk.bot.wait_until, lambda: len(desk.bot.calls("getFile")) >= pool_max, 30)
            webhook = await browser.post(
                "/telegram/webhook/",
                json=factories.update(600, "a customer writes meanwhile"),
                headers={"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET},
            )
            return webhook.status_code, [response.status_code for response in await asyncio.gather(*fetches)]

    assert asyncio.run(scenario()) == (200, [200] * len(photos))
    assert Message.objects.filter(text="a customer writes meanwhile").exists()
