"""Channel-layer group names: one per ticket room, one for every agent's inbox, one per agent, and one for
each agent's open sockets (realtime.sessions)."""

INBOX = "inbox"


def ticket_group(ticket_id):
    return f"ticket.{ticket_id}"


def agent_group(user_id):
    return f"agent.{user_id}"


def agent_sockets(user_id):
    return f"sockets.{user_id}"
