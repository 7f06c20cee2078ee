"""Tickets: opening (or reopening) one for a customer, assigning it, and moving it through its lifecycle."""

from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from ..models import Ticket, TicketEvent
from ..snapshots import ticket_data, user_data
from . import rows
from .base import TicketRuleError, lock_ticket
from .history import CUSTOMER, Actor, record_events

ALLOWED_TRANSITIONS = {
    Ticket.Status.OPEN: {Ticket.Status.PENDING, Ticket.Status.RESOLVED, Ticket.Status.CLOSED},
    Ticket.Status.PENDING: {Ticket.Status.OPEN, Ticket.Status.RESOLVED, Ticket.Status.CLOSED},
    Ticket.Status.RESOLVED: {Ticket.Status.OPEN, Ticket.Status.CLOSED},
    Ticket.Status.CLOSED: set(),
}


def ticket_changed(ticket, **change):
    """The (kind, data) of a ticket event: the ticket as it is now, and what changed."""
    return TicketEvent.Kind.TICKET, {"ticket": ticket_data(ticket), "change": change}


def get_or_open_ticket(customer, subject="", *, reopen=True):
    """The customer's active ticket, locked for this transaction; else, with ``reopen``, their ticket resolved
    within TICKET_REOPEN_DAYS, reopened by them; else a new open one. Returns (ticket, opened).

    ``opened`` is True only for a new ticket. One active ticket per customer holds however many messages
    arrive at once: the constraint one_active_ticket_per_customer refuses a second, and a reopen changes the
    ticket under its row lock, so concurrent messages reopen it once.
    """
    with transaction.atomic(savepoint=False):
        ticket, opening = find_or_open_ticket(customer, subject, reopen=reopen)
        if opening:
            record_events(ticket, CUSTOMER, *opening)
    return ticket, bool(opening)


def find_or_open_ticket(customer, subject="", *, reopen=True):
    """get_or_open_ticket, but a new ticket's ``opened`` event is left to the caller, who records it with its
    own change in one go: returns (ticket, the changes to record: [] or the opening)."""
    for _ in range(3):
        ticket = active_ticket(customer, lock=True)
        if ticket is not None:
            return ticket, []
        recent = reopenable_ticket(customer) if reopen else None
        if recent is not None:
            try:
                with transaction.atomic():
                    return set_status(lock_ticket(recent.pk), Ticket.Status.OPEN, CUSTOMER), []
            except TicketRuleError:
                continue  # closed meanwhile, or another ticket opened: look again
        try:
            # In a savepoint: a writer without the customer's lock (an agent reopening an older ticket) may
            # have made another ticket active meanwhile.
            with transaction.atomic():
                return open_ticket(customer, subject)
        except IntegrityError:
            continue  # one_active_ticket_per_customer: use the ticket opened meanwhile
    raise TicketRuleError(f"Could not find or open a ticket for customer {customer.pk}.")


def open_ticket(customer, subject):
    """A new open ticket of ``customer``, who has no active one (one created in this transaction, say);
    returns (ticket, the change to record: its opening)."""
    ticket = Ticket(customer=customer, subject=subject[:200])
    rows.insert(ticket)
    return ticket, [ticket_changed(ticket, opened=True)]


def reopenable_ticket(customer, lock=False):
    """The customer's latest ticket if it was resolved less than TICKET_REOPEN_DAYS ago (not closed), else None;
    with ``lock``, locked for this transaction."""
    tickets = Ticket.objects.select_related("customer", "assignee")
    if lock:
        tickets = tickets.select_for_update(of=("self",), no_key=True)
    latest = tickets.filter(customer=customer).order_by("-pk").first()
    window = timedelta(days=settings.TICKET_REOPEN_DAYS)
    if latest is None or latest.status != Ticket.Status.RESOLVED or latest.resolved_at is None:
        return None
    return latest if latest.resolved_at > timezone.now() - window else None


def active_ticket(customer, lock=False):
    """The customer's open or pending ticket, if any; with ``lock``, locked for this transaction.

    Locking matters to writers: PostgreSQL re-checks the status once a concurrent change (an agent
    closing the ticket) commits, so a message never lands in a ticket that was closed meanwhile. The
    ticket comes with ``customer`` as given; its assignee is loaded if asked for (messages rarely need it).
    """
    tickets = Ticket.objects.filter(customer=customer, status__in=Ticket.ACTIVE_STATUSES)
    if lock:
        tickets = tickets.select_for_update(no_key=True)
    ticket = next(iter(tickets[:1]), None)  # one at most (one_active_ticket_per_customer): no ORDER BY
    if ticket is not None:
        ticket.customer = customer
    return ticket


def assign_ticket(ticket, assignee, *, acting_user):
    """Give the ticket to an agent (or to nobody, with ``assignee=None``). Returns the ticket as it is now."""
    if assignee is not None and not assignee.is_staff:
        raise TicketRuleError(f"{assignee} is not an agent (staff user) and cannot be assigned tickets.")
    with transaction.atomic():
        current = lock_ticket(ticket.pk)
        if current.assignee_id == (assignee.pk if assignee else None):
            return current
        if assignee is not None and not assignee.is_active:
            raise TicketRuleError(f"{assignee}'s account is deactivated: they can no longer sign in to answer tickets.")
        previous = user_data(current.assignee)
        current.assignee, current.updated_at = assignee, timezone.now()
        Ticket.objects.filter(pk=current.pk).update(assignee=assignee, updated_at=current.updated_at)
        record_events(
            current, Actor.agent(acting_user), ticket_changed(current, assignee=[previous, user_data(assignee)])
        )
    return current


def change_ticket_status(ticket, status, *, acting_user):
    """Move the ticket to ``status`` if the lifecycle allows it (see ALLOWED_TRANSITIONS).

    Returns the ticket as it is now; a change to the status it already has changes nothing.
    """
    with transaction.atomic():
        return set_status(lock_ticket(ticket.pk), status, Actor.agent(acting_user))


def set_status(current, status, actor):
    """Move ``current`` (locked by the caller) to ``status`` on behalf of ``actor``; record the change."""
    status = Ticket.Status(status)
    if status == current.status:
        return current
    if status not in ALLOWED_TRANSITIONS[current.status]:
        raise TicketRuleError(
            f"Ticket #{current.pk} is {current.get_status_display().lower()} and cannot become {status.label.lower()}."
        )
    previous, now = current.status, timezone.now()
    # When it was resolved (the reopen window counts from there); a closed ticket keeps the date.
    resolved_at = {Ticket.Status.RESOLVED: now, Ticket.Status.CLOSED: current.resolved_at}.get(status)
    try:
        with transaction.atomic():
            Ticket.objects.filter(pk=current.pk).update(status=status, updated_at=now, resolved_at=resolved_at)
    except IntegrityError:
        other = active_ticket(current.customer)
        raise TicketRuleError(
            f"Ticket #{current.pk} cannot be reopened: {current.customer} already has "
            f"ticket #{other.pk if other else '?'} open. Continue there."
        ) from None
    current.status, current.updated_at, current.resolved_at = status.value, now, resolved_at
    record_events(current, actor, ticket_changed(current, status=[previous, status.value]))
    return current


def start_new_ticket(customer):
    """Resolve the customer's active ticket, if any, and open a fresh one (the customer's /new command)."""
    with transaction.atomic():
        current = active_ticket(customer, lock=True)
        if current is not None:
            set_status(current, Ticket.Status.RESOLVED, CUSTOMER)
        ticket, _ = get_or_open_ticket(customer, reopen=False)
    return ticket
