"""Unread counts: what an agent has not read, derived from their read cursor."""

import itertools

import pytest

from tickets import queries, services
from tickets.models import Ticket
from tickets.services import TelegramProfile

pytestmark = pytest.mark.django_db

_telegram_message_ids = itertools.count(1)


def customer_writes(user_id, text="Hello"):
    message, _ = services.record_inbound_message(
        TelegramProfile(user_id=user_id, first_name=f"Customer {user_id}"),
        text=text,
        telegram_message_id=next(_telegram_message_ids),
    )
    return message


def counts_by_ticket(user):
    return dict(queries.with_unread_count(Ticket.objects.all(), user).values_list("pk", "unread_count"))


def test_without_a_read_cursor_every_message_but_the_agents_own_commands_and_automatic_replies_is_unread(
    agent, other_agent
):
    first = customer_writes(1, "My order is late")
    ticket = first.ticket
    customer_writes(1, "Any news?")
    services.record_inbound_message(TelegramProfile(user_id=1), text="/status", telegram_message_id=99, command=True)
    services.queue_reply(ticket, "Looking into it", author=agent)
    services.queue_reply(ticket, "I can help too", author=other_agent)
    services.queue_reply(ticket, "Automatic reply", author=None)

    assert queries.unread_count(ticket, agent) == 3
    assert queries.unread_count(ticket, other_agent) == 3
    assert counts_by_ticket(agent) == {ticket.pk: 3}


def test_only_messages_after_the_read_cursor_are_unread(agent, other_agent):
    ticket = customer_writes(1, "one").ticket
    second = customer_writes(1, "two")
    customer_writes(1, "three")
    customer_writes(1, "four")
    services.advance_read_cursor(ticket, agent, second.pk)

    assert queries.unread_count(ticket, agent) == 2
    assert queries.unread_count(ticket, other_agent) == 4
    assert counts_by_ticket(agent) == {ticket.pk: 2}
    assert counts_by_ticket(other_agent) == {ticket.pk: 4}


def test_an_agents_reply_after_their_cursor_is_not_unread_for_them(agent):
    first = customer_writes(1, "Hi")
    ticket = first.ticket
    services.advance_read_cursor(ticket, agent, first.pk)
    services.queue_reply(ticket, "Hello, how can I help?", author=agent)

    assert queries.unread_count(ticket, agent) == 0


def test_read_to_the_last_message_leaves_nothing_unread(agent):
    ticket = customer_writes(1, "Hi").ticket
    last = customer_writes(1, "Still there?")
    services.advance_read_cursor(ticket, agent, last.pk)

    assert queries.unread_count(ticket, agent) == 0
    assert counts_by_ticket(agent) == {ticket.pk: 0}


def test_counts_are_per_ticket_and_cursors_of_other_tickets_do_not_leak(agent):
    read_ticket = customer_writes(1, "a").ticket
    last_read = customer_writes(1, "b")
    services.advance_read_cursor(read_ticket, agent, last_read.pk)
    unread_ticket = customer_writes(2, "c").ticket
    customer_writes(2, "d")
    customer_writes(2, "e")
    empty_ticket, _ = services.get_or_open_ticket(services.get_or_create_customer(TelegramProfile(user_id=3))[0])

    assert counts_by_ticket(agent) == {read_ticket.pk: 0, unread_ticket.pk: 3, empty_ticket.pk: 0}


def test_tickets_with_unread_messages_and_tickets_all_read(agent, other_agent):
    read_ticket = customer_writes(1, "a").ticket
    services.advance_read_cursor(read_ticket, agent, customer_writes(1, "b").pk)
    unread_ticket = customer_writes(2, "c").ticket
    replied_ticket = customer_writes(3, "d").ticket
    services.advance_read_cursor(replied_ticket, agent, replied_ticket.messages.get().pk)
    services.queue_reply(replied_ticket, "Done", author=agent)

    tickets = Ticket.objects.all()
    assert set(queries.with_unread_messages(tickets, agent)) == {unread_ticket}
    assert set(queries.all_read(tickets, agent)) == {read_ticket, replied_ticket}
    assert set(queries.with_unread_messages(tickets, other_agent)) == {read_ticket, unread_ticket, replied_ticket}
    assert set(queries.all_read(tickets, other_agent)) == set()


def test_unread_counts_of_many_tickets_take_one_query(agent, django_assert_num_queries):
    for user_id in range(1, 11):
        customer_writes(user_id, "x")
        customer_writes(user_id, "y")

    with django_assert_num_queries(1):
        counts = counts_by_ticket(agent)

    assert sorted(counts.values()) == [2] * 10
