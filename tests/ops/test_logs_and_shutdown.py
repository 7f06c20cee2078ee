"""Structured logs (one line per webhook request, JSON with LOG_FORMAT=json) and graceful shutdown: the
bot Application is shut down, a worker finishes its task or leaves it to the lease."""

import json
import signal

from tests.bots import factories
from tests.bots.test_delivery import customer_ticket, reply_in, sends, settled
from tests.conftest import unique_bot_token, wait_until


def webhook_lines(server):
    records = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    return [record for record in records if record["logger"] == "bots.webhook"]


def test_every_webhook_request_leaves_one_json_line_with_update_id_outcome_and_milliseconds(start_server):
    server = start_server(LOG_FORMAT="json")
    new = factories.update(6400, "hello")
    rejected = factories.update(6401, "from the future")
    rejected["message"]["entities"] = [{"type": "unknown"}]

    assert server.post_update(new).status_code == 200
    assert server.post_update(new).status_code == 200
    assert server.post_update(rejected).status_code == 200
    assert server.post_update(new, secret="wrong").status_code == 403
    ignored = {"update_id": factories.next_id(), "some_future_kind": {"anything": 1}}
    assert server.post_update(ignored).status_code == 200

    lines = webhook_lines(server)
    assert [(line["update_id"], line["outcome"], line["status"]) for line in lines] == [
        (new["update_id"], "processed", 200),
        (new["update_id"], "duplicate", 200),
        (rejected["update_id"], "dead_letter", 200),
        (None, "refused", 403),
        (ignored["update_id"], "ignored", 200),
    ]
    assert all(line["level"] == "INFO" and line["ms"] >= 0 and line["time"].endswith("Z") for line in lines)
    # The dead letter's ERROR is a JSON line too.
    assert any(
        record["level"] == "ERROR" and record["logger"] == "bots.dead_letters"
        for record in map(json.loads, filter(lambda line: line.startswith("{"), server.log().splitlines()))
    )


def test_plain_logs_carry_the_same_line(start_server):
    server = start_server()
    update = factories.update(6500, "hello")

    server.post_update(update)

    assert f"webhook update_id={update['update_id']} outcome=processed status=200 ms=" in server.log()


def test_a_stopped_worker_finishes_its_task_and_shuts_the_bot_down(sandbox, start_worker, agent):
    bot = sandbox.client(unique_bot_token())
    ticket = customer_ticket(bot, 6600)
    bot.add_fault("sendMessage", delay=3, times=1)  # SIGTERM arrives while the send is in flight
    reply = reply_in(ticket, agent)
    worker = start_worker(bot.token)
    wait_until(lambda: sends(bot), message="the worker to start sending")

    worker.popen.send_signal(signal.SIGTERM)

    assert worker.popen.wait(30) == 0
    reply.refresh_from_db()
    assert reply.delivery_status == "sent"
    log = worker.log()
    assert "shutting down gracefully" in log
    assert "Telegram bot application shut down." in log


def test_a_worker_forced_to_stop_mid_task_leaves_the_reply_to_its_lease(sandbox, start_worker, agent):
    lease = 5
    bot = sandbox.client(unique_bot_token())
    ticket = customer_ticket(bot, 6700)
    bot.add_fault("sendMessage", delay=30, times=1)
    reply = reply_in(ticket, agent)
    worker = start_worker(bot.token, TELEGRAM_DELIVERY_LEASE_SECONDS=lease)
    wait_until(lambda: sends(bot), message="the worker to start sending")

    worker.popen.send_signal(signal.SIGTERM)
    wait_until(lambda: "shutting down gracefully" in worker.log(), message="the first SIGTERM to be heard")
    worker.popen.send_signal(signal.SIGTERM)  # again: do not wait for the task
    worker.popen.wait(30)

    assert "terminating current task" in worker.log()
    reply.refresh_from_db()
    assert (reply.delivery_status, reply.delivery_attempts) == ("queued", 1)
    start_worker(bot.token, TELEGRAM_DELIVERY_LEASE_SECONDS=lease)
    start_worker(bot.token, ("outbox_sweep", "--every", "0.2", "--stranded-after", "0"))
    wait_until(settled(reply, "sent"), timeout=30, message="the reply re-driven once its lease expired")
    assert reply.delivery_attempts == 2
