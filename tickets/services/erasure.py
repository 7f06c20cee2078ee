"""Forgetting a customer (the GDPR's right to erasure): what identifies them, and what was written in their
tickets, is erased for good; anonymous statistics stay."""

from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Value
from django.db.models.functions import Concat
from django.utils import timezone

from ..hooks import customer_forgotten
from ..models import Customer, EarlyEdit, Message, Ticket, TicketEvent
from ..snapshots import forgotten_event_data
from .base import lock_customer, lock_ticket
from .history import Actor, record_events
from .outbox import delivery_changed
from .tickets import ticket_changed

FORGET_PERMISSION = "tickets.forget_customer"
NOT_SENT = "Not sent: the customer was forgotten."


def forget_customer(customer, *, acting_user):
    """Erase ``customer``'s personal data and the contents of their tickets; cannot be undone.

    Erased: their name, username, language and Telegram user id; every message's text, attachment and
    Telegram ids in their tickets (the agents' replies too: they answer what the customer wrote); the
    tickets' subjects; the same inside the tickets' history (TicketEvent.data) and in the admin's log;
    edits waiting for their original. Replies not sent yet fail instead. Kept, anonymous: the tickets with
    their statuses, assignees and dates, the messages' directions, dates and delivery statuses, the
    history's events and who made them. Each ticket's history records a ``forgotten`` change by the acting
    agent, without the erased data. Refused (PermissionDenied) without the ``forget_customer`` permission.
    Returns the customer as they are now; forgetting a forgotten customer changes nothing.
    """
    if acting_user is None or not acting_user.has_perm(FORGET_PERMISSION):
        raise PermissionDenied("Forgetting a customer needs the permission “Can forget a customer”.")
    with transaction.atomic():
        customer = lock_customer(customer.pk)
        if customer.erased_at is not None:
            return customer
        telegram_user_id = customer.telegram_user_id
        customer.first_name = customer.last_name = customer.username = customer.language_code = ""
        customer.telegram_user_id, customer.erased_at = None, timezone.now()
        customer.save(
            update_fields=["first_name", "last_name", "username", "language_code", "telegram_user_id", "erased_at"]
        )
        EarlyEdit.objects.filter(telegram_user_id=telegram_user_id).delete()
        ticket_ids = list(Ticket.objects.filter(customer=customer).order_by("pk").values_list("pk", flat=True))
        for ticket_id in ticket_ids:
            _forget_ticket(lock_ticket(ticket_id), customer, Actor.agent(acting_user))
        _forget_admin_log(customer, ticket_ids)
        # Other apps erase what they keep about the chat (e.g. raw Telegram updates) in this transaction.
        customer_forgotten.send(sender=Customer, customer=customer, telegram_user_id=telegram_user_id)
    return customer


def _forget_ticket(ticket, customer, actor):
    messages = Message.objects.filter(ticket=ticket)
    unsent = list(messages.filter(delivery_status=Message.DeliveryStatus.QUEUED).values_list("pk", flat=True))
    messages.update(
        text="", attachment=None, telegram_message_id=None, reply_to_telegram_message_id=None, delivery_error=""
    )
    messages.filter(pk__in=unsent).update(
        delivery_status=Message.DeliveryStatus.FAILED,
        delivery_error=NOT_SENT,
        delivery_due_at=None,
        delivery_failing_since=None,
    )
    Ticket.objects.filter(pk=ticket.pk).update(subject="")
    ticket.subject, ticket.customer = "", customer
    events = list(TicketEvent.objects.filter(ticket=ticket))
    for event in events:
        event.data = forgotten_event_data(event.data, customer)
    TicketEvent.objects.bulk_update(events, ["data"], batch_size=500)
    changes = [delivery_changed(reply) for reply in Message.objects.filter(pk__in=unsent).order_by("pk")]
    record_events(ticket, actor, *changes, ticket_changed(ticket, forgotten=True))


def _forget_admin_log(customer, ticket_ids):
    """The admin's log names what it changed (a ticket's subject, a customer's name): name them by number."""
    for model, object_ids in ((Customer, [customer.pk]), (Ticket, ticket_ids)):
        LogEntry.objects.filter(
            content_type=ContentType.objects.get_for_model(model), object_id__in=[str(pk) for pk in object_ids]
        ).update(object_repr=Concat(Value(f"{model._meta.verbose_name} #"), "object_id"))
