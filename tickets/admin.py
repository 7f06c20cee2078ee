"""The Django admin for support agents: tickets with their conversation, and the customers behind them.

Every active staff user is an agent and may work tickets here, without per-model permissions; only
forgetting a customer needs one (tickets.forget_customer). The admin
changes nothing itself: status, assignee and replies go through tickets.services, and customers,
tickets and messages come from Telegram, so nothing is added or deleted here and messages are never
edited.
"""

from dataclasses import dataclass
from datetime import datetime

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.paginator import Paginator
from django.db import connection, transaction
from django.db.models import Count, Exists, OuterRef, Q
from django.http import Http404, JsonResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.text import smart_split, unescape_string_literal
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from . import queries, services
from .hooks import agent_typing, announced_when_done
from .models import RECENT_FIRST, Customer, Message, Ticket


def is_agent(request):
    return request.user.is_active and request.user.is_staff


class AgentAccess:
    """Agents (active staff users) may see these records; nobody adds or deletes them here."""

    def has_module_permission(self, request):
        return is_agent(request)

    def has_view_permission(self, request, obj=None):
        return is_agent(request)

    def has_add_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class AnnouncedWhenDone:
    """A ModelAdmin whose pages and actions change tickets through the services: what they commit is
    announced after the page is done with its database connection (tickets.hooks.announced_when_done)."""

    def changeform_view(self, *args, **kwargs):
        return announced_when_done(super().changeform_view)(*args, **kwargs)

    def changelist_view(self, *args, **kwargs):
        return announced_when_done(super().changelist_view)(*args, **kwargs)


class PlainActionCheckbox:
    """A list's row checkbox written at once, the same input Django renders through the form widget's three
    templates for each row: those were the costliest cell of the ticket list (docs/performance.md)."""

    def action_checkbox(self, obj):
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="{}">',
            helpers.ACTION_CHECKBOX_NAME,
            obj.pk,
            format_html(_("Select this object for an action - {}"), str(obj)),
        )


class ReadOnlyInline(AgentAccess):
    def has_change_permission(self, request, obj=None):
        return False


# --- Tickets --------------------------------------------------------------------------------------


def message_sender(message):
    if message.direction == Message.Direction.IN:
        return message.ticket.customer.name
    if message.author is None:
        return "Bot (automatic reply)"
    return message.author.get_full_name() or message.author.get_username()


def attachment_summary(message):
    attachment = message.attachment
    if not attachment:
        return ""
    if not isinstance(attachment, dict):
        return "Attachment"
    return attachment.get("summary") or str(attachment.get("kind") or "attachment").capitalize()


@dataclass(frozen=True)
class ConversationEntry:
    """One message of a ticket's conversation as the change page shows it (plain values: the template
    escapes them)."""

    number: int
    direction: str
    created_at: datetime
    sender: str
    text: str
    attachment: str
    edited_at: datetime | None
    delivery_status: str
    delivery_attempts: int | None
    delivery_error: str


def delivery_note(message, waiting_for):
    """Why a reply is where it is: a queued reply behind an earlier one to the same customer waits for it."""
    if message.pk in waiting_for:
        return f"Waiting for reply #{waiting_for[message.pk]} to this customer to be delivered (or fail) first."
    return message.delivery_error


def conversation(ticket):
    """The ticket's messages, oldest first, in two queries. Customers' messages came from Telegram and
    replies are on their way there, so the page shows them read-only, outside the form."""
    messages = ticket.messages.select_related("author", "ticket__customer").order_by("id")
    waiting_for = queries.replies_waiting(ticket)
    return [
        ConversationEntry(
            number=message.pk,
            direction=message.direction,
            created_at=message.created_at,
            sender=message_sender(message),
            text=message.text,
            attachment=attachment_summary(message),
            edited_at=message.edited_at,
            delivery_status=message.get_delivery_status_display(),
            delivery_attempts=None if message.direction == Message.Direction.IN else message.delivery_attempts,
            delivery_error=delivery_note(message, waiting_for),
        )
        for message in messages
    ]


class TicketPaginator(Paginator):
    """Counts a ticket list only up to COUNT_LIMIT tickets. An exact count of a list such as "unread for me"
    is a pass over every ticket (most are unread for an agent who never opened them); a list that long is
    narrowed with filters, not paged through. ``more`` says it has more tickets than counted: the list then
    says "more than" and offers no selection across its pages."""

    COUNT_LIMIT = 1000

    @cached_property
    def counted(self):
        # Any COUNT_LIMIT + 1 of them, by id only: neither sorted nor with their unread counts worked out.
        return self.object_list.order_by().values("pk")[: self.COUNT_LIMIT + 1].count()

    @property
    def count(self):
        return min(self.counted, self.COUNT_LIMIT)

    @property
    def more(self):
        return self.counted > self.COUNT_LIMIT


class UnreadFilter(admin.SimpleListFilter):
    """Tickets with messages the requesting agent has not read, or those they have read entirely."""

    title = "unread"
    parameter_name = "unread"

    def lookups(self, request, model_admin):
        return [("yes", "Unread messages for me"), ("no", "All read")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queries.with_unread_messages(queryset, request.user)
        if self.value() == "no":
            return queries.all_read(queryset, request.user)
        return queryset


class TicketChangeForm(forms.ModelForm):
    """The ticket's change form. Validating it applies the agent's changes through tickets.services, in
    one savepoint, so that a change the ticket rules refuse shows as an error on its field and leaves
    everything as it was."""

    reply = forms.CharField(
        label="Reply to customer",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 80}),
        help_text="Sent to the customer on Telegram when you save.",
    )

    # The requesting agent, the author of the reply; TicketAdmin.get_form sets it.
    agent = None

    class Meta:
        model = Ticket
        fields = ["status", "assignee"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # "What changed" is what the agent changed on the page they saw, so saving a reply does not undo
        # a colleague's status or assignee change made meanwhile.
        for name in ("status", "assignee"):
            if name in self.fields:
                self.fields[name].show_hidden_initial = True
        if "assignee" in self.fields:
            # Agents only (and whoever has the ticket now, so that an unchanged assignee stays valid).
            self.fields["assignee"].queryset = self.fields["assignee"].queryset.filter(
                Q(is_staff=True, is_active=True) | Q(pk=self.instance.assignee_id)
            )

    def _post_clean(self):
        super()._post_clean()
        if not self.errors:
            self.apply_changes()

    def apply_changes(self):
        # A fresh copy: the instance already holds the submitted values (and may be stale).
        ticket = Ticket.objects.select_related("customer", "assignee").get(pk=self.instance.pk)
        steps = []
        if self.cleaned_data.get("reply"):
            # First: it locks the customer, then the ticket (services.base's lock order); and before the
            # status, so that a reply and "closed" in one save answer and then close.
            steps.append(("reply", lambda: services.queue_reply(ticket, self.cleaned_data["reply"], author=self.agent)))
        if "assignee" in self.changed_data:
            steps.append(
                (
                    "assignee",
                    lambda: services.assign_ticket(ticket, self.cleaned_data["assignee"], acting_user=self.agent),
                )
            )
        if "status" in self.changed_data:
            steps.append(
                (
                    "status",
                    lambda: services.change_ticket_status(ticket, self.cleaned_data["status"], acting_user=self.agent),
                )
            )
        with transaction.atomic():
            for field, apply in steps:
                try:
                    apply()
                except services.TicketRuleError as refused:
                    # Undo the steps already applied, and whatever they would have announced.
                    transaction.set_rollback(True)
                    self.add_error(field, str(refused))
                    return


@admin.register(Ticket)
class TicketAdmin(AnnouncedWhenDone, AgentAccess, PlainActionCheckbox, admin.ModelAdmin):
    """Tickets, worked through TicketChangeForm. The conversation is shown read-only next to the form,
    not as an inline: a formset would post fields for every message (a long conversation would exceed
    DATA_UPLOAD_MAX_NUMBER_FIELDS) and would be validated after TicketChangeForm has already applied the
    agent's changes. So this admin has no inlines, and a valid form is a save."""

    form = TicketChangeForm
    list_display = ["id", "subject", "customer", "status", "assignee", "unread", "last_message_at"]
    list_display_links = ["id", "subject"]
    list_filter = ["status", "assignee", UnreadFilter]
    list_select_related = ["customer", "assignee"]
    # And the text of the conversation: see get_search_results.
    search_fields = ["customer__first_name", "customer__last_name", "customer__username"]
    search_help_text = "Customer's name or username, or text from the conversation."
    ordering = RECENT_FIRST
    # 50 a page, as in the desk's inbox: rendering the rows is most of a page's time once the rows come from
    # the top of an index (ticket_recent_idx) and are counted up to a limit (TicketPaginator). A filtered list
    # counts only the tickets it shows, not all of them too.
    list_per_page = 50
    paginator = TicketPaginator
    show_full_result_count = False
    actions = ["assign_to_me", "resolve", "close", "resend_failed_replies"]
    fieldsets = [
        (None, {"fields": ["customer", "subject", "status", "assignee"]}),
        # The change form template shows this one after the conversation.
        ("Reply", {"fields": ["reply"], "classes": ["reply-box"]}),
        ("Dates", {"fields": ["created_at", "updated_at", "last_message_at"], "classes": ["collapse"]}),
    ]
    readonly_fields = ["customer", "subject", "created_at", "updated_at", "last_message_at"]

    def has_change_permission(self, request, obj=None):
        return is_agent(request)

    def get_queryset(self, request):
        tickets = super().get_queryset(request).select_related("customer", "assignee")
        return queries.with_unread_count(tickets, request.user)

    def get_search_results(self, request, queryset, search_term):
        """Each word of the search in the customer's name or username, or in the text of one of the ticket's
        messages: that one through EXISTS, so a ticket is found once without the DISTINCT (a sort of every
        matching ticket) that joining its messages would need."""
        for word in smart_split(search_term):
            if word[0] in "\"'" and word[0] == word[-1]:
                word = unescape_string_literal(word)
            by_customer = Q.create([(f"{field}__icontains", word) for field in self.search_fields], connector=Q.OR)
            in_conversation = Exists(Message.objects.filter(ticket=OuterRef("pk"), text__icontains=word))
            queryset = queryset.filter(by_customer | in_conversation)
        return queryset, False

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        return type(form.__name__, (form,), {"agent": request.user})

    def get_urls(self):
        typing = self.admin_site.admin_view(require_POST(self.typing_view))
        return [path("<int:ticket_id>/typing/", typing, name="tickets_ticket_typing"), *super().get_urls()]

    def typing_view(self, request, ticket_id):
        """The agent is typing in the reply box: show "typing…" in the customer's Telegram chat."""
        if not self.has_change_permission(request):
            raise Http404
        found = Ticket.objects.filter(pk=ticket_id).values_list("customer__telegram_user_id").first()
        if found is None:
            raise Http404
        (chat_id,) = found  # None once the customer was forgotten: no chat to show it in
        # Hand this request's database connection back to the pool before waiting on Telegram (G9): agents
        # typing while Telegram is slow must not hold the connections the webhook needs.
        connection.close()
        answers = agent_typing.send(sender=Ticket, chat_id=chat_id, agent=request.user) if chat_id else []
        return JsonResponse({"shown": any(shown for _, shown in answers)})

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context["conversation"] = conversation(obj)
            context["empty_value_display"] = self.get_empty_value_display()
        return super().render_change_form(request, context, add, change, form_url, obj)

    def save_model(self, request, obj, form, change):
        """Nothing left to save: validating TicketChangeForm applied the changes through the services."""

    # Not sortable: sorting by it would count the unread messages of every ticket; the unread filter is quick.
    @admin.display(description="Unread")
    def unread(self, ticket):
        return ticket.unread_count

    @admin.action(description="Assign to me", permissions=["change"])
    def assign_to_me(self, request, queryset):
        self.apply_to_each(
            request,
            queryset,
            lambda ticket: services.assign_ticket(ticket, request.user, acting_user=request.user),
            "Assigned to you",
        )

    @admin.action(description="Resolve", permissions=["change"])
    def resolve(self, request, queryset):
        self.apply_to_each(
            request,
            queryset,
            lambda ticket: services.change_ticket_status(ticket, Ticket.Status.RESOLVED, acting_user=request.user),
            "Resolved",
        )

    @admin.action(description="Close", permissions=["change"])
    def close(self, request, queryset):
        self.apply_to_each(
            request,
            queryset,
            lambda ticket: services.change_ticket_status(ticket, Ticket.Status.CLOSED, acting_user=request.user),
            "Closed",
        )

    @admin.action(description="Re-send failed replies", permissions=["change"])
    def resend_failed_replies(self, request, queryset):
        """Queue every failed reply of the selected tickets again, oldest first (each at the back of its
        customer's queue)."""
        failed = Message.objects.filter(
            ticket__in=queryset, direction=Message.Direction.OUT, delivery_status=Message.DeliveryStatus.FAILED
        ).select_related("ticket")
        if not failed.exists():
            self.message_user(request, "The selected tickets have no failed replies.", messages.INFO)
            return
        self.apply_to_each(
            request,
            failed,
            lambda reply: services.resend_reply(reply, acting_user=request.user),
            "Replies queued again",
            nouns=("reply", "replies"),
        )

    def apply_to_each(self, request, objects, change, done_label, nouns=("ticket", "tickets")):
        """Apply ``change`` to each object (ticket, reply) on its own: the ones the ticket rules refuse are
        reported and left as they were, the others still change."""
        done, refused = [], []
        for item in objects.order_by("pk"):
            try:
                change(item)
            except services.TicketRuleError as error:
                refused.append(str(error))
            else:
                done.append(f"#{item.pk}")
        if done:
            self.message_user(request, f"{done_label}: {', '.join(done)}.", messages.SUCCESS)
        if refused:
            noun = nouns[0] if len(refused) == 1 else nouns[1]
            self.message_user(request, f"{len(refused)} {noun} left unchanged. {' '.join(refused)}", messages.WARNING)


# --- Customers ------------------------------------------------------------------------------------


class CustomerTicketInline(ReadOnlyInline, admin.TabularInline):
    model = Ticket
    fields = ["subject", "status", "assignee", "created_at", "last_message_at"]
    readonly_fields = fields
    ordering = RECENT_FIRST
    show_change_link = True
    extra = 0
    can_delete = False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("customer", "assignee")


@admin.register(Customer)
class CustomerAdmin(AnnouncedWhenDone, AgentAccess, PlainActionCheckbox, admin.ModelAdmin):
    """Customers as Telegram describes them: agents look them up, nobody edits them. Agents with the
    "Can forget a customer" permission can forget them (erase their personal data and messages)."""

    inlines = [CustomerTicketInline]
    list_display = ["name", "username", "telegram_user_id", "created_at", "ticket_count"]
    search_fields = ["first_name", "last_name", "username", "telegram_user_id__exact"]
    search_help_text = "Name, username, or exact Telegram user id."
    ordering = ["-created_at", "-id"]
    fields = ["first_name", "last_name", "username", "telegram_user_id", "language_code", "created_at", "erased_at"]
    readonly_fields = fields
    actions = ["forget"]

    def has_change_permission(self, request, obj=None):
        return False

    def has_forget_permission(self, request):
        return is_agent(request) and request.user.has_perm(services.FORGET_PERMISSION)

    @admin.action(description="Forget (erase personal data and messages)…", permissions=["forget"])
    def forget(self, request, queryset):
        """Asks once more (it cannot be undone), then forgets each selected customer through the service."""
        if request.POST.get("post") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "title": "Forget customers",
                "opts": self.model._meta,
                "queryset": queryset,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "media": self.media,
            }
            return TemplateResponse(request, "admin/tickets/customer/forget_confirmation.html", context)
        forgotten = [services.forget_customer(customer, acting_user=request.user).pk for customer in queryset]
        # By number only: the message outlives the request (in the session), the names must not.
        numbers = ", ".join(f"#{pk}" for pk in sorted(forgotten))
        self.message_user(request, f"Forgot customers {numbers}: their personal data and messages are erased.")

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(ticket_count=Count("tickets"))

    @admin.display(description="Name", ordering="first_name")
    def name(self, customer):
        return customer.name

    @admin.display(description="Tickets", ordering="ticket_count")
    def ticket_count(self, customer):
        return customer.ticket_count
