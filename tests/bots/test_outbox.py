"""The outbox against the sandbox with real workers: each chat's replies in order, one at a time, with a
linear number of tasks; leases; the sweep; an agent's re-send (G8)."""

import itertools
import signal
import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django_tasks_db.models import DBTaskResult

from bots.outbox import claim_delivery, enqueue_delivery, record_sent, redrive_stranded_replies
from tests.conftest import lock_waits, resolve, wait_until
from tests.tickets.test_services import run_at_once
from tickets import services
from tickets.models import Message, TicketEvent
from tickets.queries import count_stranded_replies
from tickets.services import TicketRuleError

from .test_delivery import customer_ticket, no_task_pending, reply_in, sends, settled


def delivered(bot, chat_id):
    return [call for call in sends(bot, chat_id) if call["status"] == 200]


def test_replies_to_one_chat_arrive_in_queue_order_a_second_apart_without_delaying_another_chat(
    bot, start_worker, agent
):
    busy, quiet = customer_ticket(bot, 130), customer_ticket(bot, 131)
    bot.add_fault("sendMessage", error_code=429, retry_after=1, times=1, chat_id=130)  # the first must wait
    texts = [f"part {number}" for number in range(1, 6)]
    replies = [reply_in(busy, agent, text) for text in texts] + [reply_in(quiet, agent, "hello")]

    start_worker(bot.token)
    start_worker(bot.token)
    for reply in replies:
        wait_until(settled(reply, "sent"), message="every reply to be sent")
    wait_until(no_task_pending, message="the workers to go idle")

    in_order = delivered(bot, 130)
    assert [call["params"]["text"] for call in in_order] == texts
    assert [message["text"] for message in bot.chat(130) if message["from"]["is_bot"]] == texts
    assert all(later["time"] - earlier["time"] >= 0.9 for earlier, later in itertools.pairwise(in_order))
    [quiet_send] = sends(bot, 131)
    assert quiet_send["time"] < in_order[1]["time"]
    # One task per reply, one wake-up per reply behind another, one retry: never a task per postponement.
    assert DBTaskResult.objects.count() <= 2 * len(replies) + 1


def test_two_workers_of_four_threads_send_every_chats_replies_once_each_in_queue_order(bot, start_worker, agent):
    """Eight tasks at a time over two processes, every reply of 20 chats due at once (no interval between a
    chat's replies), Telegram answering a little late so sends overlap: each chat still gets its replies one
    at a time, in the order they were queued, each once, although most replies have two tasks (their own
    and the wake-up their predecessor's settling enqueues)."""
    chat_ids = range(1100, 1120)
    tickets = {chat_id: customer_ticket(bot, chat_id) for chat_id in chat_ids}
    texts = [f"part {number}" for number in range(1, 6)]
    replies = [reply_in(ticket, agent, text) for ticket in tickets.values() for text in texts]
    bot.add_fault("sendMessage", delay=0.05, times=None)
    concurrent = {"WORKER_THREADS": 4, "TELEGRAM_CHAT_INTERVAL_SECONDS": 0}

    start_worker(bot.token, **concurrent)
    start_worker(bot.token, **concurrent)
    wait_until(
        lambda: Message.objects.filter(pk__in=[reply.pk for reply in replies], delivery_status="sent").count() == 100,
        timeout=120,
        message="every reply to be sent",
        interval=0.5,
    )
    wait_until(no_task_pending, message="the workers to go idle")

    for chat_id in chat_ids:
        assert [message["text"] for message in bot.chat(chat_id) if message["from"]["is_bot"]] == texts
    assert len(sends(bot)) == len(replies)  # no attempt at all beyond the one that sent each
    assert DBTaskResult.objects.count() > len(replies)  # wake-ups raced the replies' own tasks
    for ticket in tickets.values():
        sent = ticket.messages.filter(direction="out").order_by("outbox_seq")
        assert list(sent.values_list("text", flat=True)) == texts
        telegram_ids = list(sent.values_list("telegram_message_id", flat=True))
        assert telegram_ids == sorted(telegram_ids)


@pytest.mark.needs_postgres
def test_a_reply_queued_while_the_one_before_it_is_being_settled_is_still_sent(bot, start_worker, agent):
    """No lost wake-up: the settling transaction looks for the chat's next reply before the new one exists,
    so either queueing the new one waits for the chat's lock, or its task waits for it and then sees the
    first one settled. The two replies are in two tickets of the customer, so no ticket lock orders them."""
    earlier = customer_ticket(bot, 136)
    first = reply_in(earlier, agent, "first")
    resolve(earlier, days_ago=30)
    ticket = customer_ticket(bot, 136)
    assert ticket != earlier
    first = claim_delivery(first.pk, timedelta(seconds=60))
    settling, release, queued = threading.Event(), threading.Event(), {}

    def settle_first():
        with transaction.atomic():
            record_sent(first, telegram_message_id=1)  # no next reply to wake yet
            settling.set()
            release.wait(30)
        connection.close()

    def queue_second():
        settling.wait(30)
        queued["second"] = reply_in(ticket, agent, "second")
        connection.close()

    def second_task_ran():
        second = queued.get("second")
        return second and DBTaskResult.objects.filter(args_kwargs__args=[second.pk], status="SUCCESSFUL").exists()

    threads = [threading.Thread(target=settle_first), threading.Thread(target=queue_second)]
    for thread in threads:
        thread.start()
    start_worker(bot.token)
    wait_until(lambda: lock_waits() or second_task_ran(), message="the second reply to meet the settling one")
    release.set()
    for thread in threads:
        thread.join()

    wait_until(settled(queued["second"], "sent"), message="the second reply to be sent")
    assert [call["params"]["text"] for call in sends(bot)] == ["second"]


def test_two_tasks_for_one_reply_on_two_workers_send_it_once(bot, start_worker, agent):
    """Both tasks reach the claim (there is no other check before it) while the first send is in flight:
    only the claim's condition (still queued and due) keeps the second from sending again."""
    ticket = customer_ticket(bot, 111)
    bot.add_fault("sendMessage", delay=3, times=1)
    reply = reply_in(ticket, agent)
    enqueue_delivery(reply.pk)  # a second task for the same reply, as a re-drive makes

    start_worker(bot.token)
    start_worker(bot.token)
    wait_until(settled(reply, "sent"), message="the reply to be sent")
    wait_until(no_task_pending, message="both tasks to finish")

    assert len(sends(bot)) == 1
    assert reply.delivery_attempts == 1
    assert DBTaskResult.objects.filter(status="SUCCESSFUL").count() == 2


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
    start_worker(bot.token, ("outbox_sweep", "--every", "0.2", "--stranded-after", "0"), **lease)
    wait_until(settled(reply, "sent"), timeout=30, message="the sweep to re-drive the reply once its lease expired")

    assert reply.delivery_attempts == 2
    # At-least-once: the killed attempt had reached Telegram, so the customer has it twice (see bots.delivery).
    assert [m["text"] for m in bot.chat(108)].count("We are on it") == 2


def test_the_sweep_re_drives_only_a_chats_first_reply_and_only_once_its_task_is_gone(db, bot, agent):
    ticket = customer_ticket(bot, 109)
    first, second = reply_in(ticket, agent, "first"), reply_in(ticket, agent, "second")

    call_command("outbox_sweep", stranded_after=0)
    assert DBTaskResult.objects.count() == 2  # each still has its task: merely waiting
    assert count_stranded_replies(timedelta(seconds=60)) == 0

    DBTaskResult.objects.all().delete()  # lost, say, with a database restored from a backup
    assert redrive_stranded_replies(timedelta(0)) == 1
    [task] = DBTaskResult.objects.all()
    assert task.args_kwargs["args"] == [first.pk]  # the second goes when the first is done
    assert redrive_stranded_replies(timedelta(0)) == 0
    second.refresh_from_db()
    assert second.delivery_status == "queued"


def test_a_backlog_of_200_replies_with_one_slow_worker_gets_no_task_from_the_sweep(bot, start_worker, agent):
    tickets = [customer_ticket(bot, chat_id) for chat_id in range(1000, 1040)]
    replies = [reply_in(ticket, agent, f"reply {number}") for number in range(5) for ticket in tickets]
    bot.add_fault("sendMessage", delay=0.05, times=None)  # a slow Telegram makes a slow worker
    start_worker(bot.token)

    redriven = []

    def drained():
        redriven.append(redrive_stranded_replies(timedelta(0)))  # the sweep at its most eager, all along
        return not Message.objects.filter(direction="out", delivery_status="queued").exists()

    wait_until(drained, timeout=180, message="the backlog to drain", interval=0.5)

    assert sum(redriven) == 0 and len(redriven) > 5
    assert Message.objects.filter(pk__in=[reply.pk for reply in replies], delivery_status="sent").count() == 200
    assert DBTaskResult.objects.count() <= 2 * len(replies)


def test_a_failed_reply_re_sent_by_an_agent_is_delivered_once(bot, start_worker, agent):
    ticket = customer_ticket(bot, 132)
    bot.add_fault("sendMessage", error_code=403, description="Forbidden: bot was blocked by the user", times=1)
    reply = reply_in(ticket, agent)
    start_worker(bot.token)
    wait_until(settled(reply, "failed"), message="the reply to fail")

    resent = services.resend_reply(reply, acting_user=agent)
    assert (resent.delivery_status, resent.delivery_error) == ("queued", "")
    wait_until(settled(reply, "sent"), message="the re-sent reply to be sent")

    assert [call["status"] for call in sends(bot)] == [403, 200]
    queued_again = TicketEvent.objects.filter(ticket=ticket, kind="delivery", data__status="queued").get()
    assert (queued_again.actor_kind, queued_again.actor) == ("agent", agent)


def test_two_re_sends_at_once_queue_a_failed_reply_once(bot, start_worker, agent):
    ticket = customer_ticket(bot, 133)
    bot.add_fault("sendMessage", error_code=403, description="Forbidden: bot was blocked by the user", times=1)
    reply = reply_in(ticket, agent)
    worker = start_worker(bot.token)
    wait_until(settled(reply, "failed"), message="the reply to fail")
    worker.stop()
    refused = []

    def resend(_):
        try:
            services.resend_reply(Message.objects.get(pk=reply.pk), acting_user=agent)
        except TicketRuleError as error:
            refused.append(str(error))

    run_at_once(2, resend)
    start_worker(bot.token)
    wait_until(settled(reply, "sent"), message="the re-sent reply to be sent")
    wait_until(no_task_pending, message="the worker to go idle")

    assert refused == [f"Reply #{reply.pk} has not failed, so there is nothing to send again."]
    assert TicketEvent.objects.filter(ticket=ticket, kind="delivery", data__status="queued").count() == 1
    assert [call["status"] for call in sends(bot)] == [403, 200]


def test_a_re_sent_reply_goes_to_the_back_of_its_chats_queue(db, bot, agent):
    ticket = customer_ticket(bot, 134)
    failed, waiting = reply_in(ticket, agent, "first"), reply_in(ticket, agent, "second")
    Message.objects.filter(pk=failed.pk).update(delivery_status="failed", delivery_error="Telegram refused it.")

    services.resend_reply(failed, acting_user=agent)

    queue = list(Message.objects.filter(delivery_status="queued").order_by("outbox_seq").values_list("pk", flat=True))
    assert queue == [waiting.pk, failed.pk]


@pytest.mark.django_db
def test_a_reply_that_has_not_failed_cannot_be_re_sent(agent):
    profile = services.TelegramProfile(user_id=135)
    reply = reply_in(services.record_inbound_message(profile, text="hi", telegram_message_id=1)[0].ticket, agent)

    with pytest.raises(TicketRuleError, match="has not failed"):
        services.resend_reply(reply, acting_user=agent)
    assert DBTaskResult.objects.count() == 1
