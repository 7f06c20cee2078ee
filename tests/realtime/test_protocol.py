"""The desk sockets' protocol (SPEC §4), in-process through Channels' WebsocketCommunicator: who may connect,
what a bad frame gets, and each client frame's effect."""

import asyncio
import json
import threading
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from realtime import events
from realtime.broadcast import send_to_group
from realtime.groups import ticket_group
from realtime.protocol import MAX_FRAME_BYTES, TYPING_EXPIRES_IN_SECONDS
from tests.conftest import wait_on_loop_until, wait_until
from tickets import services
from tickets.hooks import held_announcements
from tickets.models import Message, ReadCursor, Ticket, TicketEvent

from .conftest import connect, customer_writes, logged_in, open_socket

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def telegram(settings, sandbox_bot):
    """The test's bot on its sandbox (conftest's sandbox_bot), and a fresh in-memory channel layer for each
    test: every test runs on an event loop of its own, and channels-redis' layer, made for one loop per
    process, stalls when a second loop receives on it. The sockets over Redis between real server processes
    are tested in test_live.py."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    return sandbox_bot


def room(ticket):
    return f"/ws/tickets/{ticket.pk}/"


def wire_history(ticket, after=0):
    return [
        events.ticket_event(event) for event in TicketEvent.objects.filter(ticket=ticket, seq__gt=after).order_by("seq")
    ]


# --- Who may connect (G11) -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ws/inbox/", "/ws/tickets/1/"])
async def test_without_a_session_the_socket_is_closed_with_4401(path):
    accepted, communicator = await open_socket(path)

    assert accepted  # accepted first, so that the client sees the code
    assert await communicator.receive_output() == {"type": "websocket.close", "code": 4401}


@pytest.mark.parametrize("path", ["/ws/inbox/", "/ws/tickets/1/"])
async def test_a_user_who_is_not_staff_is_closed_with_4403(path, django_user_model):
    customer_service_fan = await sync_to_async(django_user_model.objects.create_user)("fan", password="x")

    accepted, communicator = await open_socket(path, customer_service_fan)

    assert accepted
    assert await communicator.receive_output() == {"type": "websocket.close", "code": 4403}


async def test_a_deactivated_agents_session_no_longer_authenticates(agent):
    agent.is_active = False
    await agent.asave()

    # Django's ModelBackend resolves no user from an inactive user's session: not authenticated.
    accepted, communicator = await open_socket("/ws/inbox/", agent)

    assert accepted
    assert await communicator.receive_output() == {"type": "websocket.close", "code": 4401}


async def test_a_ticket_that_does_not_exist_is_closed_with_4404(agent):
    accepted, communicator = await open_socket("/ws/tickets/999999/", agent)

    assert accepted
    assert await communicator.receive_output() == {"type": "websocket.close", "code": 4404}


async def test_a_forgotten_customers_ticket_stays_live(agent, ticket, django_user_model):
    admin = await django_user_model.objects.acreate(username="dpo", is_staff=True, is_superuser=True)
    await sync_to_async(services.forget_customer)(ticket.customer, acting_user=admin)
    socket = await connect(room(ticket), agent)

    replayed = await socket.resume(0)
    await socket.send({"type": "typing", "state": "start"})  # nobody to show it to in Telegram
    question = next(event["message"] for event in replayed if event["type"] == "message")
    await socket.send({"type": "read", "message_id": question["id"]})

    assert replayed == await sync_to_async(wire_history)(ticket)
    assert (await socket.receive())["type"] == "read"


@pytest.mark.parametrize("origin", ["https://evil.example", "http://127.0.0.1.evil.example", "null"])
async def test_a_page_of_another_origin_cannot_open_a_socket(agent, origin):
    accepted, _ = await open_socket("/ws/inbox/", agent, origin=origin)

    assert not accepted


async def test_an_agent_connects_to_the_inbox_and_a_ticket(agent, ticket):
    await connect("/ws/inbox/", agent)
    socket = await connect(room(ticket), agent)

    assert [event["seq"] for event in await socket.resume()] == [1, 2]


async def test_a_socket_forwards_events_while_djangos_shared_sync_thread_is_busy(agent, other_agent, ticket):
    # Channels' consumers wait for that one thread before every message; a desk socket must not, or a slow
    # sync call anywhere in the process (sockets loading their sessions in a reconnect storm) stalls them all.
    socket = await connect(room(ticket), agent)
    await socket.resume()
    busy, release = threading.Event(), threading.Event()

    def occupy():
        busy.set()
        release.wait(30)

    occupied = asyncio.ensure_future(sync_to_async(occupy)())  # thread-sensitive: Django's shared thread
    try:
        await wait_on_loop_until(busy.is_set, timeout=10, message="the shared sync thread")
        await send_to_group(ticket_group(ticket.pk), [events.typing_event(other_agent, "start", 5)])
        arrived = await socket.receive()
    finally:
        release.set()
        await occupied

    assert (arrived["type"], arrived["user"]["id"]) == ("typing", other_agent.pk)


async def test_desk_sockets_leave_no_database_connection_on_djangos_shared_sync_thread(agent, other_agent, ticket):
    # Their messages skip Channels' close_old_connections() on that thread (DeskConsumer.dispatch), so nothing
    # they do may open a connection there: it would stay out of the pool (G9).
    inbox = await connect("/ws/inbox/", other_agent)
    colleague = await connect(room(ticket), other_agent)
    socket = await connect(room(ticket), agent)
    await socket.resume()
    await socket.send({"type": "typing", "state": "start"})
    await colleague.receive()
    await socket.send({"type": "message", "text": "On it", "client_msg_id": str(uuid.uuid4())})
    sent = await socket.receive()
    await colleague.send({"type": "read", "message_id": sent["message"]["id"]})
    await inbox.receive_until("read")

    assert await sync_to_async(lambda: connection.connection)() is None


async def test_logging_out_closes_the_sockets_of_that_session_and_no_other(agent, ticket):
    browsers = [await sync_to_async(logged_in)(agent) for _ in range(2)]
    sockets = []
    for browser in browsers:
        for path in ("/ws/inbox/", room(ticket)):
            accepted, communicator = await open_socket(path, browser=browser)
            assert accepted
            sockets.append(communicator)

    response = await sync_to_async(browsers[0].post)("/accounts/logout/")

    assert response.status_code == 302
    for communicator in sockets[:2]:
        assert await communicator.receive_output() == {"type": "websocket.close", "code": 4401}
    assert all([await communicator.receive_nothing() for communicator in sockets[2:]])


@pytest.mark.parametrize("change", [{"is_staff": False}, {"is_active": False}])
async def test_an_agent_who_may_no_longer_use_the_desk_has_every_socket_closed(agent, ticket, change):
    sockets = [(await open_socket(path, agent))[1] for path in ("/ws/inbox/", room(ticket), room(ticket))]
    for field, value in change.items():
        setattr(agent, field, value)

    await agent.asave()

    for communicator in sockets:
        assert await communicator.receive_output() == {"type": "websocket.close", "code": 4403}


async def test_a_deleted_agent_has_every_socket_closed(agent, ticket):
    sockets = [(await open_socket(path, agent))[1] for path in ("/ws/inbox/", room(ticket))]

    await agent.adelete()

    for communicator in sockets:
        assert await communicator.receive_output() == {"type": "websocket.close", "code": 4401}


# --- Bad frames: an error event, and the socket stays open ---------------------------------------------

BAD_FRAMES = [
    ("not json", "bad_frame"),
    ("[1, 2]", "bad_frame"),
    ('"resume"', "bad_frame"),
    ("{}", "unknown_type"),
    ('{"type": "shout", "text": "hi"}', "unknown_type"),
    ('{"type": ["resume"]}', "unknown_type"),
    ('{"type": "resume"}', "bad_field"),
    ('{"type": "resume", "after": "5"}', "bad_field"),
    ('{"type": "resume", "after": -1}', "bad_field"),
    ('{"type": "resume", "after": 1.5}', "bad_field"),
    ('{"type": "read", "message_id": true}', "bad_field"),
    ('{"type": "read", "message_id": 99999999999999999999999}', "bad_field"),
    ('{"type": "typing", "state": "maybe"}', "bad_field"),
    ('{"type": "message", "text": 5, "client_msg_id": "x"}', "bad_field"),
    ('{"type": "message", "text": "\\ud800", "client_msg_id": "x"}', "bad_field"),
    ('{"type": "message", "text": "hi"}', "bad_field"),
    (json.dumps({"type": "message", "text": "x" * MAX_FRAME_BYTES, "client_msg_id": "x"}), "too_large"),
]


async def test_each_bad_frame_gets_an_error_event_and_the_socket_stays_open(agent, ticket):
    socket = await connect(room(ticket), agent)

    for frame, code in BAD_FRAMES:
        await socket.communicator.send_to(text_data=frame)
        error = await socket.receive()

        assert (error["type"], error["code"]) == ("error", code), frame
        assert error["detail"]
    assert [event["seq"] for event in await socket.resume()] == [1, 2]  # still open, still working
    assert await Message.objects.acount() == 1


async def test_a_binary_frame_and_any_frame_on_the_inbox_get_error_events(agent):
    inbox = await connect("/ws/inbox/", agent)

    await inbox.communicator.send_to(bytes_data=b'{"type": "resume", "after": 0}')
    binary = await inbox.receive()
    await inbox.send({"type": "resume", "after": 0})
    unknown = await inbox.receive()

    assert (binary["code"], unknown["code"]) == ("bad_frame", "unknown_type")
    await inbox.send({"type": "typing", "state": "start"})
    assert (await inbox.receive())["code"] == "unknown_type"


async def test_a_frame_at_the_size_limit_is_read(agent, ticket):
    socket = await connect(room(ticket), agent)
    frame = json.dumps({"type": "resume", "after": 0})
    padded = frame[:-1] + " " * (MAX_FRAME_BYTES - len(frame)) + "}"

    await socket.communicator.send_to(text_data=padded)

    assert [event["type"] for event in await socket.receive_until("resumed")] == ["ticket", "message", "resumed"]


# --- Messages ----------------------------------------------------------------------------------------


async def test_a_reply_is_stored_as_the_sessions_agent_whatever_the_frame_claims(agent, other_agent, ticket):
    socket = await connect(room(ticket), agent)
    await socket.resume()
    client_msg_id = str(uuid.uuid4())

    await socket.send(
        {
            "type": "message",
            "text": "On it",
            "client_msg_id": client_msg_id,
            "author": {"id": other_agent.pk, "name": "agent2"},
            "user": other_agent.pk,
            "direction": "in",
            "ticket_id": 12345,
        }
    )
    event = await socket.receive()

    reply = await Message.objects.select_related("author").aget(client_msg_id=client_msg_id)
    assert (reply.author, reply.direction, reply.ticket_id, reply.text) == (agent, "out", ticket.pk, "On it")
    assert event == events.ticket_event(await TicketEvent.objects.aget(ticket=ticket, seq=3))
    assert event["message"]["client_msg_id"] == client_msg_id
    assert event["message"]["author"] == {"id": agent.pk, "name": "agent"}
    assert event["message"]["delivery_status"] == "queued"


async def test_sending_the_same_client_msg_id_again_changes_nothing(agent, ticket):
    socket = await connect(room(ticket), agent)
    await socket.resume()
    first, second = str(uuid.uuid4()), str(uuid.uuid4())

    await socket.send({"type": "message", "text": "On it", "client_msg_id": first})
    original = await socket.receive()
    await socket.send({"type": "message", "text": "On it", "client_msg_id": first})
    await socket.send({"type": "message", "text": "Next", "client_msg_id": second})
    following = await socket.receive()

    assert original["message"]["client_msg_id"] == first
    assert following["message"]["client_msg_id"] == second  # nothing came between: the resend was a no-op
    assert following["seq"] == original["seq"] + 1
    assert await Message.objects.filter(client_msg_id=first).acount() == 1


@pytest.mark.parametrize(
    ("text", "client_msg_id", "reason"),
    [
        ("On it", "not-a-uuid", "client_msg_id must be a UUID"),
        ("   ", None, "needs some text"),
        ("x" * 4097, None, "at most 4096 characters"),
        ("Hello again", None, "is closed"),
    ],
)
async def test_a_reply_the_rules_refuse_gets_the_services_reason(agent, ticket, text, client_msg_id, reason):
    if reason == "is closed":
        await sync_to_async(services.change_ticket_status)(ticket, "closed", acting_user=agent)
    socket = await connect(room(ticket), agent)
    client_msg_id = client_msg_id or str(uuid.uuid4())

    await socket.send({"type": "message", "text": text, "client_msg_id": client_msg_id})
    error = await socket.receive()

    assert (error["type"], error["code"], error["client_msg_id"]) == ("error", "rejected", client_msg_id)
    assert reason in error["detail"]
    assert not await Message.objects.filter(direction="out").aexists()


# --- Read status (G6) ---------------------------------------------------------------------------------


async def test_a_read_moves_the_cursor_and_is_broadcast_only_when_it_moved(agent, other_agent, ticket):
    mine = await connect(room(ticket), agent)
    colleague = await connect(room(ticket), other_agent)
    await mine.resume()
    await colleague.resume()
    first = await Message.objects.aget()

    await mine.send({"type": "read", "message_id": first.pk})
    assert (await mine.receive())["type"] == "read"
    await mine.send({"type": "read", "message_id": first.pk})  # not a move: no event
    await sync_to_async(customer_writes)(text="still there?", telegram_message_id=2)
    seen = [await colleague.receive() for _ in range(2)]

    assert [event["type"] for event in seen] == ["read", "message"]
    assert (await mine.receive())["type"] == "message"  # and no second read came before it
    assert seen[0]["user"] == {"id": agent.pk, "name": "agent"}
    assert seen[0]["message_id"] == first.pk
    assert (await ReadCursor.objects.aget(user=agent)).last_read_message_id == first.pk
    await mine.send({"type": "read", "message_id": 999999})
    error = await mine.receive_until("error")
    assert "not in ticket" in error[-1]["detail"]


async def test_the_inbox_adds_the_agents_own_unread_count_to_message_and_read_events(agent, other_agent, ticket):
    inbox = await connect("/ws/inbox/", agent)
    colleagues_inbox = await connect("/ws/inbox/", other_agent)
    socket = await connect(room(ticket), agent)

    second = await sync_to_async(customer_writes)(text="more", telegram_message_id=2)
    arrived = await inbox.receive()
    await socket.send({"type": "read", "message_id": second.pk})
    read = await inbox.receive()
    await sync_to_async(customer_writes)(text="and more", telegram_message_id=3)
    after_read = await inbox.receive()

    assert (arrived["type"], arrived["seq"], arrived["unread"]) == ("message", 3, 2)
    assert (read["type"], read["message_id"], read["unread"]) == ("read", second.pk, 0)
    assert (after_read["type"], after_read["unread"]) == ("message", 1)
    # A colleague's inbox hears of the messages, not of this agent's read, and counts its own unread.
    assert [(event["seq"], event["unread"]) for event in [await colleagues_inbox.receive() for _ in range(2)]] == [
        (3, 2),
        (5, 3),
    ]


# --- Typing (G7) --------------------------------------------------------------------------------------


async def test_typing_reaches_colleagues_with_an_expiry_and_never_its_author(agent, other_agent, ticket):
    typist = await connect(room(ticket), agent)
    colleague = await connect(room(ticket), other_agent)

    await typist.send({"type": "typing", "state": "start", "user": {"id": other_agent.pk, "name": "forged"}})
    start = await colleague.receive()
    await typist.send({"type": "typing", "state": "stop"})
    stop = await colleague.receive()
    await typist.send({"type": "typing", "state": "start"})
    await colleague.receive()
    await typist.send({"type": "message", "text": "Done", "client_msg_id": str(uuid.uuid4())})
    stop_on_send = await colleague.receive()
    await typist.send({"type": "typing", "state": "start"})
    await colleague.receive()
    await typist.close()
    stop_on_disconnect = await colleague.receive()

    agent_data = {"id": agent.pk, "name": "agent"}
    assert start == {"type": "typing", "user": agent_data, "state": "start", "expires_in": TYPING_EXPIRES_IN_SECONDS}
    assert (stop["state"], stop_on_send["state"], stop_on_disconnect["state"]) == ("stop", "stop", "stop")
    assert stop_on_disconnect["user"] == agent_data
    # The typist's own socket got none of it: its next event is the reply it sent (after its resume).


async def test_the_author_of_typing_receives_none_of_their_own(agent, other_agent, ticket):
    typist = await connect(room(ticket), agent)
    second_tab = await connect(room(ticket), agent)
    colleague = await connect(room(ticket), other_agent)

    await typist.send({"type": "typing", "state": "start"})
    await colleague.send({"type": "typing", "state": "start"})

    assert (await colleague.receive())["user"]["id"] == agent.pk
    assert (await typist.receive())["user"]["id"] == other_agent.pk
    assert (await second_tab.receive())["user"]["id"] == other_agent.pk  # not the agent's own from the first tab


async def test_agent_typing_shows_in_telegram_without_waiting_for_the_bot_api(agent, telegram):
    # A customer of its own: bots lets one "typing…" per chat through every few seconds.
    ticket = (await sync_to_async(customer_writes)(user_id=4242)).ticket
    await asyncio.to_thread(telegram.send_message, 4242, "hello")  # the customer's chat, as Telegram knows it
    await asyncio.to_thread(telegram.add_fault, "sendChatAction", delay=60)  # Telegram answers a minute late
    socket = await connect(room(ticket), agent)
    await socket.resume()

    await socket.send({"type": "typing", "state": "start"})
    await socket.send({"type": "message", "text": "Typed it", "client_msg_id": str(uuid.uuid4())})
    reply = await socket.receive()

    assert reply["message"]["text"] == "Typed it"  # the socket went on while the chat action was held
    calls = await asyncio.to_thread(wait_until, lambda: telegram.calls("sendChatAction"), message="sendChatAction")
    assert [int(call["params"]["chat_id"]) for call in calls] == [4242]


async def test_no_typing_reaches_a_customer_forgotten_while_their_ticket_was_open(agent, telegram, django_user_model):
    forgotten, other = [(await sync_to_async(customer_writes)(user_id=user_id)).ticket for user_id in (4343, 4344)]
    for user_id in (4343, 4344):
        await asyncio.to_thread(telegram.send_message, user_id, "hello")
    sockets = [await connect(room(ticket), agent) for ticket in (forgotten, other)]
    admin = await django_user_model.objects.acreate(username="dpo", is_staff=True, is_superuser=True)
    await sync_to_async(services.forget_customer)(forgotten.customer, acting_user=admin)

    for socket in sockets:
        await socket.send({"type": "typing", "state": "start"})

    chats = lambda: [int(call["params"]["chat_id"]) for call in telegram.calls("sendChatAction")]  # noqa: E731
    await asyncio.to_thread(wait_until, lambda: 4344 in chats(), message="typing in the other customer's chat")
    assert chats() == [4344]


# --- Resume (G12) -------------------------------------------------------------------------------------


async def test_a_socket_sends_ticket_events_only_from_its_first_resume(agent, ticket):
    socket = await connect(room(ticket), agent)
    await sync_to_async(customer_writes)(text="before resume", telegram_message_id=2)

    replayed = await socket.resume(after=1)
    assert replayed == await sync_to_async(wire_history)(ticket, after=1)
    await sync_to_async(customer_writes)(text="after resume", telegram_message_id=3)
    live = await socket.receive()

    assert [event["seq"] for event in replayed] == [2, 3]
    assert (live["seq"], live["message"]["text"]) == (4, "after resume")


async def test_resume_skips_what_this_socket_sent_and_answers_the_seq_the_client_is_now_at(agent, ticket):
    socket = await connect(room(ticket), agent)
    assert [event["seq"] for event in await socket.resume(after=2)] == []
    await sync_to_async(customer_writes)(text="live", telegram_message_id=2)
    assert (await socket.receive())["seq"] == 3

    # The client asks again from further back: it gets what this socket never sent, and seq 3 not again.
    await socket.send({"type": "resume", "after": 0})
    received = await socket.receive_until("resumed")

    assert [(event["type"], event["seq"]) for event in received] == [("ticket", 1), ("message", 2), ("resumed", 3)]


async def test_a_live_event_that_skips_ahead_comes_after_the_missing_ones_from_the_history(agent, ticket):
    socket = await connect(room(ticket), agent)
    await socket.resume(after=2)
    with held_announcements():  # as if these broadcasts were lost on the way
        await sync_to_async(customer_writes)(text="lost 1", telegram_message_id=2)
        await sync_to_async(customer_writes)(text="lost 2", telegram_message_id=3)
    await sync_to_async(customer_writes)(text="arrives", telegram_message_id=4)

    received = [await socket.receive() for _ in range(3)]

    assert [(event["seq"], event["message"]["text"]) for event in received] == [
        (3, "lost 1"),
        (4, "lost 2"),
        (5, "arrives"),
    ]


async def test_live_events_arriving_out_of_order_reach_the_client_in_order_once(agent, ticket):
    socket = await connect(room(ticket), agent)
    await socket.resume(after=2)
    with held_announcements() as held:
        for i in range(3):
            await sync_to_async(customer_writes)(text=f"m{i}", telegram_message_id=10 + i)
    # Two server processes can deliver in any order: seq 5 first, then 3, then 4.
    for event in (held[2], held[0], held[1], held[2]):
        await send_to_group(ticket_group(ticket.pk), [events.ticket_event(event)])
    await sync_to_async(customer_writes)(text="next", telegram_message_id=20)

    received = [await socket.receive() for _ in range(4)]

    assert [event["seq"] for event in received] == [3, 4, 5, 6]


async def test_resume_into_pruned_history_answers_resync(agent, ticket):
    await TicketEvent.objects.filter(ticket=ticket, seq=1).adelete()
    socket = await connect(room(ticket), agent)

    await socket.send({"type": "resume", "after": 0})
    resync = await socket.receive()
    await socket.send({"type": "resume", "after": 1})
    replayed = await socket.receive_until("resumed")

    assert resync["type"] == "resync"
    assert "reload" in resync["detail"]
    assert [(event["type"], event["seq"]) for event in replayed] == [("message", 2), ("resumed", 2)]


async def test_a_status_change_reaches_the_room_and_the_inbox(agent, ticket):
    inbox = await connect("/ws/inbox/", agent)
    socket = await connect(room(ticket), agent)
    await socket.resume(after=2)

    await sync_to_async(services.change_ticket_status)(ticket, "pending", acting_user=agent)
    in_room, in_inbox = await socket.receive(), await inbox.receive()

    assert in_room == in_inbox
    assert (in_room["type"], in_room["seq"], in_room["ticket"]["status"]) == ("ticket", 3, "pending")
    assert "unread" not in in_inbox
    assert await Ticket.objects.filter(status="pending").acount() == 1
