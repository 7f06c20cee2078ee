"""The ticket lifecycle (tickets.services): concurrency, constraints, transitions, announcements."""

import random
import threading
import uuid

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from bots.models import TelegramUpdate
from tests.conftest import resolve, wait_for_lock_wait
from tickets import services
from tickets.hooks import announced
from tickets.models import Customer, Message, ReadCursor, Ticket, TicketEvent
from tickets.services import TelegramProfile, TicketRuleError

ALICE = TelegramProfile(user_id=111, first_name="Alice", username="alice")


class ThreadsAtOnce:
    """Threads released together by a barrier; ``join()`` waits for them and re-raises any failure."""

    def __init__(self, count, work):
        barrier = threading.Barrier(count)
        self.errors = []

        def worker(i):
            try:
                barrier.wait()
                work(i)
            except Exception as error:
                self.errors.append(error)
            finally:
                connection.close()

        self.threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
        for thread in self.threads:
            thread.start()

    def join(self):
        for thread in self.threads:
            thread.join()
        assert not self.errors, self.errors


def run_at_once(count, work):
    """Run ``work(i)`` in ``count`` threads released together by a barrier; re-raise any failure."""
    ThreadsAtOnce(count, work).join()


def inbound(profile=ALICE, text="hello", telegram_message_id=1):
    return services.record_inbound_message(profile, text=text, telegram_message_id=telegram_message_id)


@pytest.fixture
def ticket(db):
    message, _ = inbound()
    return message.ticket


@pytest.fixture
def announcements():
    heard = []

    def receiver(sender, events, **kwargs):
        heard.extend(events)

    announced.connect(receiver)
    yield heard
    announced.disconnect(receiver)


# --- Concurrency (G4, G6) ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_first_messages_from_one_customer_give_one_customer_and_one_ticket():
    run_at_once(20, lambda i: inbound(text=f"message {i}", telegram_message_id=i + 1))

    assert Customer.objects.count() == 1
    assert Ticket.objects.count() == 1
    assert Ticket.objects.get().status == Ticket.Status.OPEN
    assert Message.objects.filter(direction=Message.Direction.IN).count() == 20


@pytest.mark.django_db(transaction=True)
def test_bot_and_agent_replies_to_one_customer_at_once_are_numbered_once_each_in_commit_order(agent):
    """Twenty writers at once: the bot answering a command it has just stored (numbered from the customer's
    row that the message's upsert locked) and agents replying (numbered by an UPDATE that locks it): the
    customer's replies take 1..20 with no gap and no repeat, and in the order their transactions committed."""
    ticket = inbound()[0].ticket

    def reply(i):
        with transaction.atomic():
            if i % 2:
                services.queue_reply(ticket, f"agent {i}", author=agent)
            else:
                message, _ = services.record_inbound_message(
                    ALICE, text="/status", telegram_message_id=100 + i, command=True
                )
                services.queue_reply(message.ticket, f"bot {i}", author=None, locked=True)

    run_at_once(20, reply)

    replies = Message.objects.filter(direction=Message.Direction.OUT)
    assert sorted(replies.values_list("outbox_seq", flat=True)) == list(range(1, 21))
    # Numbered in commit order: a later number was inserted later (ids are taken as rows are inserted).
    assert list(replies.order_by("outbox_seq").values_list("pk", flat=True)) == sorted(
        replies.values_list("pk", flat=True)
    )
    assert Customer.objects.get().last_reply_seq == 20


@pytest.mark.django_db(transaction=True)
def test_concurrent_messages_and_replies_leave_the_tickets_latest_notable_message_and_its_author(agent, other_agent):
    """Customers' messages and commands, agents' and automatic replies stored at once in one ticket: after
    each burst the ticket names the newest notable one and its author (each writer sets them under the
    ticket's row lock, after inserting its message, so the newest insert writes last)."""
    ticket = inbound()[0].ticket
    telegram_ids = iter(range(1000, 2000))

    def store(i):
        kind = i % 5
        if kind in (0, 1):
            services.record_inbound_message(ALICE, text="x", telegram_message_id=next(telegram_ids), command=kind == 1)
        else:
            services.queue_reply(ticket, "A reply", author=(agent, other_agent, None)[kind - 2])

    for _ in range(4):
        run_at_once(10, store)
        notable = Message.objects.filter(ticket=ticket, is_command=False).exclude(direction="out", author=None)
        latest = notable.order_by("-pk").first()
        ticket.refresh_from_db()
        assert (ticket.last_notable_message_id, ticket.last_notable_author_id) == (latest.pk, latest.author_id)


@pytest.mark.django_db(transaction=True)
@pytest.mark.needs_postgres
def test_read_cursor_advances_overlapping_on_the_cursor_row_leave_the_maximum_and_never_move_back(agent):
    """Fifty advances in shuffled order, eight at a time: each batch reads the cursor while the test holds its
    row, then all write at once when it lets go. A read-then-write (SELECT, compare in Python, UPDATE by pk)
    lets a lower id overwrite a higher one here; the conditional UPDATE re-checks the row it waited for."""
    first, _ = inbound()
    ticket = first.ticket
    ids = [inbound(text=f"m{i}", telegram_message_id=i + 2)[0].pk for i in range(50)]
    services.advance_read_cursor(ticket, agent, first.pk)  # the cursor exists: every advance below updates it
    random.shuffle(ids)

    for start in range(0, len(ids), 8):
        batch = ids[start : start + 8]
        with transaction.atomic():
            held = ReadCursor.objects.select_for_update().get().last_read_message_id
            threads = ThreadsAtOnce(
                len(batch), lambda i, batch=batch: services.advance_read_cursor(ticket, agent, batch[i])
            )
            # Those that would move it wait for the row (the rest may see at once that they would not).
            ahead = sum(message_id > held for message_id in batch)
            wait_for_lock_wait(f"{ahead} advances waiting for the cursor's row", count=ahead)
        threads.join()

    assert ReadCursor.objects.get().last_read_message_id == max(ids)
    reads = TicketEvent.objects.filter(ticket=ticket, kind="read").order_by("seq")
    read_ids = [event.data["message_id"] for event in reads]
    assert read_ids == sorted(set(read_ids)), "the cursor moved backwards (or stood still) in the history"


def test_read_cursor_never_moves_backwards(ticket, agent):
    first = ticket.messages.get()
    second, _ = inbound(text="again", telegram_message_id=2)

    assert services.advance_read_cursor(ticket, agent, second.pk) is True
    assert services.advance_read_cursor(ticket, agent, first.pk) is False
    assert services.advance_read_cursor(ticket, agent, second.pk) is False
    assert ReadCursor.objects.get().last_read_message_id == second.pk


def test_read_cursor_refuses_a_message_of_another_ticket(ticket, agent):
    other, _ = inbound(TelegramProfile(user_id=222), telegram_message_id=1)

    with pytest.raises(TicketRuleError, match="not in ticket"):
        services.advance_read_cursor(ticket, agent, other.pk)
    assert not ReadCursor.objects.exists()


# --- Constraints: each one violated ---------------------------------------------------------------


def test_telegram_user_id_is_unique(db):
    Customer.objects.create(telegram_user_id=5)
    with pytest.raises(IntegrityError):
        Customer.objects.create(telegram_user_id=5)


def test_a_customer_has_at_most_one_open_or_pending_ticket(ticket):
    for status in (Ticket.Status.OPEN, Ticket.Status.PENDING):
        with pytest.raises(IntegrityError), transaction.atomic():
            Ticket.objects.create(customer=ticket.customer, status=status)
    # Resolved and closed tickets do not count.
    Ticket.objects.create(customer=ticket.customer, status=Ticket.Status.RESOLVED)
    Ticket.objects.create(customer=ticket.customer, status=Ticket.Status.CLOSED)


def test_ticket_status_must_be_known(ticket):
    with pytest.raises(IntegrityError):
        Ticket.objects.filter(pk=ticket.pk).update(status="archived")


def test_client_msg_id_is_unique_per_ticket(ticket):
    client_msg_id = uuid.uuid4()
    Message.objects.create(ticket=ticket, direction="out", delivery_status="queued", client_msg_id=client_msg_id)
    with pytest.raises(IntegrityError):
        Message.objects.create(ticket=ticket, direction="out", delivery_status="queued", client_msg_id=client_msg_id)


def test_only_outbound_messages_have_a_delivery_status(ticket):
    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.create(ticket=ticket, direction="in", delivery_status="sent")
    with pytest.raises(IntegrityError):
        Message.objects.create(ticket=ticket, direction="out", delivery_status="")


def test_one_read_cursor_per_agent_and_ticket(ticket, agent):
    message = ticket.messages.get()
    ReadCursor.objects.create(ticket=ticket, user=agent, last_read_message=message)
    with pytest.raises(IntegrityError):
        ReadCursor.objects.create(ticket=ticket, user=agent, last_read_message=message)


def test_telegram_update_id_is_unique_per_bot(db):
    TelegramUpdate.objects.create(bot_id=1, update_id=42)
    TelegramUpdate.objects.create(bot_id=2, update_id=42)  # another bot numbers its own updates
    with pytest.raises(IntegrityError):
        TelegramUpdate.objects.create(bot_id=1, update_id=42)


# --- Lifecycle ------------------------------------------------------------------------------------


def test_a_customer_writing_again_continues_the_same_ticket(ticket):
    message, opened = inbound(text="more", telegram_message_id=2)

    assert message.ticket == ticket
    assert opened is False
    assert Customer.objects.get().first_name == "Alice"


def test_the_customer_profile_follows_telegram(ticket):
    inbound(TelegramProfile(user_id=111, first_name="Alicia", username="alicia"), telegram_message_id=2)

    customer = Customer.objects.get()
    assert (customer.first_name, customer.username) == ("Alicia", "alicia")


def test_a_customer_message_puts_a_pending_ticket_back_to_open(ticket):
    services.change_ticket_status(ticket, Ticket.Status.PENDING, acting_user=None)

    inbound(text="here is the info", telegram_message_id=2)

    ticket.refresh_from_db()
    assert ticket.status == Ticket.Status.OPEN


@pytest.mark.parametrize(
    ("start", "target"),
    [("closed", "open"), ("closed", "resolved"), ("resolved", "pending")],
)
def test_invalid_status_transitions_are_refused_with_a_clear_error(ticket, start, target):
    Ticket.objects.filter(pk=ticket.pk).update(status=start)

    with pytest.raises(TicketRuleError, match=f"is {start} and cannot become {target}"):
        services.change_ticket_status(ticket, target, acting_user=None)
    ticket.refresh_from_db()
    assert ticket.status == start


def test_reopening_is_refused_while_the_customer_has_another_active_ticket(ticket):
    resolve(ticket, days_ago=30)
    newer, _ = inbound(text="new issue", telegram_message_id=2)

    with pytest.raises(TicketRuleError, match=f"already has ticket #{newer.ticket.pk} open"):
        services.change_ticket_status(ticket, Ticket.Status.OPEN, acting_user=None)


def test_start_new_ticket_resolves_the_current_one(ticket):
    fresh = services.start_new_ticket(ticket.customer)

    ticket.refresh_from_db()
    assert ticket.status == Ticket.Status.RESOLVED
    assert fresh.status == Ticket.Status.OPEN and fresh != ticket


def test_only_staff_can_be_assigned(ticket, django_user_model):
    customer_user = django_user_model.objects.create_user("not-an-agent")

    with pytest.raises(TicketRuleError, match="not an agent"):
        services.assign_ticket(ticket, customer_user, acting_user=None)


def test_a_deactivated_agent_cannot_be_assigned(ticket, other_agent):
    other_agent.is_active = False
    other_agent.save()

    with pytest.raises(TicketRuleError, match="deactivated"):
        services.assign_ticket(ticket, other_agent, acting_user=None)
    ticket.refresh_from_db()
    assert ticket.assignee is None


def test_customer_edit_updates_the_stored_text(ticket):
    edited = services.record_message_edit(ALICE, 1, text="hello, edited", edited_at=timezone.now())

    assert edited.text == "hello, edited" and edited.edited_at is not None
    assert services.record_message_edit(ALICE, 999, text="x", edited_at=timezone.now()) is None


# --- The outbox -----------------------------------------------------------------------------------


def test_a_reply_is_stored_queued_with_its_delivery_task(ticket, agent):
    reply, created = services.queue_reply(ticket, "We are on it", author=agent)

    assert created and reply.delivery_status == Message.DeliveryStatus.QUEUED
    task = DBTaskResult.objects.get()
    assert task.task_path == "bots.tasks.deliver_reply"
    assert task.args_kwargs["args"] == [reply.pk]


@pytest.mark.django_db(transaction=True)
def test_reply_and_task_commit_together_a_failure_leaves_neither(agent):
    ticket = inbound()[0].ticket
    with pytest.raises(RuntimeError), transaction.atomic():
        services.queue_reply(ticket, "never sent", author=agent)
        raise RuntimeError("something later in the transaction failed")

    assert not Message.objects.filter(direction=Message.Direction.OUT).exists()
    assert not DBTaskResult.objects.exists()


def test_a_resent_reply_with_the_same_client_msg_id_is_stored_once(ticket, agent):
    client_msg_id = str(uuid.uuid4())

    first, created = services.queue_reply(ticket, "hi", author=agent, client_msg_id=client_msg_id)
    again, created_again = services.queue_reply(ticket, "hi", author=agent, client_msg_id=client_msg_id)

    assert (created, created_again) == (True, False)
    assert again.pk == first.pk
    assert DBTaskResult.objects.count() == 1


@pytest.mark.parametrize(("text", "error"), [("   ", "needs some text"), ("x" * 4097, "at most 4096")])
def test_an_invalid_reply_is_refused(ticket, agent, text, error):
    with pytest.raises(TicketRuleError, match=error):
        services.queue_reply(ticket, text, author=agent)
    assert not Message.objects.filter(direction=Message.Direction.OUT).exists()


def test_a_closed_ticket_takes_no_replies(ticket, agent):
    services.change_ticket_status(ticket, Ticket.Status.CLOSED, acting_user=None)

    with pytest.raises(TicketRuleError, match="closed"):
        services.queue_reply(ticket, "hello?", author=agent)


# --- Announcements after commit -------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_changes_are_announced_only_after_commit(announcements):
    with pytest.raises(RuntimeError), transaction.atomic():
        inbound()
        raise RuntimeError("rolled back")
    assert announcements == []

    message, _ = inbound()

    assert [(event.kind, event.seq) for event in announcements] == [("ticket", 1), ("message", 2)]
    assert announcements[1].data["message"]["id"] == message.pk


def test_nul_characters_from_telegram_are_dropped_not_fatal(db):
    profile = TelegramProfile(user_id=333, first_name="Nul\x00l")

    message, _ = services.record_inbound_message(
        profile, text="a\x00b", telegram_message_id=1, attachment={"kind": "document", "file_name": "x\x00.txt"}
    )

    message.refresh_from_db()
    assert message.text == "ab"
    assert message.attachment["file_name"] == "x.txt"
    assert message.ticket.customer.first_name == "Null"


def test_lone_surrogates_from_telegram_are_replaced_not_fatal(db):
    # What json.loads makes of a "\\ud800" escape with no pair: storable in no UTF-8 database as it is.
    profile = TelegramProfile(user_id=334, first_name="Ann\ud800")

    message, _ = services.record_inbound_message(
        profile,
        text="hi \udfff there \U0001f600",
        telegram_message_id=1,
        attachment={"kind": "document", "file_name": "\ud83d.txt"},
    )

    message.refresh_from_db()
    assert message.text == "hi \ufffd there \U0001f600"
    assert message.attachment["file_name"] == "\ufffd.txt"
    assert message.ticket.customer.first_name == "Ann\ufffd"


@pytest.mark.needs_postgres
@pytest.mark.django_db(transaction=True)
def test_a_message_arriving_while_an_agent_closes_the_ticket_opens_a_new_one():
    ticket = inbound()[0].ticket

    message = committed_while_waiting(
        lambda: services.change_ticket_status(ticket, Ticket.Status.CLOSED, acting_user=None),
        lambda: inbound(text="still there?", telegram_message_id=2)[0],
        "the customer's message to wait for the agent's lock on the ticket",
    )

    ticket.refresh_from_db()
    assert ticket.status == Ticket.Status.CLOSED
    assert not ticket.messages.filter(text="still there?").exists()
    assert message.ticket.status == Ticket.Status.OPEN


@pytest.mark.needs_postgres
@pytest.mark.django_db(transaction=True)
def test_a_message_waiting_for_the_customer_while_its_early_edit_commits_is_stored_edited():
    ticket = inbound()[0].ticket

    # The edit commits while the original waits for the customer's lock: the original's statements after the
    # lock (not the one that waited) must see it.
    message = committed_while_waiting(
        lambda: services.record_message_edit(ALICE, 2, text="edited", edited_at=timezone.now()),
        lambda: inbound(text="original", telegram_message_id=2)[0],
        "the original to wait for the customer's lock",
    )

    assert (message.ticket, message.text) == (ticket, "edited")
    assert Message.objects.get(pk=message.pk).text == "edited"


def committed_while_waiting(first, second, waiting):
    """Run ``first()`` in a transaction held open in one thread, then ``second()`` in another; commit ``first``
    once ``second`` waits for one of its locks (``waiting`` says which). Returns what ``second`` returned."""
    done = threading.Event()
    release = threading.Event()
    results = {}

    def hold():
        with transaction.atomic():
            first()
            done.set()
            release.wait(20)
        connection.close()

    def then():
        done.wait(20)
        results["second"] = second()
        connection.close()

    threads = [threading.Thread(target=hold), threading.Thread(target=then)]
    for thread in threads:
        thread.start()
    wait_for_lock_wait(waiting)
    release.set()
    for thread in threads:
        thread.join()
    return results["second"]
