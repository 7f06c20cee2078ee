"""Unread counts: what an agent has not read, derived from their read cursor."""

import importlib
import itertools
import random

import pytest
from django.apps import apps
from django.contrib.auth.models import Permission
from django.utils import timezone

from tickets import queries, services
from tickets.models import Message, ReadCursor, Ticket
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


# --- The definition, checked against every way the desk and the admin ask -----------------------


def expected_unread(user):
    """{ticket id: unread count} for ``user``, straight from the definition in tickets.queries' docstring."""
    cursors = dict(ReadCursor.objects.filter(user=user).values_list("ticket_id", "last_read_message_id"))
    counts = dict.fromkeys(Ticket.objects.values_list("pk", flat=True), 0)
    for message in Message.objects.all():
        automatic_reply = message.direction == Message.Direction.OUT and message.author_id is None
        if (
            message.pk > cursors.get(message.ticket_id, 0)
            and not message.is_command
            and not automatic_reply
            and message.author_id != user.pk
        ):
            counts[message.ticket_id] += 1
    return counts


def assert_unread_as_defined(*users):
    tickets = Ticket.objects.all()
    for user in users:
        expected = expected_unread(user)
        unread = {pk for pk, count in expected.items() if count}
        assert counts_by_ticket(user) == expected
        assert {ticket.pk: queries.unread_count(ticket, user) for ticket in tickets} == expected
        inbox = queries.inbox_page(user, view="all", status="any")
        assert {ticket.pk: ticket.unread_count for ticket in inbox} == expected
        assert set(queries.with_unread_messages(tickets, user).values_list("pk", flat=True)) == unread
        assert set(queries.all_read(tickets, user).values_list("pk", flat=True)) == set(expected) - unread


def play_conversations(seed, agent, other_agent, steps=40):
    """A random desk: customers writing and sending commands, automatic replies, two agents replying and
    reading (up to any message of the ticket, not only the latest)."""
    rng = random.Random(seed)
    tickets = [customer_writes(user_id, "Hello").ticket for user_id in (1, 2, 3)]
    # Beside them, nothing to read: a ticket with a command only, and one without messages.
    services.record_inbound_message(
        TelegramProfile(user_id=4), text="/start", telegram_message_id=next(_telegram_message_ids), command=True
    )
    services.get_or_open_ticket(services.get_or_create_customer(TelegramProfile(user_id=5))[0])
    for _ in range(steps):
        user_id = rng.choice((1, 2, 3))
        ticket = tickets[user_id - 1]
        step = rng.choice(["customer", "command", "automatic", "agent", "other_agent", "read", "read"])
        if step == "customer":
            customer_writes(user_id, "More")
        elif step == "command":
            services.record_inbound_message(
                TelegramProfile(user_id=user_id),
                text="/status",
                telegram_message_id=next(_telegram_message_ids),
                command=True,
            )
        elif step == "automatic":
            services.queue_reply(ticket, "Automatic reply", author=None)
        elif step in ("agent", "other_agent"):
            services.queue_reply(ticket, "A reply", author=agent if step == "agent" else other_agent)
        else:
            message_id = rng.choice(list(ticket.messages.values_list("pk", flat=True)))
            services.advance_read_cursor(ticket, rng.choice((agent, other_agent)), message_id)
    return tickets


@pytest.mark.parametrize("seed", range(6))
def test_unread_counts_and_filters_follow_the_definition_in_any_conversation(agent, other_agent, seed):
    play_conversations(seed, agent, other_agent)

    assert_unread_as_defined(agent, other_agent)


def test_a_colleagues_reply_behind_the_agents_own_latest_reply_is_still_unread(agent, other_agent):
    first = customer_writes(1, "Hi")
    ticket = first.ticket
    services.advance_read_cursor(ticket, agent, first.pk)
    services.queue_reply(ticket, "A colleague answers", author=other_agent)
    services.queue_reply(ticket, "I answer too", author=agent)
    services.record_inbound_message(
        TelegramProfile(user_id=1), text="/status", telegram_message_id=next(_telegram_message_ids), command=True
    )
    services.queue_reply(ticket, "Automatic reply", author=None)

    assert queries.unread_count(ticket, agent) == 1
    assert list(queries.with_unread_messages(Ticket.objects.all(), agent)) == [ticket]
    assert_unread_as_defined(agent, other_agent)


def test_only_the_agents_own_replies_commands_and_automatic_replies_leave_nothing_unread(agent, other_agent):
    first = customer_writes(1, "Hi")
    ticket = first.ticket
    services.advance_read_cursor(ticket, agent, first.pk)
    services.queue_reply(ticket, "Mine", author=agent)
    services.record_inbound_message(
        TelegramProfile(user_id=1), text="/start", telegram_message_id=next(_telegram_message_ids), command=True
    )
    services.queue_reply(ticket, "Automatic reply", author=None)

    assert queries.unread_count(ticket, agent) == 0
    assert list(queries.all_read(Ticket.objects.all(), agent)) == [ticket]
    assert_unread_as_defined(agent, other_agent)


def test_edits_and_forgetting_the_customer_change_nothing_unread(agent, other_agent, django_user_model):
    seen = customer_writes(1, "Hi")
    ticket = seen.ticket
    services.advance_read_cursor(ticket, agent, seen.pk)
    edited = customer_writes(1, "Typo")
    services.queue_reply(ticket, "A colleague answers", author=other_agent)
    services.record_message_edit(
        TelegramProfile(user_id=1), edited.telegram_message_id, text="Fixed", edited_at=timezone.now()
    )
    services.record_message_edit(
        TelegramProfile(user_id=1), seen.telegram_message_id, text="Hi again", edited_at=timezone.now()
    )
    assert queries.unread_count(ticket, agent) == 2
    assert_unread_as_defined(agent, other_agent)

    dpo = django_user_model.objects.create_user("dpo", is_staff=True)
    dpo.user_permissions.add(Permission.objects.get(codename="forget_customer"))
    services.forget_customer(ticket.customer, acting_user=django_user_model.objects.get(pk=dpo.pk))

    assert queries.unread_count(ticket, agent) == 2
    assert_unread_as_defined(agent, other_agent, dpo)


def test_the_migration_records_the_latest_notable_message_of_existing_tickets(agent, other_agent):
    play_conversations(7, agent, other_agent)
    kept = list(Ticket.objects.order_by("pk").values_list("pk", "last_notable_message_id", "last_notable_author"))
    Ticket.objects.update(last_notable_message_id=None, last_notable_author=None)

    migration = importlib.import_module("tickets.migrations.0004_ticket_last_notable_message")
    migration.record_last_notable_messages(apps, None)

    assert (
        list(Ticket.objects.order_by("pk").values_list("pk", "last_notable_message_id", "last_notable_author")) == kept
    )
    assert_unread_as_defined(agent, other_agent)
