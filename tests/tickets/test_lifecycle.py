"""The ticket lifecycle as customers write: reopening a recently resolved ticket, commands that move
nothing, and edits that arrive before the message they edit."""

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.conftest import resolve
from tickets import services
from tickets.models import EarlyEdit, Message, Ticket, TicketEvent
from tickets.services import TelegramProfile

from .test_services import run_at_once

ALICE = TelegramProfile(user_id=222, first_name="Alice")


def inbound(text="hello", telegram_message_id=1, command=False):
    return services.record_inbound_message(ALICE, text=text, telegram_message_id=telegram_message_id, command=command)[
        0
    ]


def status_changes(ticket):
    return list(
        TicketEvent.objects.filter(ticket=ticket, kind="ticket", data__change__has_key="status")
        .order_by("seq")
        .values_list("data__change__status", "actor_kind")
    )


@pytest.mark.django_db(transaction=True)
def test_twenty_messages_at_once_to_a_resolved_ticket_reopen_it_once(agent):
    ticket = inbound().ticket
    services.change_ticket_status(ticket, Ticket.Status.RESOLVED, acting_user=agent)

    run_at_once(20, lambda i: inbound(f"one more thing {i}", telegram_message_id=10 + i))

    assert Ticket.objects.count() == 1
    ticket.refresh_from_db()
    assert (ticket.status, ticket.resolved_at) == (Ticket.Status.OPEN, None)
    assert ticket.messages.count() == 21
    assert status_changes(ticket) == [(["open", "resolved"], "agent"), (["resolved", "open"], "customer")]


def test_the_reopen_window_counts_from_the_resolution(db, settings):
    settings.TICKET_REOPEN_DAYS = 3
    ticket = inbound().ticket
    resolve(ticket, days_ago=2.9)
    assert inbound("again", telegram_message_id=2).ticket == ticket

    resolve(ticket, days_ago=3.1)
    assert inbound("and again", telegram_message_id=3).ticket != ticket


def test_only_the_customers_latest_ticket_reopens(db):
    older = inbound().ticket
    resolve(older, days_ago=30)
    newer = inbound("new question", telegram_message_id=2).ticket
    resolve(newer, days_ago=1)
    Ticket.objects.filter(pk=older.pk).update(resolved_at=timezone.now())  # both within the window

    assert inbound("about that", telegram_message_id=3).ticket == newer
    services.change_ticket_status(newer, Ticket.Status.CLOSED, acting_user=None)
    assert inbound("hello?", telegram_message_id=4).ticket not in (older, newer)


def test_new_command_after_a_resolution_opens_a_new_ticket_rather_than_reopening(db):
    ticket = inbound().ticket
    resolve(ticket, days_ago=1)

    fresh = services.start_new_ticket(ticket.customer)

    assert fresh != ticket and fresh.status == Ticket.Status.OPEN
    ticket.refresh_from_db()
    assert ticket.status == Ticket.Status.RESOLVED


def test_a_command_after_a_resolution_goes_to_that_ticket_and_leaves_it_resolved(db):
    ticket = inbound().ticket
    resolve(ticket, days_ago=1)

    command = inbound("/status", telegram_message_id=2, command=True)

    assert command.ticket == ticket and command.is_command
    ticket.refresh_from_db()
    assert ticket.status == Ticket.Status.RESOLVED


def test_a_command_without_any_recent_ticket_opens_one(db):
    ticket = inbound().ticket
    services.change_ticket_status(ticket, Ticket.Status.CLOSED, acting_user=None)

    command = inbound("/start", telegram_message_id=2, command=True)

    assert command.ticket != ticket and command.ticket.status == Ticket.Status.OPEN


def test_every_status_change_records_who_made_it(db, agent):
    ticket = inbound().ticket
    services.change_ticket_status(ticket, Ticket.Status.PENDING, acting_user=agent)
    inbound("here you go", telegram_message_id=2)  # the customer: pending -> open
    services.change_ticket_status(ticket, Ticket.Status.RESOLVED, acting_user=agent)
    inbound("one more thing", telegram_message_id=3)  # the customer reopens it
    services.start_new_ticket(ticket.customer)  # the customer's /new resolves it

    assert status_changes(ticket) == [
        (["open", "pending"], "agent"),
        (["pending", "open"], "customer"),
        (["open", "resolved"], "agent"),
        (["resolved", "open"], "customer"),
        (["open", "resolved"], "customer"),
    ]


# --- Edits ----------------------------------------------------------------------------------------


def test_an_edit_before_its_original_is_kept_then_applied_and_an_older_edit_never_wins(db):
    now = timezone.now()
    assert services.record_message_edit(ALICE, 5, text="second edit", edited_at=now) is None
    assert services.record_message_edit(ALICE, 5, text="first edit", edited_at=now - timedelta(seconds=5)) is None

    message = inbound("original", telegram_message_id=5)

    assert (message.text, message.edited_at) == ("second edit", now)
    assert not EarlyEdit.objects.exists()
    late = services.record_message_edit(ALICE, 5, text="first edit", edited_at=now - timedelta(seconds=5))
    assert late.text == "second edit"
    assert Message.objects.get(pk=message.pk).text == "second edit"


def test_an_edit_before_its_original_in_an_open_ticket_is_applied_when_the_original_comes(db):
    ticket = inbound("first", telegram_message_id=1).ticket
    assert services.record_message_edit(ALICE, 2, text="edited", edited_at=timezone.now()) is None

    message = inbound("original", telegram_message_id=2)

    assert (message.ticket, message.text) == (ticket, "edited")
    assert not EarlyEdit.objects.exists()


def test_edits_whose_original_never_came_are_dropped_after_two_days(db):
    services.record_message_edit(ALICE, 6, text="lost", edited_at=timezone.now())
    EarlyEdit.objects.update(received_at=timezone.now() - timedelta(days=3))

    services.record_message_edit(ALICE, 7, text="kept", edited_at=timezone.now())

    assert list(EarlyEdit.objects.values_list("telegram_message_id", flat=True)) == [7]
