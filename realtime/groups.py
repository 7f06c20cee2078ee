"""Channel-layer group names: one per ticket room, one for every agent's inbox."""

INBOX = "inbox"


def ticket_group(ticket_id):
    return f"ticket.{ticket_id}"
