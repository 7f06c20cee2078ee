"""The Telegram sandbox answers python-telegram-bot as Telegram would, and delivers webhooks as Telegram does.

Everything goes over real HTTP: PTB's own ``telegram.Bot`` against the sandbox, and webhook deliveries to a
small aiohttp receiver served from its own thread.
"""

import asyncio
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import telegram
from aiohttp import web
from django.core.management import CommandError, call_command
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter

from bots.sandbox.client import SandboxClient, wait_until
from bots.sandbox.runner import ServerThread
from bots.sandbox.server import PLACEHOLDER_BYTES

TOKEN = "123456:sandbox-test-token"
CUSTOMER = 4242
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


class WebhookReceiver:
    """A webhook endpoint: answers the planned ``statuses`` in turn, then 200 once ``released`` is set."""

    def __init__(self):
        self.statuses = []
        self.received = []
        self.released = threading.Event()
        self.released.set()
        self.in_flight = self.most_in_flight = 0

    async def receive(self, request):
        self.received.append((request.headers.get(SECRET_HEADER), await request.json()))
        if self.statuses:
            return web.Response(status=self.statuses.pop(0))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.to_thread(self.released.wait, 10)
        self.in_flight -= 1
        return web.Response(text="ok")


@pytest.fixture
def receiver():
    receiver = WebhookReceiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.receive)
    with ServerThread(app) as server:
        receiver.url = f"{server.url}/hook"
        yield receiver
        receiver.released.set()


@pytest.fixture
def client(sandbox):
    return sandbox.client(TOKEN)


@pytest_asyncio.fixture
async def bot(sandbox):
    async with telegram.Bot(TOKEN, base_url=f"{sandbox.url}/bot", base_file_url=f"{sandbox.url}/file/bot") as bot:
        yield bot


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# The Bot API, through python-telegram-bot


@pytest.mark.asyncio
async def test_get_me_describes_the_bot_of_the_token(bot, client):
    me = await bot.get_me()

    assert (me.id, me.is_bot, me.username, me.first_name) == (123456, True, "sandbox_123456_bot", "Support Sandbox")
    assert [call["status"] for call in client.calls("getMe")] == [200, 200]  # initialize() called it first


@pytest.mark.asyncio
async def test_send_message_to_a_customer_returns_the_message_and_is_recorded(bot, client):
    client.send_message(CUSTOMER, "Hello", first_name="Ann", username="ann")
    keyboard = telegram.InlineKeyboardMarkup([[telegram.InlineKeyboardButton("Yes", callback_data="yes")]])

    message = await bot.send_message(
        CUSTOMER, "Hi Ann", reply_parameters=telegram.ReplyParameters(1), reply_markup=keyboard
    )

    assert (message.message_id, message.text, message.chat.id, message.chat.type) == (2, "Hi Ann", CUSTOMER, "private")
    assert (message.chat.first_name, message.from_user.username) == ("Ann", "sandbox_123456_bot")
    assert message.reply_to_message.text == "Hello"
    assert message.reply_markup == keyboard
    [call] = client.calls("sendmessage")
    assert (call["token"], call["method"], call["status"]) == (TOKEN, "sendMessage", 200)
    assert call["params"]["chat_id"] == CUSTOMER
    assert call["params"]["reply_parameters"] == {"message_id": 1}
    assert [m["text"] for m in client.chat(CUSTOMER)] == ["Hello", "Hi Ann"]


@pytest.mark.asyncio
@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")  # PTB's own int retry_after
async def test_rate_limit_fault_raises_retry_after_then_the_call_succeeds(bot, client):
    client.send_message(CUSTOMER, "Hello")
    client.add_fault("sendMessage", error_code=429, retry_after=7)

    with pytest.raises(RetryAfter) as raised:
        await bot.send_message(CUSTOMER, "first try")
    message = await bot.send_message(CUSTOMER, "second try")

    assert raised.value.retry_after in (7, dt.timedelta(seconds=7))
    assert message.text == "second try"
    assert [call["status"] for call in client.calls("sendMessage")] == [429, 200]
    assert [m.get("text") for m in client.chat(CUSTOMER)] == ["Hello", "second try"]


@pytest.mark.asyncio
async def test_blocked_fault_raises_forbidden_until_cleared(bot, client):
    client.send_message(CUSTOMER, "Hello")
    client.add_fault("sendMessage", error_code=403, times=None, chat_id=CUSTOMER)

    for _ in range(2):
        with pytest.raises(Forbidden, match="bot was blocked by the user"):
            await bot.send_message(CUSTOMER, "anyone there?")
    client.clear_faults()

    assert (await bot.send_message(CUSTOMER, "back")).text == "back"


@pytest.mark.asyncio
async def test_sending_to_a_chat_that_never_wrote_is_chat_not_found(bot, client):
    with pytest.raises(BadRequest, match="Chat not found"):
        await bot.send_message(999, "Hello?")

    assert client.calls("sendMessage")[0]["status"] == 400


@pytest.mark.asyncio
async def test_server_error_on_get_me_fails_one_initialisation(sandbox, client):
    client.add_fault("getMe", error_code=500)
    bot = telegram.Bot(TOKEN, base_url=f"{sandbox.url}/bot", base_file_url=f"{sandbox.url}/file/bot")

    with pytest.raises(NetworkError, match="Internal Server Error"):
        await bot.initialize()
    await bot.initialize()

    assert bot.username == "sandbox_123456_bot"
    await bot.shutdown()


@pytest.mark.asyncio
async def test_uploaded_photo_downloads_as_the_same_bytes(bot, client):
    client.send_message(CUSTOMER, "Send me the picture")
    picture = os.urandom(2048)

    message = await bot.send_photo(CUSTOMER, photo=picture, caption="Here it is", filename="shot.jpg")
    file = await bot.get_file(message.photo[-1].file_id)

    assert bytes(await file.download_as_bytearray()) == picture
    assert (message.caption, file.file_size) == ("Here it is", 2048)
    assert client.calls("sendPhoto")[0]["params"]["photo"]["size"] == 2048


@pytest.mark.asyncio
async def test_customer_media_gets_file_ids_the_bot_can_download(bot, client):
    update = client.send_message(CUSTOMER, photo=True, caption="my receipt")
    voice = client.send_message(CUSTOMER, voice=True)["message"]["voice"]
    [photo] = update["message"]["photo"]

    file = await bot.get_file(photo["file_id"])
    resent = await bot.send_voice(CUSTOMER, voice=voice["file_id"])

    assert bytes(await file.download_as_bytearray()) == PLACEHOLDER_BYTES
    assert resent.voice.file_id == voice["file_id"]
    assert update["message"]["caption"] == "my receipt"


@pytest.mark.asyncio
async def test_delay_fault_holds_the_answer_after_the_call_took_effect(bot, client):
    client.send_message(CUSTOMER, "Hello")
    client.add_fault("sendMessage", delay=1)

    sending = asyncio.create_task(bot.send_message(CUSTOMER, "slow"))
    await asyncio.to_thread(wait_until, lambda: len(client.chat(CUSTOMER)) == 2)

    assert not sending.done()
    assert (await sending).text == "slow"


@pytest.mark.asyncio
async def test_chat_action_shows_typing_until_the_bot_sends(bot, sandbox, client):
    client.send_message(CUSTOMER, "Hello")
    chat_url = f"{sandbox.url}/sandbox/{TOKEN}/chats/{CUSTOMER}"

    await bot.send_chat_action(CUSTOMER, telegram.constants.ChatAction.TYPING)
    typing_before = httpx.get(chat_url).json()["typing"]
    await bot.send_message(CUSTOMER, "Done")

    assert typing_before is True
    assert httpx.get(chat_url).json()["typing"] is False


@pytest.mark.asyncio
async def test_other_media_and_locations_parse_as_telegram_objects(bot, client):
    client.send_message(CUSTOMER, "Hello")
    sticker_id = client.send_message(CUSTOMER, sticker=True)["message"]["sticker"]["file_id"]

    document = await bot.send_document(CUSTOMER, document=b"%PDF-1.4", filename="invoice.pdf", caption="Invoice")
    video = await bot.send_video(CUSTOMER, video="some-video-id")
    sticker = await bot.send_sticker(CUSTOMER, sticker=sticker_id)
    location = await bot.send_location(CUSTOMER, latitude=52.52, longitude=13.405)

    assert (document.document.file_name, document.document.file_size, document.caption) == ("invoice.pdf", 8, "Invoice")
    assert video.video.file_id == "some-video-id"
    assert sticker.sticker.file_id == sticker_id
    assert (location.location.latitude, location.location.longitude) == (52.52, 13.405)
    assert [m["message_id"] for m in client.chat(CUSTOMER)] == [1, 2, 3, 4, 5, 6]


@pytest.mark.asyncio
async def test_audio_and_animations_are_sent_and_a_caption_over_1024_characters_is_refused(bot, client):
    client.send_message(CUSTOMER, "Hello")

    audio = await bot.send_audio(CUSTOMER, audio="some-audio-id", caption="x" * 1024)
    animation = await bot.send_animation(CUSTOMER, animation="some-gif-id")
    with pytest.raises(BadRequest, match="caption is too long"):
        await bot.send_photo(CUSTOMER, photo="some-photo-id", caption="x" * 1025)

    assert (audio.audio.file_id, len(audio.caption)) == ("some-audio-id", 1024)
    assert animation.animation.file_id == "some-gif-id"
    assert [m["message_id"] for m in client.chat(CUSTOMER)] == [1, 2, 3]


def test_a_customers_command_is_marked_as_telegram_marks_it(client):
    update = client.send_message(CUSTOMER, "/status please")

    assert update["message"]["entities"] == [{"type": "bot_command", "offset": 0, "length": 7}]
    assert "entities" not in client.send_message(CUSTOMER, "not /a command")["message"]


@pytest.mark.asyncio
async def test_webhook_settings_round_trip_through_the_bot_api(bot, client):
    client.send_message(CUSTOMER, "Hello")

    await bot.set_webhook(
        "https://support.example/hook", secret_token="s3cret", allowed_updates=["message"], max_connections=5
    )
    info = await bot.get_webhook_info()
    await bot.delete_webhook(drop_pending_updates=True)
    deleted = await bot.get_webhook_info()

    assert (info.url, info.max_connections, info.allowed_updates) == ("https://support.example/hook", 5, ("message",))
    assert (deleted.url, deleted.pending_update_count, deleted.max_connections) == ("", 0, None)
    assert client.calls("setWebhook")[0]["params"]["allowed_updates"] == ["message"]


# The Bot API's HTTP surface


def test_malformed_token_and_unknown_method_answer_not_found(sandbox):
    assert httpx.get(f"{sandbox.url}/botnot-a-token/getMe").json() == {
        "ok": False,
        "error_code": 404,
        "description": "Not Found",
    }
    unknown = httpx.post(f"{sandbox.url}/bot{TOKEN}/launchRockets")
    assert (unknown.status_code, unknown.json()["description"]) == (404, "Not Found: method not found")


def test_parameters_come_from_query_form_or_json_and_methods_ignore_case(sandbox, client):
    client.send_message(CUSTOMER, "Hello")
    api = f"{sandbox.url}/bot{TOKEN}"
    keyboard = {"inline_keyboard": [[{"text": "Yes", "callback_data": "yes"}]]}

    by_query = httpx.get(f"{api}/sendmessage", params={"chat_id": CUSTOMER, "text": "123"}).json()
    by_json = httpx.post(f"{api}/SENDMESSAGE", json={"chat_id": str(CUSTOMER), "text": "json"}).json()
    by_form = httpx.post(
        f"{api}/sendMessage", data={"chat_id": str(CUSTOMER), "text": "form", "reply_markup": json.dumps(keyboard)}
    ).json()

    assert by_query["result"]["text"] == "123"
    assert by_json["result"]["text"] == "json"
    assert by_form["result"]["reply_markup"] == keyboard
    assert client.calls("sendMessage")[2]["params"] == {"chat_id": CUSTOMER, "text": "form", "reply_markup": keyboard}


def test_empty_text_is_a_bad_request(sandbox, client):
    client.send_message(CUSTOMER, "Hello")

    answer = httpx.post(f"{sandbox.url}/bot{TOKEN}/sendMessage", data={"chat_id": CUSTOMER})

    assert answer.status_code == 400
    assert answer.json() == {"ok": False, "error_code": 400, "description": "Bad Request: message text is empty"}


def test_rate_limit_answer_carries_retry_after_parameters(sandbox, client):
    client.add_fault("getMe", error_code=429, retry_after=3)

    answer = httpx.get(f"{sandbox.url}/bot{TOKEN}/getMe")

    assert answer.json() == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 3",
        "parameters": {"retry_after": 3},
    }


# Webhook delivery


def test_webhook_redelivers_until_a_2xx_and_reports_the_last_error(client, receiver):
    receiver.statuses = [503, 503]
    receiver.released.clear()  # the third attempt is held until the test has looked at the webhook's state
    client.set_webhook(receiver.url, secret="s3cret")

    update = client.send_message(CUSTOMER, "Hello")
    wait_until(lambda: len(receiver.received) == 3)
    while_failing = client.webhook_info()
    receiver.released.set()
    wait_until(lambda: client.webhook_info()["pending_update_count"] == 0)

    assert while_failing["pending_update_count"] == 1
    assert while_failing["last_error_message"] == "Wrong response from the webhook: 503 Service Unavailable"
    assert receiver.received == [("s3cret", update)] * 3
    assert [attempt["status"] for attempt in client.deliveries(update["update_id"])] == [503, 503, 200]
    assert abs(client.webhook_info()["last_error_date"] - time.time()) < 60


def test_unreachable_webhook_keeps_the_update_pending(client):
    client.set_webhook(f"http://127.0.0.1:{free_port()}/hook")

    update = client.send_message(CUSTOMER, "Hello")
    info = wait_until(lambda: (info := client.webhook_info()).get("last_error_message") and info)

    assert (info["last_error_message"], info["pending_update_count"]) == ("Connection refused", 1)
    assert client.deliveries()[0] | {"time": None} == {
        "update_id": update["update_id"],
        "url": info["url"],
        "status": None,
        "error": "Connection refused",
        "time": None,
    }


def test_updates_wait_without_a_webhook_and_can_be_dropped(client, receiver):
    client.send_message(CUSTOMER, "one")
    client.send_message(CUSTOMER, "two")
    waiting = client.webhook_info()

    client.set_webhook(receiver.url, drop_pending_updates=True)
    third = client.send_message(CUSTOMER, "three")
    wait_until(lambda: client.webhook_info()["pending_update_count"] == 0)

    assert waiting == {"url": "", "has_custom_certificate": False, "pending_update_count": 2}
    assert receiver.received == [(None, third)]


def test_webhook_deliveries_in_flight_never_exceed_max_connections(client, receiver):
    receiver.released.clear()
    client.set_webhook(receiver.url, max_connections=2)

    for text in ("one", "two", "three"):
        client.send_message(CUSTOMER, text)
    wait_until(lambda: len(receiver.received) == 2)
    receiver.released.set()
    wait_until(lambda: client.webhook_info()["pending_update_count"] == 0)

    assert receiver.most_in_flight == 2
    assert sorted(update["message"]["text"] for _, update in receiver.received) == ["one", "three", "two"]


def test_raw_updates_are_delivered_as_posted_even_twice(client, receiver):
    client.set_webhook(receiver.url, secret="s3cret", max_connections=1)
    message = {"message_id": 10, "date": 1, "chat": {"id": -100, "type": "group", "title": "Team"}, "text": "hi"}

    first = client.post_update({"update_id": 500, "message": message})
    client.post_update(first)
    edited = client.post_update({"edited_message": message | {"text": "hi all", "edit_date": 2}})
    unknown = client.post_update({"future_update_kind": {"anything": True}})
    wait_until(lambda: client.webhook_info()["pending_update_count"] == 0)

    assert [update["update_id"] for _, update in receiver.received] == [500, 500, 501, 502]
    assert [update for _, update in receiver.received][2:] == [edited, unknown]
    assert [m["text"] for m in client.chat(-100)] == ["hi all"]


def test_customer_messages_share_message_ids_with_the_bot_and_can_reply(sandbox, client):
    client.send_message(CUSTOMER, "Hello")
    httpx.post(f"{sandbox.url}/bot{TOKEN}/sendMessage", json={"chat_id": CUSTOMER, "text": "How can I help?"})

    update = client.send_message(CUSTOMER, "My order", reply_to_message=2, last_name="Lee", language_code="de")

    message = update["message"]
    assert (update["update_id"], message["message_id"]) == (2, 3)
    assert message["reply_to_message"]["text"] == "How can I help?"
    assert message["from"] == {
        "id": CUSTOMER,
        "is_bot": False,
        "first_name": f"Customer {CUSTOMER}",
        "last_name": "Lee",
        "language_code": "de",
    }
    assert message["chat"] == {
        "id": CUSTOMER,
        "type": "private",
        "first_name": f"Customer {CUSTOMER}",
        "last_name": "Lee",
    }


# The chat page and the management command


def test_chat_page_uses_the_default_token_and_never_inner_html(sandbox):
    page = httpx.get(f"{sandbox.url}/")
    config = httpx.get(f"{sandbox.url}/sandbox/config").json()

    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "textContent" in page.text and ".innerHTML" not in page.text
    assert config == {"default_token": sandbox.default_token}


def test_command_refuses_to_run_when_a_real_bot_token_is_configured(settings):
    settings.TELEGRAM_SANDBOX = False

    with pytest.raises(CommandError, match="real Telegram"):
        call_command("telegram_sandbox")


def test_command_serves_the_sandbox_with_the_webhook_registered(settings):
    port = free_port()
    environment = os.environ | {"DJANGO_DEBUG": "1", "TELEGRAM_SANDBOX_PORT": str(port)}
    environment.pop("TELEGRAM_BOT_TOKEN", None)
    command = [sys.executable, "manage.py", "telegram_sandbox", "--port", str(port), "--set-webhook"]
    server = subprocess.Popen(
        command, cwd=Path(__file__).parents[2], env=environment, stdout=subprocess.PIPE, text=True
    )
    try:
        client = SandboxClient(f"http://127.0.0.1:{port}", settings.TELEGRAM_BOT_TOKEN)
        info = wait_until(lambda: try_webhook_info(client), timeout=30)
    finally:
        server.terminate()
        output = server.communicate(timeout=10)[0]

    assert info["url"] == settings.TELEGRAM_WEBHOOK_URL
    assert f"http://127.0.0.1:{port}/" in output


def try_webhook_info(client):
    try:
        return client.webhook_info()
    except httpx.ConnectError:
        return None
