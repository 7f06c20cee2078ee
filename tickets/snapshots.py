"""Plain-data snapshots of tickets, messages and agents: what a TicketEvent stores in its ``data``.

An event is rendered for the wire from its snapshot (realtime.events), live and on replay alike, so
these are the shapes clients see inside ``message`` and ``ticket`` events (SPEC §4).
"""


def user_data(user):
    if user is None:
        return None
    return {"id": user.pk, "name": user.get_full_name() or user.get_username()}


def customer_data(customer):
    return {"id": customer.pk, "name": customer.name, "username": customer.username}


def ticket_data(ticket):
    """The ticket as the inbox shows it; ``ticket.customer`` and ``ticket.assignee`` should be loaded."""
    return {
        "id": ticket.pk,
        "status": ticket.status,
        "subject": ticket.subject,
        "assignee": user_data(ticket.assignee),
        "customer": customer_data(ticket.customer),
        "created_at": iso(ticket.created_at),
        "last_message_at": iso(ticket.last_message_at),
    }


def message_data(message):
    """The message as a chat page shows it; ``message.author`` should be loaded."""
    return {
        "id": message.pk,
        "ticket_id": message.ticket_id,
        "direction": message.direction,
        "author": user_data(message.author),
        "text": message.text,
        "attachment": message.attachment,
        "delivery_status": message.delivery_status or None,
        "delivery_error": message.delivery_error or None,
        "client_msg_id": str(message.client_msg_id) if message.client_msg_id else None,
        "created_at": iso(message.created_at),
        "edited_at": iso(message.edited_at),
    }


def iso(value):
    return value.isoformat() if value else None


def forgotten_event_data(data, customer):
    """An event's ``data`` without what forgetting ``customer`` erases: message contents, the ticket's
    subject, the customer's details, Telegram's words about a failed delivery. The rest (ids, statuses,
    dates, agents) stays, so the history still tells what happened and who did it."""
    data = dict(data)
    if isinstance(data.get("message"), dict):
        data["message"] = {**data["message"], "text": "", "attachment": None, "delivery_error": None}
    if isinstance(data.get("ticket"), dict):
        data["ticket"] = {**data["ticket"], "subject": "", "customer": customer_data(customer)}
    if "error" in data:
        data["error"] = None
    if "telegram_message_id" in data:
        data["telegram_message_id"] = None
    return data
