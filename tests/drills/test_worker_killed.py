"""Drill: workers killed (SIGKILL) in the middle of delivering replies.

Each of two workers is inside a sendMessage call the sandbox holds open when it is killed: one call
Telegram has not taken (it would have failed), one it has already taken (only its answer was held). An
agent then answers both chats; a new worker and the outbox sweep (with a short lease, re-driving at once
what the dead workers held) deliver every reply, in order per chat. The reply Telegram had not taken
arrives once; the one it had taken arrives twice, back to back: delivery is at-least-once
(bots/delivery.py), and the Bot API offers no way to learn whether a call whose answer was lost took
effect.
"""

import signal
import uuid

import pytest

from tests.conftest import wait_until
from tests.realtime.live import live_socket, log_in

from .conftest import AGENT, AGENT_PASSWORD

pytestmark = pytest.mark.drill

NOT_TAKEN, TAKEN = 34_001, 34_002  # the chats whose first reply's send each worker is inside when killed
AGENT_REPLIES = 3
LEASE_SECONDS = 8  # a send is abandoned after half of it: the kills land well within that
WORKER_SETTINGS = {"TELEGRAM_DELIVERY_LEASE_SECONDS": LEASE_SECONDS, "TELEGRAM_CHAT_INTERVAL_SECONDS": 0.1}


def replies(drill, chat_id):
    """(text, delivery_status, delivery_attempts, delivery_error) of the chat's replies, in the order queued."""
    return drill.services.query(
        "SELECT m.text, m.delivery_status, m.delivery_attempts, m.delivery_error FROM tickets_message m "
        "JOIN tickets_ticket t ON t.id = m.ticket_id JOIN tickets_customer c ON c.id = t.customer_id "
        "WHERE c.telegram_user_id = %s AND m.direction = 'out' ORDER BY m.outbox_seq",
        (chat_id,),
    )


def received(drill, chat_id):
    """The texts of the bot's messages in the chat, as the customer sees them in Telegram."""
    return [message["text"] for message in drill.bot.chat(chat_id) if message["from"]["is_bot"]]


def queue_agent_replies(drill, server, cookie, chat_id):
    """An agent answers the chat AGENT_REPLIES times on the ticket's desk socket, one reply after another."""
    ticket_id, _ = drill.services.ticket_of(chat_id)
    with live_socket(server.url, cookie, f"/ws/tickets/{ticket_id}/") as socket:
        for number in range(AGENT_REPLIES):
            socket.send({"type": "message", "text": f"reply {number}", "client_msg_id": str(uuid.uuid4())})
        wait_until(lambda: len(replies(drill, chat_id)) == 1 + AGENT_REPLIES, message="the agent's replies")


def test_workers_killed_mid_delivery_leave_every_reply_to_be_delivered_in_order(drill):
    server = drill.start_server()
    cookie = log_in(server.url, AGENT, AGENT_PASSWORD)
    drill.bot.add_fault("sendMessage", error_code=502, delay=60, chat_id=NOT_TAKEN)
    drill.bot.add_fault("sendMessage", delay=60, chat_id=TAKEN)
    drill.start_worker(("outbox_sweep", "--every", "0.5", "--stranded-after", "0"), **WORKER_SETTINGS)
    doomed = [drill.start_worker(**WORKER_SETTINGS) for _ in range(2)]
    for worker in doomed:
        wait_until(lambda worker=worker: "Starting worker" in worker.log(), message="a worker to poll")

    for chat_id in (NOT_TAKEN, TAKEN):
        drill.bot.send_message(chat_id, "hello")  # the bot queues its automatic reply; a worker takes it at once
    wait_until(
        lambda: {int(call["params"]["chat_id"]) for call in drill.bot.calls("sendMessage")} == {NOT_TAKEN, TAKEN},
        message="both workers inside a held send",
    )
    for worker in doomed:
        worker.stop(signal.SIGKILL)
    heads = [replies(drill, chat_id)[0] for chat_id in (NOT_TAKEN, TAKEN)]
    for chat_id in (NOT_TAKEN, TAKEN):
        queue_agent_replies(drill, server, cookie, chat_id)  # behind the reply a dead worker holds
    drill.start_worker(**WORKER_SETTINGS)
    for chat_id in (NOT_TAKEN, TAKEN):
        wait_until(
            lambda chat_id=chat_id: {reply[1] for reply in replies(drill, chat_id)} == {"sent"},
            timeout=60,
            message=f"every reply to {chat_id} sent",
        )

    # Killed mid-send: neither attempt got to record an outcome.
    assert [(status, attempts, error) for _, status, attempts, error in heads] == [("queued", 1, "")] * 2
    for chat_id, twice in ((NOT_TAKEN, 0), (TAKEN, 1)):
        texts = [text for text, *_ in replies(drill, chat_id)]
        assert received(drill, chat_id) == [texts[0]] * (1 + twice) + texts[1:]
        assert [attempts for _, _, attempts, _ in replies(drill, chat_id)] == [2] + [1] * AGENT_REPLIES
