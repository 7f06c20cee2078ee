"""Every WebSocket event shape (SPEC §4), built here and only here: producers and tests use these."""


def user_summary(user):
    if user is None:
        return None
    return {"id": user.pk, "name": user.get_full_name() or user.get_username()}


def serialize_ticket(ticket):
    customer = ticket.customer
    return {
        "id": ticket.pk,
        "status": ticket.status,
        "subject": ticket.subject,
        "assignee": user_summary(ticket.assignee),
        "customer": {"id": customer.pk, "name": customer.name, "username": customer.username},
        "last_message_at": _iso(ticket.last_message_at),
    }


def serialize_message(message):
    return {
        "id": message.pk,
        "ticket_id": message.ticket_id,
        "direction": message.direction,
        "author": user_summary(message.author),
        "text": message.text,
        "attachment": message.attachment,
        "delivery_status": message.delivery_status or None,
        "client_msg_id": str(message.client_msg_id) if message.client_msg_id else None,
        "created_at": _iso(message.created_at),
        "edited_at": _iso(message.edited_at),
    }


def message_event(message):
    return {"type": "message", "message": serialize_message(message)}


def ticket_event(ticket):
    return {"type": "ticket", "ticket": serialize_ticket(ticket)}


def delivery_event(message):
    event = {"type": "delivery", "message_id": message.pk, "status": message.delivery_status}
    if message.delivery_error:
        event["error"] = message.delivery_error
    return event


def read_event(user, message_id):
    return {"type": "read", "user": user_summary(user), "message_id": message_id}


def typing_event(user, state, expires_in):
    return {"type": "typing", "user": user_summary(user), "state": state, "expires_in": expires_in}


def error_event(code, detail):
    return {"type": "error", "code": code, "detail": detail}


def _iso(value):
    return value.isoformat() if value else None
