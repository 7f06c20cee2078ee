"""A conversation as a customer has it, end to end: the sandbox delivers their messages to a real daphne
over HTTP, a real worker sends the bot's answers back; edits, commands and reopening a resolved ticket."""

import pytest

from tests.conftest import WEBHOOK_SECRET, resolve, wait_until
from tickets import queries, services
from tickets.models import Message, Ticket

from . import factories


@pytest.fixture
def bot(sandbox, start_server, start_worker):
    """The sandbox bot of a running daphne (its webhook) and task worker."""
    server = start_server()
    bot = sandbox.client(server.token)
    bot.set_webhook(f"{server.url}/telegram/webhook/", WEBHOOK_SECRET)
    bot.server = server
    start_worker(server.token)
    return bot


def customer_says(bot, user_id, text):
    """The customer writes; returns once the webhook has taken the update."""
    bot.send_message(user_id, text)
    wait_until(lambda: bot.webhook_info()["pending_update_count"] == 0, message="the webhook to take the update")
    return Message.objects.filter(direction="in").latest("pk")


def bot_says(bot, user_id):
    """What the bot has said in the chat so far, once every reply is sent."""
    wait_until(
        lambda: not Message.objects.filter(direction="out", delivery_status="queued").exists(),
        message="every reply to be sent",
    )
    return [message["text"] for message in bot.chat(user_id) if message["from"]["is_bot"]]


def test_an_edit_that_arrives_before_its_original_is_kept_and_applied_to_it(bot):
    sent = factories.update(9600, "helo, my order 42 is late")
    edit = {
        "update_id": factories.next_id(),
        "edited_message": {**sent["message"], "text": "hello, my order 42 is late", "edit_date": 2_000_000_000},
    }

    # The original was answered 5xx and is delivered again after its edit.
    assert bot.server.post_update(edit).status_code == 200
    assert not Message.objects.exists()
    assert bot.server.post_update(sent).status_code == 200

    message = Message.objects.get(direction="in")
    assert message.text == "hello, my order 42 is late"
    assert message.edited_at.timestamp() == 2_000_000_000


def test_status_on_a_pending_ticket_is_answered_and_changes_nothing(bot, agent):
    first = customer_says(bot, 9601, "Where is my parcel?")
    ticket = services.change_ticket_status(first.ticket, Ticket.Status.PENDING, acting_user=agent)
    services.advance_read_cursor(ticket, agent, first.pk)

    command = customer_says(bot, 9601, "/status")

    assert bot_says(bot, 9601)[-1] == f"Your ticket #{ticket.pk} is pending."
    ticket.refresh_from_db()
    assert ticket.status == Ticket.Status.PENDING
    assert command.ticket == ticket and command.is_command
    assert queries.unread_count(ticket, agent) == 0


def test_start_is_answered_and_counts_as_nothing_to_read(bot, agent):
    first = customer_says(bot, 9602, "Hi")
    services.advance_read_cursor(first.ticket, agent, first.pk)

    customer_says(bot, 9602, "/start")

    assert bot_says(bot, 9602)[-1].startswith("Hello, Customer 9602!")
    assert queries.unread_count(first.ticket, agent) == 0


@pytest.mark.parametrize(
    ("how", "reopens"),
    [("resolved 2 days ago", True), ("resolved 8 days ago", False), ("closed", False)],
)
def test_a_customer_writing_after_resolution_reopens_within_the_window_else_gets_a_new_ticket(bot, agent, how, reopens):
    ticket = customer_says(bot, 9603, "My order is late").ticket
    if how == "closed":
        services.change_ticket_status(ticket, Ticket.Status.CLOSED, acting_user=agent)
    else:
        resolve(ticket, days_ago=int(how.split()[1]))
    before = bot_says(bot, 9603)

    message = customer_says(bot, 9603, "It came, but it is broken")

    new_replies = bot_says(bot, 9603)[len(before) :]
    if reopens:
        assert message.ticket == ticket
        ticket.refresh_from_db()
        assert ticket.status == Ticket.Status.OPEN
        reopened = ticket.events.filter(kind="ticket").latest("seq")
        assert (reopened.data["change"], reopened.actor_kind) == ({"status": ["resolved", "open"]}, "customer")
        assert new_replies == []
    else:
        assert message.ticket != ticket
        assert new_replies == [
            f"Thanks for your message! We opened ticket #{message.ticket.pk}; an agent will answer here soon."
        ]
