"""Every WebSocket event shape (SPEC §4), built here and only here: producers and tests use these.

A ticket's stored event (tickets.models.TicketEvent) becomes its wire event through ``ticket_event``, the
same function for a live broadcast and for a replay after ``resume``, so the two can never differ.
"""

from tickets.models import TicketEvent
from tickets.snapshots import user_data


def ticket_event(event):
    """The wire shape of a stored TicketEvent, with its ticket's id and seq at the top level."""
    data = event.data
    if event.kind in (TicketEvent.Kind.MESSAGE, TicketEvent.Kind.EDIT):
        wire = {"type": "message", "message": data["message"]}
    elif event.kind == TicketEvent.Kind.DELIVERY:
        wire = {"type": "delivery", "message_id": data["message_id"], "status": data["status"]}
        if data.get("error"):
            wire["error"] = data["error"]
    elif event.kind == TicketEvent.Kind.TICKET:
        # The summary carries the ticket's latest seq: the seq of the event that made it so.
        wire = {"type": "ticket", "ticket": {**data["ticket"], "seq": event.seq}, "change": data.get("change", {})}
    elif event.kind == TicketEvent.Kind.READ:
        wire = {"type": "read", "user": data["user"], "message_id": data["message_id"]}
    else:
        raise ValueError(f"Unknown ticket event kind {event.kind!r}")
    return {**wire, "ticket_id": event.ticket_id, "seq": event.seq}


def typing_event(user, state, expires_in):
    return {"type": "typing", "user": user_data(user), "state": state, "expires_in": expires_in}


def with_unread(wire, unread):
    """An inbox socket's copy of a message or read event, with its agent's unread count in that ticket."""
    return {**wire, "unread": unread}


def resumed_event(seq):
    """The end of a replay: the client now has every event of the ticket up to ``seq``."""
    return {"type": "resumed", "seq": seq}


def resync_event(detail):
    """The events a client asked for are no longer stored: it must reload the ticket."""
    return {"type": "resync", "detail": detail}


def error_event(code, detail, **context):
    """A frame the server did not act on; ``context`` names what it answers (e.g. ``client_msg_id``)."""
    return {"type": "error", "code": code, "detail": detail, **context}
