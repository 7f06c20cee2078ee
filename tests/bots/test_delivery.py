"""Outbound delivery against the sandbox over real HTTP, with the real task worker running (G8)."""

import asyncio
import contextlib
import time

import httpx
import pytest
from django.core.cache import cache
from django_tasks_db.models import DBTaskResult
from telegram.error import TelegramError

from bots.application import get_application, shutdown_application
from bots.delivery import show_customer_typing
from bots.flood_limit import NEXT_SEND_KEY, reserve_send_slot
from realtime.groups import ticket_group
from tests.conftest import listen_to, next_event, wait_until
from tests.tcp_proxy import TcpProxy
from tickets import services
from tickets.models import Message, TicketEvent
from tickets.services import TelegramProfile

FAST_RETRIES = {"TELEGRAM_DELIVERY_BACKOFF_SECONDS": "0.1"}


def customer_ticket(bot, user_id):
    """A ticket for a customer who has written to the bot (so Telegram knows the chat)."""
    bot.send_message(user_id, text="hello")
    message, _ = services.record_inbound_message(TelegramProfile(user_id=user_id), text="hello", telegram_message_id=1)
    return message.ticket


def reply_in(ticket, agent, text="We are on it"):
    message, _ = services.queue_reply(ticket, text, author=agent)
    return message


def settled(message, status):
    def check():
        message.refresh_from_db()
        return message.delivery_status == status

    return check


def no_task_pending():
    return not DBTaskResult.objects.filter(status__in=["READY", "RUNNING"]).exists()


def sends(bot, chat_id=None):
    calls = bot.calls("sendMessage")
    return [call for call in calls if chat_id is None or int(call["params"]["chat_id"]) == chat_id]


def test_a_reply_is_delivered_once_and_ends_sent_with_telegrams_message_id(bot, start_worker, agent):
    ticket = customer_ticket(bot, 101)
    reply = reply_in(ticket, agent)

    start_worker(bot.token)
    wait_until(settled(reply, "sent"), message="the reply to be sent")

    [call] = sends(bot)
    assert call["params"]["text"] == "We are on it"
    chat = bot.chat(101)
    assert reply.telegram_message_id == chat[-1]["message_id"]
    assert chat[-1]["text"] == "We are on it"
    assert reply.delivery_attempts == 1


@pytest.mark.needs_redis
def test_every_delivery_status_change_is_announced_live_to_the_ticket_room(bot, start_worker, agent):
    ticket = customer_ticket(bot, 116)
    room = listen_to(ticket_group(ticket.pk))
    reply = reply_in(ticket, agent)
    bot.add_fault("sendMessage", error_code=403, description="Forbidden: bot was blocked by the user", times=None)
    start_worker(bot.token)

    queued = next_event(room, lambda event: event["type"] == "message")
    delivered = next_event(room, lambda event: event["type"] == "delivery")

    assert queued["message"]["id"] == reply.pk and queued["message"]["delivery_status"] == "queued"
    assert delivered["message_id"] == reply.pk
    assert delivered["status"] == "failed" and "blocked the bot" in delivered["error"]


def test_every_kind_of_attachment_goes_out_as_that_kind_with_its_text_as_caption(bot, start_worker, agent):
    replies = {}
    for chat_id, kind in enumerate(services.SENDABLE_ATTACHMENTS, start=140):
        text = "" if kind in services.CAPTIONLESS_ATTACHMENTS else f"Here is the {kind}"
        attachment = {"kind": kind, "file_id": f"{kind}-file"}
        ticket = customer_ticket(bot, chat_id)
        replies[kind] = services.queue_reply(ticket, text, author=agent, attachment=attachment)[0]

    start_worker(bot.token)
    for reply in replies.values():
        wait_until(settled(reply, "sent"), message="every reply to be sent")

    for kind, reply in replies.items():
        [call] = bot.calls(f"send{kind.capitalize()}")
        assert call["params"][kind] == f"{kind}-file"
        assert call["params"].get("caption") == (reply.text or None)
        [received] = [message for message in bot.chat(int(call["params"]["chat_id"])) if kind in message]
        assert received["message_id"] == reply.telegram_message_id
    assert not sends(bot)


def test_429_is_retried_after_retry_after_and_delivered_once(bot, start_worker, agent):
    ticket = customer_ticket(bot, 102)
    bot.add_fault("sendMessage", error_code=429, retry_after=2, times=1)
    reply = reply_in(ticket, agent)

    start_worker(bot.token)
    wait_until(settled(reply, "sent"), message="the reply to be sent")

    first, second = sends(bot)
    assert second["time"] - first["time"] >= 2
    assert [m["text"] for m in bot.chat(102)].count("We are on it") == 1
    assert reply.delivery_attempts == 2


def test_three_server_errors_then_success_deliver_once_after_four_attempts(bot, start_worker, agent):
    ticket = customer_ticket(bot, 103)
    bot.add_fault("sendMessage", error_code=502, description="Bad Gateway", times=3)
    reply = reply_in(ticket, agent)

    start_worker(bot.token, **FAST_RETRIES)
    wait_until(settled(reply, "sent"), message="the reply to be sent")

    assert len(sends(bot)) == 4
    assert reply.delivery_attempts == 4
    assert [m["text"] for m in bot.chat(103)].count("We are on it") == 1
    # The agent saw it held up once (the first failure of the run), then sent.
    deliveries = TicketEvent.objects.filter(ticket=ticket, kind="delivery").order_by("seq")
    [(held, held_error), (done, _)] = deliveries.values_list("data__status", "data__error")
    assert (held, done) == ("queued", "sent")
    assert held_error.startswith("Could not reach Telegram: Bad Gateway.")
    assert "later replies to this customer wait for this one" in held_error


def test_seven_429s_then_a_502_then_success_deliver_once_and_the_429s_cost_no_retry_window(bot, start_worker, agent):
    ticket = customer_ticket(bot, 118)
    bot.add_fault("sendMessage", error_code=429, retry_after=1, times=7)
    bot.add_fault("sendMessage", error_code=502, description="Bad Gateway", times=1)
    reply = reply_in(ticket, agent)

    # A window shorter than the seven 429s: had they counted, the 502 would have ended the reply.
    start_worker(bot.token, TELEGRAM_DELIVERY_RETRY_WINDOW_SECONDS=3, **FAST_RETRIES)
    wait_until(settled(reply, "sent"), timeout=40, message="the reply to be sent")

    assert [call["status"] for call in sends(bot)] == [429] * 7 + [502, 200]
    assert reply.delivery_attempts == 9
    assert [m["text"] for m in bot.chat(118)].count("We are on it") == 1


def test_429s_between_two_502s_cost_no_retry_window_either(bot, start_worker, agent):
    ticket = customer_ticket(bot, 121)
    bot.add_fault("sendMessage", error_code=502, description="Bad Gateway", times=1)
    bot.add_fault("sendMessage", error_code=429, retry_after=1, times=4)
    bot.add_fault("sendMessage", error_code=502, description="Bad Gateway", times=1)
    reply = reply_in(ticket, agent)

    # The window is shorter than the 429s: had the first 502's window kept running through them, the second
    # 502 would have ended the reply.
    start_worker(bot.token, TELEGRAM_DELIVERY_RETRY_WINDOW_SECONDS=2, **FAST_RETRIES)
    wait_until(settled(reply, "sent"), timeout=30, message="the reply to be sent")

    assert [call["status"] for call in sends(bot)] == [502] + [429] * 4 + [502, 200]
    assert [m["text"] for m in bot.chat(121)].count("We are on it") == 1
    # One run of failures: the agent saw the reply held up once.
    deliveries = TicketEvent.objects.filter(ticket=ticket, kind="delivery").order_by("seq")
    assert list(deliveries.values_list("data__status", flat=True)) == ["queued", "sent"]


def test_transient_errors_end_in_failed_when_the_retry_window_is_over(bot, start_worker, agent):
    ticket = customer_ticket(bot, 104)
    bot.add_fault("sendMessage", error_code=500, description="Internal Server Error", times=None)
    reply = reply_in(ticket, agent)

    start_worker(bot.token, TELEGRAM_DELIVERY_RETRY_WINDOW_SECONDS=1, **FAST_RETRIES)
    wait_until(settled(reply, "failed"), message="the reply to fail")

    assert reply.delivery_attempts >= 2
    assert reply.delivery_error.startswith("Gave up after 1")
    assert "Internal Server Error" in reply.delivery_error


def test_telegram_unreachable_longer_than_the_old_give_up_limit_delivers_once_it_is_back(
    bot, sandbox, start_worker, agent
):
    ticket = customer_ticket(bot, 119)
    proxy = TcpProxy("127.0.0.1", int(sandbox.url.rsplit(":", 1)[1])).start()
    proxy.cut()
    reply = reply_in(ticket, agent)

    start_worker(
        bot.token,
        TELEGRAM_API_URL=f"http://127.0.0.1:{proxy.port}",
        TELEGRAM_DELIVERY_BACKOFF_CAP_SECONDS=0.2,
        **FAST_RETRIES,
    )
    # The old outbox gave a reply 8 attempts; this one keeps trying for hours.
    wait_until(lambda: reply.refresh_from_db() or reply.delivery_attempts >= 10, message="ten failed attempts")
    assert reply.delivery_status == "queued"
    assert "Could not reach Telegram" in reply.delivery_error
    proxy.start()
    wait_until(settled(reply, "sent"), message="the reply to be sent once Telegram is back")

    assert [call["status"] for call in sends(bot)] == [200]
    assert [m["text"] for m in bot.chat(119)].count("We are on it") == 1


@pytest.mark.parametrize("method", ["getMe", "sendMessage"], ids=["from the start", "rotated while running"])
def test_a_bot_token_rejected_for_a_while_delivers_once_it_is_fixed(bot, start_worker, agent, method):
    ticket = customer_ticket(bot, 120)
    bot.add_fault(method, error_code=401, description="Unauthorized", times=None)
    reply = reply_in(ticket, agent)

    worker = start_worker(bot.token, TELEGRAM_DELIVERY_BACKOFF_CAP_SECONDS=0.2, **FAST_RETRIES)
    wait_until(lambda: reply.refresh_from_db() or reply.delivery_attempts >= 4, message="four failed attempts")
    assert reply.delivery_status == "queued"
    assert "check TELEGRAM_BOT_TOKEN" in reply.delivery_error
    bot.clear_faults()
    wait_until(settled(reply, "sent"), message="the reply to be sent once the token is accepted")

    assert [call["status"] for call in sends(bot)].count(200) == 1
    assert bot.token not in reply.delivery_error
    assert bot.token not in worker.log()


@pytest.mark.parametrize(
    ("error_code", "description", "reason"),
    [
        (403, "Forbidden: bot was blocked by the user", "blocked the bot"),
        (400, "Bad Request: chat not found", "chat not found"),
    ],
)
def test_permanent_errors_fail_at_once_with_a_reason(bot, start_worker, agent, error_code, description, reason):
    ticket = customer_ticket(bot, 105)
    bot.add_fault("sendMessage", error_code=error_code, description=description, times=None)
    reply = reply_in(ticket, agent)

    start_worker(bot.token)
    wait_until(settled(reply, "failed"), message="the reply to fail")
    wait_until(no_task_pending, message="the worker to go idle")

    assert reason in reply.delivery_error
    assert reply.delivery_attempts == 1
    assert len(sends(bot)) == 1


@pytest.mark.django_db
def test_agent_typing_shows_in_telegram_at_most_once_per_few_seconds_per_chat(bot, settings):
    settings.TELEGRAM_BOT_TOKEN = bot.token
    settings.TELEGRAM_API_URL = bot.base_url
    bot.send_message(110, text="hello")

    async def type_eagerly():
        try:
            return await asyncio.gather(*(show_customer_typing(110) for _ in range(10)))
        finally:
            await shutdown_application()

    shown = asyncio.run(type_eagerly())

    assert shown.count(True) == 1
    assert len(bot.calls("sendChatAction")) == 1
    assert Message.objects.count() == 0


@contextlib.contextmanager
def logged_in_browser(server, django_user_model, is_staff=True):
    django_user_model.objects.create_user("typist", password="typist-password-1", is_staff=is_staff)
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        browser.get("/admin/login/")
        login = {"username": "typist", "password": "typist-password-1"}
        browser.post("/admin/login/", data={**login, "csrfmiddlewaretoken": browser.cookies["csrftoken"]})
        yield browser


def test_agent_typing_in_the_admin_reply_box_shows_typing_in_telegram(bot, start_server, django_user_model):
    server = start_server(token=bot.token)
    ticket = customer_ticket(bot, 113)

    with logged_in_browser(server, django_user_model) as browser:
        typing_url = f"/admin/tickets/ticket/{ticket.pk}/typing/"
        answers = [browser.post(typing_url, headers={"X-CSRFToken": browser.cookies["csrftoken"]}) for _ in range(3)]
        bot.add_fault("sendChatAction", error_code=500, description="Internal Server Error", chat_id=114)
        failing = browser.post(
            f"/admin/tickets/ticket/{customer_ticket(bot, 114).pk}/typing/",
            headers={"X-CSRFToken": browser.cookies["csrftoken"]},
        )

    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert [answer.json()["shown"] for answer in answers] == [True, False, False]
    assert [int(call["params"]["chat_id"]) for call in bot.calls("sendChatAction")] == [113, 114]
    assert (failing.status_code, failing.json()) == (200, {"shown": False})


def test_only_agents_can_send_typing(bot, start_server, django_user_model):
    server = start_server(token=bot.token)
    ticket = customer_ticket(bot, 115)

    with logged_in_browser(server, django_user_model, is_staff=False) as browser:
        answer = browser.post(
            f"/admin/tickets/ticket/{ticket.pk}/typing/", headers={"X-CSRFToken": browser.cookies["csrftoken"]}
        )

    assert answer.status_code == 302  # to the admin login
    assert not bot.calls("sendChatAction")


def test_sends_are_spaced_within_telegrams_overall_limit_in_the_order_they_ask(settings):
    settings.TELEGRAM_GLOBAL_MESSAGES_PER_SECOND = 4
    now = time.time() + 10**6 + 0.25  # a moment after any other test's sends
    try:
        waits = [reserve_send_slot(now) for _ in range(5)]
        later = reserve_send_slot(now + 10)
    finally:
        cache.delete(NEXT_SEND_KEY)

    assert waits == [0, 0.25, 0.5, 0.75, 1.0]  # never two sends within a quarter of a second, at any moment
    assert later == 0  # an idle spell is not saved up for a burst


def test_a_failed_initialisation_leaves_nothing_of_the_bot_to_the_next_event_loop(bot, settings):
    """A failed initialisation is retried with the same HTTP clients; a shutdown must close them too, or
    the next event loop (a test's, or BotLoop's after a restart) gets connections of a closed loop."""
    settings.TELEGRAM_BOT_TOKEN = bot.token
    settings.TELEGRAM_API_URL = bot.base_url
    bot.add_fault("getMe", error_code=500)

    async def fail_and_shut_down():
        try:
            with pytest.raises(TelegramError):
                await get_application()
        finally:
            await shutdown_application()

    async def use_and_shut_down():
        try:
            return (await get_application()).bot.username
        finally:
            await shutdown_application()

    asyncio.run(fail_and_shut_down())
    assert asyncio.run(asyncio.wait_for(use_and_shut_down(), 20)).startswith("sandbox_")
