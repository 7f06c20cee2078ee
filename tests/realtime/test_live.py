"""The desk across real processes on one Redis and one PostgreSQL: two daphne servers, the task worker, the
Telegram sandbox delivering to the webhook, and agents on real WebSocket clients (G5, G6, G7, G12, SPEC §6).

The servers, the worker and one idle socket are started once for the module; each test has its own agents,
customers and sandbox state."""

import threading
import time
import uuid
from dataclasses import dataclass

import pytest
from asgiref.sync import async_to_sync
from django.db import connection

from bots.sandbox.client import SandboxClient
from realtime import events
from realtime.broadcast import send_to_group
from realtime.groups import ticket_group
from realtime.protocol import TYPING_EXPIRES_IN_SECONDS
from tests.bots import factories
from tests.conftest import (
    WEBHOOK_SECRET,
    Process,
    Server,
    launch_server,
    launch_worker,
    server_environment,
    unique_bot_token,
    wait_until,
)
from tickets import services
from tickets.models import Message, ReadCursor, Ticket
from tickets.queries import events_after

from .live import LiveSocket, live_socket, staff_session, stored_message

pytestmark = [pytest.mark.needs_redis, pytest.mark.needs_postgres, pytest.mark.django_db(transaction=True)]

IDLE_SECONDS = 30


@dataclass
class Desk:
    servers: list[Server]
    worker: Process
    bot: SandboxClient
    idle: LiveSocket  # opened when the module started, never used since
    idle_since: float
    idle_ticket_id: int


@pytest.fixture(scope="module")
def desk_processes(django_db_setup, django_db_blocker, _sandbox_server, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("desk")
    token = unique_bot_token()
    env = server_environment(token, _sandbox_server.url)
    servers = [launch_server(env, log_dir), launch_server(env, log_dir)]
    worker = launch_worker(env, log_dir / "worker.log")
    with django_db_blocker.unblock():
        # A socket opened now and left alone until the module's last test (SPEC §6).
        _, cookie = staff_session(servers[0], "idler")
        ticket = services.record_inbound_message(
            services.TelegramProfile(user_id=799), text="idle", telegram_message_id=1
        )[0].ticket
    with live_socket(servers[0].url, cookie, f"/ws/tickets/{ticket.pk}/") as idle:
        yield Desk(servers, worker, _sandbox_server.client(token), idle, time.monotonic(), ticket.pk)
    for process in (*servers, worker):
        process.stop()


@pytest.fixture
def desk(desk_processes, sandbox):
    """The module's processes, with the sandbox (reset for this test) delivering updates to server 1."""
    desk_processes.bot.set_webhook(f"{desk_processes.servers[0].url}/telegram/webhook/", secret=WEBHOOK_SECRET)
    return desk_processes


def customer_writes(desk, user_id, text):
    """The customer writes to the bot in Telegram (the sandbox), which delivers it to server 1's webhook."""
    desk.bot.send_message(user_id, text, first_name="Carol")
    return stored_message(text, user_id)


def reply_over(socket, text):
    client_msg_id = str(uuid.uuid4())
    socket.send({"type": "message", "text": text, "client_msg_id": client_msg_id})
    return wait_until(lambda: Message.objects.filter(client_msg_id=client_msg_id).first(), message=f"reply {text!r}")


def delivered(message):
    return wait_until(
        lambda: Message.objects.filter(pk=message.pk, delivery_status="sent").exists(),
        message=f"reply {message.pk} to be sent",
    )


def room(ticket):
    return f"/ws/tickets/{ticket.pk}/"


def wire_events_after(ticket, seq):
    return [events.ticket_event(event) for event in events_after(ticket.pk, seq)]


def test_a_reconnecting_agent_gets_exactly_what_other_processes_did_meanwhile_in_order_once(desk):
    alice, alices = staff_session(desk.servers[0], "alice")
    bob, bobs = staff_session(desk.servers[1], "bob")
    ticket = customer_writes(desk, 701, "My parcel is lost").ticket
    delivered(Message.objects.get(ticket=ticket, direction="out"))  # the bot's "ticket opened" reply
    with live_socket(desk.servers[0].url, alices, room(ticket)) as socket:
        last = socket.resume(0)[-1]["seq"]

    # Alice is away. The customer writes three times and edits one (server 1's webhook, through the sandbox).
    details = [customer_writes(desk, 701, f"Detail {i}") for i in range(3)]
    corrected = {"message_id": details[0].telegram_message_id, "edit_date": int(time.time())}
    edit = factories.update(701, "Detail 0, corrected", kind="edited_message", **corrected)
    desk.bot.post_update(edit)
    wait_until(lambda: Message.objects.filter(text="Detail 0, corrected").exists(), message="the edit")
    # Bob, on server 2, replies (the worker delivers it) and reads; then the ticket goes pending (this process).
    with live_socket(desk.servers[1].url, bobs, room(ticket)) as colleague:
        delivered(reply_over(colleague, "We are looking into it"))
        colleague.send({"type": "read", "message_id": details[-1].pk})
        wait_until(lambda: ReadCursor.objects.filter(user=bob).exists(), message="Bob's read cursor")
    services.change_ticket_status(ticket, "pending", acting_user=bob)
    missed = wire_events_after(ticket, last)

    with live_socket(desk.servers[1].url, alices, room(ticket)) as socket:  # back, on the other server
        replayed = socket.resume(last)

    assert replayed == missed
    assert [event["seq"] for event in replayed] == list(range(last + 1, last + 9))
    assert socket.received[-1] == {"type": "resumed", "seq": last + 8}
    assert [(event["type"], event.get("message", {}).get("direction")) for event in replayed] == [
        ("message", "in"),
        ("message", "in"),
        ("message", "in"),
        ("message", "in"),  # the edit
        ("message", "out"),
        ("delivery", None),
        ("read", None),
        ("ticket", None),
    ]
    assert replayed[3]["message"]["text"] == "Detail 0, corrected"
    assert replayed[6]["user"]["id"] == bob.pk
    assert alice.pk not in {event.get("user", {}).get("id") for event in replayed}


def test_events_made_while_an_agent_keeps_reconnecting_reach_it_once_each_in_order(desk):
    _, alices = staff_session(desk.servers[0], "alice")
    bob, bobs = staff_session(desk.servers[1], "bob")
    ticket = customer_writes(desk, 702, "Hello?").ticket
    with live_socket(desk.servers[0].url, alices, room(ticket)) as socket:
        start = socket.resume(0)[-1]["seq"]
    seen = []  # every seq Alice's sockets received, in order
    start_together = threading.Barrier(6)
    producing = threading.Event()
    producing.set()
    errors = []

    def latest_seq():
        return Ticket.objects.values_list("last_seq", flat=True).get(pk=ticket.pk)

    def alice_reconnects():
        cycle = 0
        while producing.is_set() or cycle < 5:
            with live_socket(desk.servers[cycle % 2].url, alices, room(ticket)) as socket:
                if cycle == 0:
                    start_together.wait()
                socket.resume(seen[-1] if seen else start)
                # And live events up to what is committed now (they arrive live, or from the history).
                target = latest_seq()
                while not socket.seqs() or socket.seqs()[-1] < target:
                    socket.receive()
            seen.extend(socket.seqs())
            cycle += 1

    def customer():  # through the sandbox and server 1's webhook
        start_together.wait()
        for i in range(8):
            customer_writes(desk, 702, f"Message {i}")

    def colleague():  # on server 2; the worker delivers the replies
        with live_socket(desk.servers[1].url, bobs, room(ticket)) as socket:
            start_together.wait()
            for i in range(4):
                reply = reply_over(socket, f"Reply {i}")
                socket.send({"type": "read", "message_id": reply.pk})

    def assigner():  # in this process, as fast as the ticket's row lock allows
        start_together.wait()
        for i in range(40):
            services.assign_ticket(ticket, bob if i % 2 else None, acting_user=bob)

    def run(work):
        try:
            work()
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    agent = threading.Thread(target=run, args=(alice_reconnects,))
    producers = [threading.Thread(target=run, args=(work,)) for work in (customer, colleague, *[assigner] * 3)]
    for thread in (agent, *producers):
        thread.start()
    for thread in producers:
        thread.join()
    producing.clear()
    agent.join()
    assert not errors, errors
    for reply in Message.objects.filter(direction="out", author=bob):
        delivered(reply)
    with live_socket(desk.servers[0].url, alices, room(ticket)) as socket:
        socket.resume(seen[-1])
    seen.extend(socket.seqs())

    assert seen == list(range(start + 1, latest_seq() + 1))
    assert len(seen) >= 8 + 4 * 3 + 40  # messages; replies, deliveries and reads; assignments (some no-ops)


def test_two_agents_on_two_servers_see_each_others_typing_reads_and_replies(desk):
    alice, alices = staff_session(desk.servers[0], "alice")
    _, bobs = staff_session(desk.servers[1], "bob")
    question = customer_writes(desk, 703, "Is anyone there?")
    ticket = question.ticket
    with live_socket(desk.servers[1].url, bobs, room(ticket)) as bob_socket:
        bob_socket.resume(0)
        alice_data = {"id": alice.pk, "name": "alice"}

        def alice_typing_as_bob_sees_it(state):
            return bob_socket.receive_until(lambda event: event["type"] == "typing")[-1] == {
                "type": "typing",
                "user": alice_data,
                "state": state,
                "expires_in": TYPING_EXPIRES_IN_SECONDS,
            }

        with live_socket(desk.servers[0].url, alices, room(ticket)) as typist:
            typist.resume(0)
            typist.send({"type": "typing", "state": "start"})
            assert alice_typing_as_bob_sees_it("start")
            typist.send({"type": "typing", "state": "stop"})
            assert alice_typing_as_bob_sees_it("stop")
            typist.send({"type": "typing", "state": "start"})
            assert alice_typing_as_bob_sees_it("start")
            reply = reply_over(typist, "Yes, I am here")
            assert alice_typing_as_bob_sees_it("stop")  # sending the message ends the typing
            typist.send({"type": "typing", "state": "start"})
            assert alice_typing_as_bob_sees_it("start")
        assert alice_typing_as_bob_sees_it("stop")  # so does leaving

        with live_socket(desk.servers[0].url, alices, room(ticket)) as alice_socket:
            alice_socket.resume(0)
            alice_socket.send({"type": "read", "message_id": question.pk})
            read = bob_socket.receive_until(lambda event: event["type"] == "read")[-1]
        delivery = bob_socket.receive_until(lambda event: event["type"] == "delivery")[-1]

    assert (read["user"], read["message_id"]) == (alice_data, question.pk)
    assert ReadCursor.objects.get(user=alice).last_read_message_id == question.pk
    replies = [event for event in bob_socket.received if event.get("message", {}).get("id") == reply.pk]
    assert len(replies) == 1 and replies[0]["message"]["author"] == alice_data
    assert (delivery["message_id"], delivery["status"]) == (reply.pk, "sent")
    sent = [call for call in desk.bot.calls("sendMessage") if call["params"]["text"] == "Yes, I am here"]
    assert len(sent) == 1
    assert not [event for event in typist.received if event["type"] == "typing"]  # never her own
    assert {int(call["params"]["chat_id"]) for call in desk.bot.calls("sendChatAction")} == {703}


def test_a_socket_left_idle_for_30_seconds_stays_open_and_receives_the_next_event(desk_processes):
    """Last in the module: the socket opened when the module started has been idle since (SPEC §6: redis-py's
    default read timeout would have closed it with 1011 after a few seconds)."""
    idle_for = time.monotonic() - desk_processes.idle_since
    if idle_for < IDLE_SECONDS:
        time.sleep(IDLE_SECONDS - idle_for)  # the idleness under test, not a wait for something
    colleague = {"id": 0, "name": "colleague"}
    typing = {"type": "typing", "user": colleague, "state": "start", "expires_in": TYPING_EXPIRES_IN_SECONDS}

    async_to_sync(send_to_group)(ticket_group(desk_processes.idle_ticket_id), [typing])

    assert desk_processes.idle.receive() == typing
