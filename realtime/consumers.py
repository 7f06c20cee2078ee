"""The desk's WebSockets (SPEC §4): ``/ws/inbox/`` and ``/ws/tickets/<id>/``, for active staff only.

Consumers translate between a socket and the rest of the system and keep no shared state: rooms are
channel-layer groups, everything durable is in the database through ``tickets.services``, and typing is
relayed, never stored (G5, G7). What a consumer remembers is about its own socket: who is connected, and
on a ticket socket how far its client has the ticket's events. docs/architecture.md ("The desk's
sockets") describes the protocol, the resume rule and the numbers.
"""

import asyncio
import json
import logging

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from tickets import queries, services
from tickets.hooks import agent_typing, held_announcements, send_held
from tickets.models import Ticket

from . import events
from .broadcast import BROADCAST_TIMEOUT_SECONDS, send_to_group
from .groups import INBOX, agent_group, agent_sockets, ticket_group
from .layers import LayerUnavailable
from .protocol import TYPING_EXPIRES_IN_SECONDS, BadFrame, parse_frame
from .sessions import NOT_AUTHENTICATED, NOT_STAFF, session_tag

logger = logging.getLogger(__name__)

# Close codes (SPEC §4, with realtime.sessions'). The socket is accepted first, so that the client sees the code.
NO_SUCH_TICKET = 4404
# The channel layer could not subscribe the socket, or lost its subscriptions (realtime.layers): Redis is
# away. The client reconnects and resumes from the history (G12).
LAYER_UNAVAILABLE = 4503


def on_database_thread(function):
    """``function`` as a coroutine run on a worker thread, which gives its database connection back when
    it returns (channels' database_sync_to_async). Not thread-sensitive, so sockets do not queue behind
    one thread for their database work."""
    return database_sync_to_async(function, thread_sensitive=False)


class DeskConsumer(AsyncWebsocketConsumer):
    """What both desk sockets share: staff-only connections, checked JSON frames, forwarding events.

    The database only through on_database_thread, never the ORM's async methods: see ``dispatch``."""

    # The client frame types this socket accepts (realtime.protocol.FRAMES).
    frame_types = ()

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        except LayerUnavailable as error:
            # Redis restarting, say: a close the client acts on, not an application error per socket.
            logger.info("Desk socket closed, the channel layer is unavailable: %s", error)
            await self.disconnect(LAYER_UNAVAILABLE)
            # Whatever failed, nothing of this socket stays in the layer (its channel, groups, subscriptions).
            if hasattr(self, "channel_name"):  # not if the layer could not even make its channel
                await self.channel_layer.forget(self.channel_name)
            # Straight to the server: a failed subscription ends the consumer before it could send.
            await send({"type": "websocket.close", "code": LAYER_UNAVAILABLE})

    async def dispatch(self, message):
        # Channels (4.2+) awaits aclose_old_connections() before each message: a hop to asgiref's one shared
        # sync thread that every socket of the process queues for. These consumers reach the database only
        # through on_database_thread, which closes its own connections (docs/architecture.md, "The desk's
        # sockets"); websocket_disconnect still makes the hop once.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self):
        user = self.scope["user"]
        if not user.is_authenticated:
            return await self.refuse(NOT_AUTHENTICATED)
        if not (user.is_active and user.is_staff):
            return await self.refuse(NOT_STAFF)
        self.user = user
        self.session = session_tag(self.scope["session"].session_key)
        await self.join(agent_sockets(user.pk))
        if await self.open():
            await self.accept()

    async def open(self):
        """Find what the socket is about and join its groups; False if it has refused the connection."""
        raise NotImplementedError

    async def refuse(self, code):
        await self.accept()
        await self.close(code)

    async def join(self, group):
        await self.channel_layer.group_add(group, self.channel_name)
        self.groups.append(group)  # left again in websocket_disconnect

    async def receive(self, text_data=None, bytes_data=None):
        try:
            kind, fields = parse_frame(text_data, bytes_data, self.frame_types)
        except BadFrame as bad:
            return await self.send_event(events.error_event(bad.code, bad.detail))
        await getattr(self, f"on_{kind}")(**fields)

    async def session_ended(self, message):
        """realtime.sessions: the agent logged out of this socket's session, or may no longer use the desk."""
        if message["session"] in (None, self.session):
            await self.close(message["code"])

    async def client_events(self, message):
        """A channel-layer message of type realtime.broadcast.CLIENT_EVENTS: events for this socket's client."""
        for event in message["events"]:
            await self.forward(event)

    async def forward(self, event):
        await self.send_event(event)

    async def send_event(self, event):
        await self.send(text_data=json.dumps(event))

    async def call_service(self, function, *args, **kwargs):
        """Run a ticket service on a database thread, then broadcast what it announced (its connection is
        back in the pool by then: tickets.hooks.held_announcements)."""
        with held_announcements() as announced:
            try:
                return await on_database_thread(function)(*args, **kwargs)
            finally:
                await send_held(announced)


class InboxConsumer(DeskConsumer):
    """``/ws/inbox/``: every ticket's changes and new messages, and the agent's own read events.

    Each message and read event carries ``unread``: the agent's unread count in that ticket, counted from
    the read cursors in the database when the event is forwarded, so badges never rest on client counting.
    """

    async def open(self):
        await self.join(INBOX)
        await self.join(agent_group(self.user.pk))
        return True

    async def forward(self, event):
        if event["type"] in ("message", "read"):
            unread = await on_database_thread(queries.unread_count)(event["ticket_id"], self.user)
            event = events.with_unread(event, unread)
        await self.send_event(event)


def _customer_chat(ticket_id):
    """(the Telegram chat of the ticket's customer,) — (None,) once the customer was forgotten — or None
    if there is no such ticket."""
    return Ticket.objects.filter(pk=ticket_id).values_list("customer__telegram_user_id").first()


def _queue_reply(ticket_id, text, author, client_msg_id):
    return services.queue_reply(Ticket.objects.get(pk=ticket_id), text, author=author, client_msg_id=client_msg_id)


def _advance_read_cursor(ticket_id, user, message_id):
    return services.advance_read_cursor(Ticket.objects.get(pk=ticket_id), user, message_id)


class TicketConsumer(DeskConsumer):
    """``/ws/tickets/<id>/``: one ticket's room, with replies, read receipts, typing and resume (G12).

    The socket sends the ticket's events only once it knows where its client is: from the first
    ``resume``. From then on it sends each seq once, in order and without gaps: ``self.seq`` is the seq
    up to which the client has every event. A live event already sent is dropped; one that skips ahead
    (two server processes can deliver in either order, and a broadcast can be lost) is preceded by the
    missing events, read from the ticket's history.
    """

    frame_types = ("typing", "read", "message", "resume")

    # Per-socket state: how far the client has the ticket's events (None before its first resume), and
    # the lowest "after" it resumed from (this socket sent nothing at or below it).
    seq = None
    resumed_from = None
    typing = False
    telegram_typing = None

    async def open(self):
        self.ticket_id = self.scope["url_route"]["kwargs"]["ticket_id"]
        if await on_database_thread(_customer_chat)(self.ticket_id) is None:
            await self.refuse(NO_SUCH_TICKET)
            return False
        # Subscribed before any history is read, so nothing committed from now on can be missed.
        await self.join(ticket_group(self.ticket_id))
        return True

    async def disconnect(self, code):
        if self.telegram_typing is not None:
            self.telegram_typing.cancel()
        if self.typing and code != LAYER_UNAVAILABLE:  # Redis is away: the typing expires by itself (G7)
            await self.relay_typing("stop")

    # --- Events to the client -------------------------------------------------------------------------

    async def forward(self, event):
        if "seq" not in event:  # typing: ephemeral, never to its own author
            if event["user"]["id"] != self.user.pk:
                await self.send_event(event)
            return
        if self.seq is None or event["seq"] <= self.seq:
            return  # not positioned yet (its resume replays it), or already sent
        if event["seq"] == self.seq + 1:
            await self.send_event(event)
            self.seq = event["seq"]
        else:
            await self.catch_up()

    async def catch_up(self):
        """Send the stored events after ``self.seq``: they are committed, since a later one was announced."""
        replay = await on_database_thread(queries.events_after)(self.ticket_id, self.seq)
        if replay is None:
            return await self.resync(self.seq)
        for event in replay:
            await self.send_event(events.ticket_event(event))
            self.seq = event.seq

    async def resync(self, after):
        self.seq = self.resumed_from = None
        detail = f"The ticket's events after seq {after} are no longer stored: reload the ticket."
        await self.send_event(events.resync_event(detail))

    # --- Frames from the client -----------------------------------------------------------------------

    async def on_resume(self, after):
        """Replay every stored event after ``after`` that this socket has not sent, then say ``resumed``."""
        replay = await on_database_thread(queries.events_after)(self.ticket_id, after)
        if replay is None:
            return await self.resync(after)
        # Sent already (or the client said it has them): the seqs in (low, high].
        low, high = (after, after) if self.seq is None else (self.resumed_from, self.seq)
        for event in replay:
            if not low < event.seq <= high:
                await self.send_event(events.ticket_event(event))
                high = max(high, event.seq)
        self.resumed_from, self.seq = min(low, after), max(high, after)
        await self.send_event(events.resumed_event(self.seq))

    async def on_message(self, text, client_msg_id):
        """Queue a reply (idempotent on client_msg_id); its stored event reaches this socket like any other."""
        try:
            await self.call_service(_queue_reply, self.ticket_id, text, self.user, client_msg_id)
        except services.TicketRuleError as error:
            return await self.send_event(events.error_event("rejected", str(error), client_msg_id=client_msg_id))
        if self.typing:
            await self.relay_typing("stop")

    async def on_read(self, message_id):
        """Advance the agent's read cursor; the service records (and so broadcasts) a read only if it moved."""
        try:
            await self.call_service(_advance_read_cursor, self.ticket_id, self.user, message_id)
        except services.TicketRuleError as error:
            await self.send_event(events.error_event("rejected", str(error), message_id=message_id))

    async def on_typing(self, state):
        await self.relay_typing(state)
        if state == "start":
            self.show_typing_in_telegram()

    async def relay_typing(self, state):
        self.typing = state == "start"
        wire = events.typing_event(self.user, state, TYPING_EXPIRES_IN_SECONDS)
        try:
            # Bounded like a broadcast: a hung Redis must not hold up this socket's frames.
            async with asyncio.timeout(BROADCAST_TIMEOUT_SECONDS):
                await send_to_group(ticket_group(self.ticket_id), [wire])
        except TimeoutError:
            logger.warning("Typing not relayed, the channel layer timed out after %s s.", BROADCAST_TIMEOUT_SECONDS)
        except LayerUnavailable as error:
            # Best-effort, like typing itself (it expires on the colleagues' screens, G7): closing the socket
            # for it would only make its agent reconnect.
            logger.warning("Typing not relayed, the channel layer is unavailable: %s", error)

    def show_typing_in_telegram(self):
        """ "typing…" in the customer's chat (bots throttles it), in the background: a slow Bot API must not
        hold up this socket. At most one call per socket at a time."""
        if self.telegram_typing is None or self.telegram_typing.done():
            self.telegram_typing = asyncio.create_task(self._show_typing_in_telegram())

    async def _show_typing_in_telegram(self):
        # The chat as it is now: a customer forgotten since the socket opened is not written to again.
        (chat_id,) = await on_database_thread(_customer_chat)(self.ticket_id) or (None,)
        if chat_id is not None:
            await agent_typing.asend(sender=Ticket, chat_id=chat_id, agent=self.user)
