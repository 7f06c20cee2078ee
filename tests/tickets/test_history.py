"""The ticket's event history (G12): one stored event per change, numbered per ticket without gaps."""

import threading
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from tests.conftest import wait_for_lock_wait
from tickets import services
from tickets.models import Customer, Message, Ticket, TicketEvent
from tickets.queries import events_after
from tickets.services import TelegramProfile
from tickets.services.base import lock_ticket
from tickets.services.history import SYSTEM, record_events

from .test_services import run_at_once

ALICE = TelegramProfile(user_id=111, first_name="Alice")


def inbound(text="hello", telegram_message_id=1, profile=ALICE):
    return services.record_inbound_message(profile, text=text, telegram_message_id=telegram_message_id)[0]


def history(ticket):
    return list(TicketEvent.objects.filter(ticket=ticket).order_by("seq").values_list("seq", "kind", "actor_kind"))


def test_every_change_stores_one_event_with_the_next_seq_and_who_made_it(db, agent, other_agent):
    message = inbound()
    ticket = message.ticket
    reply, _ = services.queue_reply(ticket, "On it", author=agent)
    services.assign_ticket(ticket, other_agent, acting_user=agent)
    services.change_ticket_status(ticket, "pending", acting_user=agent)
    inbound("thanks", telegram_message_id=2)  # the customer puts it back to open
    services.record_message_edit(ALICE, 2, text="thanks!", edited_at=timezone.now())
    services.advance_read_cursor(ticket, agent, message.pk)
    services.mark_delivered(reply, 77, lease_until=reply.delivery_due_at)

    assert history(ticket) == [
        (1, "ticket", "customer"),
        (2, "message", "customer"),
        (3, "message", "agent"),
        (4, "ticket", "agent"),
        (5, "ticket", "agent"),
        (6, "message", "customer"),
        (7, "ticket", "customer"),
        (8, "edit", "customer"),
        (9, "read", "agent"),
        (10, "delivery", "system"),
    ]
    ticket.refresh_from_db()
    assert ticket.last_seq == 10
    assign = TicketEvent.objects.get(ticket=ticket, seq=4)
    assert assign.actor == agent
    assert assign.data["change"]["assignee"] == [None, {"id": other_agent.pk, "name": "agent2"}]
    assert assign.data["ticket"]["assignee"]["id"] == other_agent.pk


def test_an_unchanged_status_or_assignee_records_nothing(db, agent):
    ticket = inbound().ticket

    services.change_ticket_status(ticket, "open", acting_user=agent)
    services.assign_ticket(ticket, None, acting_user=agent)
    assert services.advance_read_cursor(ticket, agent, ticket.messages.get().pk) is True
    assert services.advance_read_cursor(ticket, agent, ticket.messages.get().pk) is False

    assert [kind for _, kind, _ in history(ticket)] == ["ticket", "message", "read"]


def test_event_data_comes_from_the_committed_rows_not_the_callers_stale_object(db, agent, other_agent):
    ticket = inbound().ticket
    stale = type(ticket).objects.get(pk=ticket.pk)
    services.assign_ticket(ticket, other_agent, acting_user=other_agent)

    services.change_ticket_status(stale, "pending", acting_user=agent)  # ``stale`` still has no assignee

    event = TicketEvent.objects.filter(ticket=ticket).latest("seq")
    assert event.data["ticket"]["status"] == "pending"
    assert event.data["ticket"]["assignee"]["id"] == other_agent.pk


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_change_leaves_no_event_and_no_gap(agent):
    ticket = inbound().ticket
    with pytest.raises(RuntimeError), transaction.atomic():
        services.queue_reply(ticket, "never sent", author=agent)
        raise RuntimeError("rolled back")
    services.queue_reply(ticket, "sent", author=agent)

    assert [seq for seq, _, _ in history(ticket)] == [1, 2, 3]


@pytest.mark.parametrize(
    ("drift", "refusal"),
    [(-1, IntegrityError), (5, RuntimeError)],  # behind: its seqs are taken; ahead: only the UPDATE can tell
)
def test_a_ticket_passed_as_locked_with_a_stale_seq_is_refused_and_nothing_is_stored(db, drift, refusal):
    ticket = inbound().ticket
    stale = Ticket.objects.get(pk=ticket.pk)
    stale.last_seq += drift

    with pytest.raises(refusal), transaction.atomic():
        record_events(stale, SYSTEM, ("ticket", {"note": "never"}), locked=True)

    assert [seq for seq, _, _ in history(ticket)] == [1, 2]
    ticket.refresh_from_db()
    assert ticket.last_seq == 2


@pytest.mark.parametrize("drift", [-1, 5])
def test_a_bots_reply_to_a_customer_passed_as_locked_with_a_stale_outbox_seq_is_refused_and_nothing_is_stored(
    db, drift
):
    ticket = inbound().ticket
    services.queue_reply(ticket, "first", author=None)

    with pytest.raises(RuntimeError), transaction.atomic():
        current = lock_ticket(ticket.pk)  # with its customer as committed now
        current.customer.last_reply_seq += drift
        services.queue_reply(current, "never sent", author=None, locked=True)

    assert list(Message.objects.filter(direction=Message.Direction.OUT).values_list("text", "outbox_seq")) == [
        ("first", 1)
    ]
    assert Customer.objects.get(pk=ticket.customer_id).last_reply_seq == 1


@pytest.mark.django_db(transaction=True)
def test_the_seq_of_one_ticket_never_skips_or_repeats_under_twenty_concurrent_writers(agent, other_agent):
    first = inbound()
    ticket = first.ticket

    def write(i):
        # Every kind of writer at once: customer messages, agents' replies, assignments and reads.
        if i % 4 == 0:
            inbound(f"message {i}", telegram_message_id=100 + i)
        elif i % 4 == 1:
            services.queue_reply(ticket, f"reply {i}", author=agent)
        elif i % 4 == 2:
            services.assign_ticket(ticket, agent if i % 8 == 2 else other_agent, acting_user=agent)
        else:
            services.advance_read_cursor(ticket, agent if i % 8 == 3 else other_agent, first.pk)

    run_at_once(20, write)

    seqs = [seq for seq, _, _ in history(ticket)]
    assert seqs == list(range(1, len(seqs) + 1))
    ticket.refresh_from_db()
    assert ticket.last_seq == len(seqs)
    # 2 events for the first message, then 5 messages, 5 replies, the assignments that changed something, 2 reads.
    assert len(seqs) >= 2 + 5 + 5 + 1 + 2


@pytest.mark.needs_postgres
@pytest.mark.django_db(transaction=True)
def test_seqs_follow_commit_order_a_writer_waits_for_the_one_holding_the_ticket(agent):
    """A transaction that took seq N holds the ticket's row until it commits; the next writer gets N+1 after."""
    ticket = inbound().ticket
    holding, release = threading.Event(), threading.Event()
    seqs = {}

    def slow_writer():
        with transaction.atomic():
            services.queue_reply(ticket, "slow", author=agent)
            holding.set()
            release.wait(20)
        connection.close()

    def fast_writer():
        holding.wait(20)
        seqs["fast"] = services.queue_reply(ticket, "fast", author=agent)[0]
        connection.close()

    threads = [threading.Thread(target=slow_writer), threading.Thread(target=fast_writer)]
    for thread in threads:
        thread.start()
    wait_for_lock_wait("the second writer to wait for the ticket's row lock")
    release.set()
    for thread in threads:
        thread.join()

    events = TicketEvent.objects.filter(ticket=ticket, kind="message", actor_kind="agent").order_by("seq")
    assert [event.data["message"]["text"] for event in events] == ["slow", "fast"]


def test_events_after_replays_in_order_and_says_when_history_was_pruned(db, agent):
    ticket = inbound().ticket
    for i in range(3):
        services.queue_reply(ticket, f"reply {i}", author=agent)

    assert [event.seq for event in events_after(ticket.pk, 0)] == [1, 2, 3, 4, 5]
    assert [event.seq for event in events_after(ticket.pk, 3)] == [4, 5]
    assert events_after(ticket.pk, 5) == []

    TicketEvent.objects.filter(ticket=ticket, seq__lte=2).update(created_at=timezone.now() - timedelta(days=31))
    assert services.prune_history(timedelta(days=30)) == 2

    assert events_after(ticket.pk, 0) is None
    assert events_after(ticket.pk, 1) is None
    assert [event.seq for event in events_after(ticket.pk, 2)] == [3, 4, 5]
    TicketEvent.objects.filter(ticket=ticket).delete()
    assert events_after(ticket.pk, 4) is None
    assert events_after(ticket.pk, 5) == []


@pytest.mark.django_db(transaction=True)
def test_events_after_never_takes_a_ticket_being_written_to_for_pruned_history(agent):
    """A writer commits new events while a reader asks for the events after the latest seq it saw."""
    ticket = inbound().ticket
    writing = threading.Event()
    writing.set()

    def write():
        try:
            while writing.is_set():
                services.assign_ticket(ticket, None if ticket.assignee_id else agent, acting_user=agent)
                ticket.refresh_from_db()
        finally:
            connection.close()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        answers = []
        for _ in range(300):
            seen = ticket.last_seq if not answers else answers[-1]
            replay = events_after(ticket.pk, seen)
            answers.append(replay[-1].seq if replay else seen)
            assert replay is not None, f"events after {seen} reported as pruned"
    finally:
        writing.clear()
        writer.join()
