"""Outbound delivery against the sandbox over real HTTP, with the real task worker running (G8)."""

import asyncio
import contextlib
import itertools
import signal
from datetime import timedelta

import httpx
import pytest
from django.core.management import call_command
from django_tasks_db.models import DBTaskResult

from bots.application import shutdown_application
from bots.delivery import show_customer_typing
from bots.outbox import enqueue_delivery
from realtime.groups import ticket_group
from tests.conftest import listen_to, next_event, unique_bot_token, wait_until
from tickets import services
from tickets.models import Message
from tickets.queries import count_stranded_replies
from tickets.services import TelegramProfile

FAST_RETRIES = {"TELEGRAM_DELIVERY_BACKOFF_SECONDS": "0.1"}


@pytest.fixture
def bot(sandbox):
    """A sandbox bot with its own token (so call records belong to this test)."""
    return sandbox.client(unique_bot_token())


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


def test_a_reply_with_an_attachment_is_sent_as_that_media_with_its_text_as_caption(bot, start_worker, agent):
    ticket = customer_ticket(bot, 117)
    reply, _ = services.queue_reply(
        ticket, "Here is the label", author=agent, attachment={"kind": "document", "file_id": "label-file"}
    )

    start_worker(bot.token)
    wait_until(settled(reply, "sent"), message="the reply to be sent")

    [call] = bot.calls("sendDocument")
    assert (call["params"]["document"], call["params"]["caption"]) == ("label-file", "Here is the label")
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


def test_transient_errors_end_in_failed_after_the_attempt_limit(bot, start_worker, agent):
    ticket = customer_ticket(bot, 104)
    bot.add_fault("sendMessage", error_code=500, description="Internal Server Error", times=None)
    reply = reply_in(ticket, agent)

    start_worker(bot.token, TELEGRAM_DELIVERY_MAX_ATTEMPTS=3, **FAST_RETRIES)
    wait_until(settled(reply, "failed"), message="the reply to fail")

    assert reply.delivery_attempts == 3
    assert "Gave up after 3 attempts" in reply.delivery_error


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


def test_a_busy_chat_is_limited_to_one_message_a_second_without_delaying_others(bot, start_worker, agent):
    busy = customer_ticket(bot, 106)
    quiet = customer_ticket(bot, 107)
    replies = [reply_in(busy, agent, f"part {i}") for i in range(3)] + [reply_in(quiet, agent, "hello")]

    start_worker(bot.token)
    for reply in replies:
        wait_until(settled(reply, "sent"), message="every reply to be sent")

    busy_times = [call["time"] for call in sends(bot, 106)]
    assert len(busy_times) == 3
    assert all(later - earlier >= 0.9 for earlier, later in itertools.pairwise(busy_times))
    [quiet_send] = sends(bot, 107)
    assert quiet_send["time"] < busy_times[-1]


def test_a_reply_survives_its_worker_being_killed_mid_delivery(bot, start_worker, agent):
    ticket = customer_ticket(bot, 108)
    bot.add_fault("sendMessage", delay=30, times=1)  # Telegram takes the message, then is slow to answer
    reply = reply_in(ticket, agent)
    lease = {"TELEGRAM_DELIVERY_LEASE_SECONDS": "6"}

    worker = start_worker(bot.token, **lease)
    wait_until(lambda: sends(bot), message="the worker to start sending")
    worker.stop(signal.SIGKILL)
    reply.refresh_from_db()
    assert (reply.delivery_status, reply.delivery_attempts) == ("queued", 1)

    start_worker(bot.token, **lease)
    start_worker(bot.token, ("outbox_sweep", "--every", "0.2", "--stranded-after", "0"))
    wait_until(settled(reply, "sent"), timeout=30, message="the sweep to re-drive the reply once its lease expired")

    assert reply.delivery_attempts == 2
    # At-least-once: the killed attempt had reached Telegram, so the customer has it twice (see bots.delivery).
    assert [m["text"] for m in bot.chat(108)].count("We are on it") == 2


def test_two_tasks_for_one_reply_on_two_workers_send_it_once(bot, start_worker, agent):
    ticket = customer_ticket(bot, 111)
    bot.add_fault("sendMessage", delay=3, times=1)  # both tasks run while the first send is in flight
    reply = reply_in(ticket, agent)
    enqueue_delivery(reply)  # a second task for the same reply, as a re-drive makes

    start_worker(bot.token)
    start_worker(bot.token)
    wait_until(settled(reply, "sent"), message="the reply to be sent")
    wait_until(no_task_pending, message="both tasks to finish")

    assert len(sends(bot)) == 1
    assert reply.delivery_attempts == 1


def test_a_rejected_bot_token_keeps_replies_queued_and_out_of_sight(bot, start_worker, agent):
    ticket = customer_ticket(bot, 112)
    bot.add_fault("getMe", error_code=401, description="Unauthorized", times=None)
    reply = reply_in(ticket, agent)

    worker = start_worker(bot.token, **FAST_RETRIES)
    wait_until(lambda: reply.refresh_from_db() or reply.delivery_attempts >= 2, message="a retry")

    assert reply.delivery_status == "queued"
    assert "check TELEGRAM_BOT_TOKEN" in reply.delivery_error
    assert bot.token not in reply.delivery_error
    assert bot.token not in worker.log()


def test_the_sweep_leaves_replies_that_are_not_stranded_alone(bot, agent):
    ticket = customer_ticket(bot, 109)
    reply_in(ticket, agent)

    call_command("outbox_sweep", stranded_after=60)

    assert DBTaskResult.objects.count() == 1
    assert count_stranded_replies(timedelta(seconds=60)) == 0


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
