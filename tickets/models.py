"""The support domain: customers, their tickets, the messages in them, and agents' read cursors.

Only tickets.services writes these models; correctness that must survive concurrency lives in the
constraints declared here.
"""

from django.conf import settings
from django.db import models
from django.db.models import F, OrderBy, Q


class Customer(models.Model):
    """A person writing to the bot, identified by their Telegram user id (none once they were forgotten).

    The customer's row is also their chat's outbox: replies to them are numbered in queue order
    (``last_reply_seq``) and delivered one at a time in that order (bots.outbox), so the row lock
    serialises everything that queues, sends or settles a reply to this chat.
    """

    telegram_user_id = models.BigIntegerField(unique=True, null=True, blank=True)
    first_name = models.CharField(max_length=255, blank=True)
    last_name = models.CharField(max_length=255, blank=True)
    username = models.CharField(max_length=64, blank=True)
    language_code = models.CharField(max_length=35, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # The outbox number of the latest reply queued to this customer (Message.outbox_seq).
    last_reply_seq = models.PositiveBigIntegerField(default=0)
    # When the latest reply reached Telegram: the next one waits TELEGRAM_CHAT_INTERVAL_SECONDS after it.
    last_reply_sent_at = models.DateTimeField(null=True, blank=True)
    # Set when the customer was forgotten (tickets.services.forget_customer): their personal data is gone.
    erased_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["username"])]
        permissions = [("forget_customer", "Can forget a customer (erase their personal data and messages)")]

    def __str__(self):
        return self.name

    @property
    def name(self):
        if self.erased_at is not None:
            return f"Forgotten customer #{self.pk}"
        full_name = f"{self.first_name} {self.last_name}".strip()
        return full_name or (f"@{self.username}" if self.username else f"Telegram user {self.telegram_user_id}")


# Most recent conversation first, tickets without messages last: how the desk and the admin list tickets.
RECENT_FIRST = (F("last_message_at").desc(nulls_last=True), F("id").desc())


class NullsLastIndex(models.Index):
    """An index with ``desc(nulls_last=True)`` columns, from which PostgreSQL reads ``ORDER BY … DESC NULLS
    LAST`` without sorting. SQLite cannot say NULLS LAST in an index, nor needs to: it sorts NULLs last in
    descending order anyway."""

    def create_sql(self, model, schema_editor, using="", **kwargs):
        if schema_editor.connection.vendor != "sqlite":
            return super().create_sql(model, schema_editor, using=using, **kwargs)
        expressions = [
            OrderBy(expression.expression, descending=expression.descending)
            if isinstance(expression, OrderBy)
            else expression
            for expression in self.expressions
        ]
        return models.Index(*expressions, name=self.name).create_sql(model, schema_editor, using=using, **kwargs)


class Ticket(models.Model):
    """One conversation with a customer. A customer has at most one active (open or pending) ticket."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        PENDING = "pending", "Pending"
        RESOLVED = "resolved", "Resolved"
        CLOSED = "closed", "Closed"

    ACTIVE_STATUSES = (Status.OPEN, Status.PENDING)

    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="tickets")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="assigned_tickets",
        db_index=False,  # ticket_assignee_idx starts with it
    )
    subject = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_message_at = models.DateTimeField(null=True, blank=True)
    # When the ticket was last resolved; the customer writing within TICKET_REOPEN_DAYS reopens it.
    resolved_at = models.DateTimeField(null=True, blank=True)
    # The seq of the ticket's latest event (see TicketEvent); incremented under the ticket's row lock.
    last_seq = models.PositiveBigIntegerField(default=0)
    # The ticket's latest notable message (one that is unread for agents who have not read it: tickets.queries)
    # and its author (none for the customer's), set with last_message_at under the ticket's row lock. With an
    # agent's read cursor they tell whether the ticket has something unread for them without counting messages.
    last_notable_message_id = models.BigIntegerField(null=True, blank=True)
    last_notable_author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", db_index=False
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["customer"],
                condition=Q(status__in=["open", "pending"]),
                name="one_active_ticket_per_customer",
                violation_error_message="This customer already has an open or pending ticket.",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["open", "pending", "resolved", "closed"]),
                name="ticket_status_valid",
            ),
        ]
        # Tickets in the order the desk's inbox and the admin list them (RECENT_FIRST), each list read from the
        # top of an index rather than sorted: all of them, those in a status, and an agent's (or nobody's).
        indexes = [
            NullsLastIndex(*RECENT_FIRST, name="ticket_recent_idx"),
            NullsLastIndex(F("status"), *RECENT_FIRST, name="ticket_inbox_idx"),
            NullsLastIndex(F("assignee"), *RECENT_FIRST, name="ticket_assignee_idx"),
        ]

    def __str__(self):
        return f"#{self.pk} {self.subject or self.customer}"

    @property
    def is_active(self):
        return self.status in self.ACTIVE_STATUSES


class Message(models.Model):
    """A message in a ticket: inbound from the customer, or an agent's (or the bot's) outbound reply."""

    class Direction(models.TextChoices):
        IN = "in", "From customer"
        OUT = "out", "To customer"

    class DeliveryStatus(models.TextChoices):
        QUEUED = "queued", "Queued"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    # message_ticket_idx starts with it: a second index on it alone would only cost every INSERT.
    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="messages", db_index=False)
    direction = models.CharField(max_length=3, choices=Direction.choices)
    # The agent who wrote an outbound message; empty for inbound ones and for the bot's automatic replies.
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    text = models.TextField(blank=True)
    # A bot command (/start, /status): answered, but not a message an agent has to read.
    is_command = models.BooleanField(default=False)
    # What Telegram sent beside the text: {"kind": "photo", "file_id": ..., ...}; see bots.updates.
    attachment = models.JSONField(null=True, blank=True)
    telegram_message_id = models.BigIntegerField(null=True, blank=True)
    reply_to_telegram_message_id = models.BigIntegerField(null=True, blank=True)
    # Outbound only (blank for inbound).
    delivery_status = models.CharField(max_length=8, choices=DeliveryStatus.choices, blank=True)
    delivery_attempts = models.PositiveSmallIntegerField(default=0)
    delivery_error = models.TextField(blank=True)
    # When the next delivery attempt is due, or until when the running attempt holds its lease.
    delivery_due_at = models.DateTimeField(null=True, blank=True)
    # When the current run of transient errors began; the reply fails after TELEGRAM_DELIVERY_RETRY_WINDOW_SECONDS.
    delivery_failing_since = models.DateTimeField(null=True, blank=True)
    # The reply's place in its customer's outbox queue (Customer.last_reply_seq); a re-send takes a new one.
    outbox_seq = models.PositiveBigIntegerField(null=True, blank=True)
    # The agent's client-side id, so a resent WebSocket frame does not store the reply twice.
    client_msg_id = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    edited_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["ticket", "client_msg_id"], name="unique_client_msg_id_per_ticket"),
            models.CheckConstraint(
                condition=(
                    Q(direction="in", delivery_status="")
                    | Q(direction="out", delivery_status__in=["queued", "sent", "failed"])
                ),
                name="delivery_status_only_outbound",
            ),
        ]
        indexes = [
            models.Index(fields=["ticket", "id"], name="message_ticket_idx"),
            # Finding the stored message an edited_message refers to.
            models.Index(fields=["telegram_message_id"], name="message_telegram_id_idx"),
            # The outbox sweep and the health check's backlog count.
            models.Index(
                fields=["delivery_due_at"],
                condition=Q(delivery_status="queued"),
                name="message_outbox_idx",
            ),
            # A chat's outbox queue: its tickets' queued replies in queue order (bots.outbox).
            models.Index(
                fields=["ticket", "outbox_seq"],
                condition=Q(delivery_status="queued"),
                name="message_chat_queue_idx",
            ),
        ]

    def __str__(self):
        return f"{self.get_direction_display()}: {self.text[:50]}"


class EarlyEdit(models.Model):
    """A customer's edit that arrived before the message it edits (Telegram redelivers the original later).

    tickets.services keeps it here and applies it when the original is stored, so the edit is not lost.
    """

    telegram_user_id = models.BigIntegerField()
    telegram_message_id = models.BigIntegerField()
    text = models.TextField(blank=True)
    attachment = models.JSONField(null=True, blank=True)
    edited_at = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["telegram_user_id", "telegram_message_id"], name="one_early_edit_per_message"
            ),
        ]
        indexes = [models.Index(fields=["received_at"], name="early_edit_received_idx")]

    def __str__(self):
        return f"early edit of message {self.telegram_message_id} by {self.telegram_user_id}"


class ReadCursor(models.Model):
    """How far an agent has read in a ticket. It only moves forward (see services.advance_read_cursor)."""

    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="read_cursors")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="read_cursors")
    last_read_message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["ticket", "user"], name="one_read_cursor_per_agent_and_ticket"),
        ]

    def __str__(self):
        return f"{self.user} read #{self.ticket_id} up to {self.last_read_message_id}"


class TicketEvent(models.Model):
    """One change of a ticket, in the order the changes committed: the ticket's history.

    ``seq`` starts at 1 per ticket and grows by exactly one per committed event (tickets.services.history
    takes it from ``Ticket.last_seq`` in the transaction that makes the change). Live clients receive these
    rows as they commit, and a client that missed some asks for those after the last ``seq`` it has (G12).
    ``data`` is a snapshot of the changed rows (tickets.snapshots), so a replay shows what a live client saw.
    """

    class Kind(models.TextChoices):
        MESSAGE = "message", "Message"  # an inbound message, or an outbound reply queued
        EDIT = "edit", "Edit"  # the customer edited a message
        DELIVERY = "delivery", "Delivery"  # a reply was sent, failed, is held up by a retry, or queued again
        TICKET = "ticket", "Ticket"  # opened, status or assignee changed, or its customer forgotten
        READ = "read", "Read"  # an agent's read cursor moved forward

    class ActorKind(models.TextChoices):
        CUSTOMER = "customer", "Customer"
        AGENT = "agent", "Agent"
        SYSTEM = "system", "System"

    # one_event_per_ticket_seq starts with it.
    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="events", db_index=False)
    seq = models.PositiveBigIntegerField()
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # Who made the change: an agent (``actor`` set), the customer, or the system (the bot, the outbox).
    actor_kind = models.CharField(max_length=16, choices=ActorKind.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    data = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["ticket", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["ticket", "seq"], name="one_event_per_ticket_seq"),
        ]
        indexes = [models.Index(fields=["created_at"], name="ticket_event_created_idx")]

    def __str__(self):
        return f"#{self.ticket_id}.{self.seq} {self.kind}"
