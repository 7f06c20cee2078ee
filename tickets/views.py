"""The desk: the pages agents work in (SPEC §4), and the small endpoints their script calls.

The views only translate. Reads come from tickets.queries; every change goes through tickets.services with
the requesting agent as the acting user, and reaches every open page as the ticket's event. What is live
(the WebSocket protocol) is realtime's; the pages' behaviour is static/desk/desk.js.
"""

import functools
from datetime import datetime

from django.contrib.auth import get_user_model
from django.contrib.auth.views import LoginView, LogoutView
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from . import queries, services
from .agents import agent_api, agent_page
from .forms import AgentLoginForm
from .hooks import announced_when_done
from .models import Message, Ticket
from .snapshots import message_data, ticket_data, user_data

login = LoginView.as_view(
    template_name="desk/login.html", authentication_form=AgentLoginForm, redirect_authenticated_user=True
)
logout = LogoutView.as_view()

STATUS_FILTERS = [
    ("active", "Open & pending"),
    ("open", "Open"),
    ("pending", "Pending"),
    ("resolved", "Resolved"),
    ("closed", "Closed"),
    ("any", "Any status"),
]
VIEWS = [("mine", "Mine"), ("unassigned", "Unassigned"), ("all", "All")]


def inbox_filter(request):
    """The inbox view and status filter the request asks for; unknown values fall back to the defaults."""
    view = request.GET.get("view", "all")
    status = request.GET.get("status", "active")
    return (
        view if view in queries.INBOX_VIEWS else "all",
        status if status in queries.INBOX_STATUSES else "active",
    )


@agent_page
@require_GET
def inbox(request):
    view, status = inbox_filter(request)
    return render(
        request,
        "desk/inbox.html",
        {
            "views": VIEWS,
            "status_filters": STATUS_FILTERS,
            "view": view,
            "status": status,
            # What the script checks a live change against (the server's filter is the one in queries).
            "statuses": queries.INBOX_STATUSES[status] or (),
        },
    )


def json_error(status, message):
    return JsonResponse({"error": message}, status=status)


def page_cursor(value):
    """The ``before`` parameter, "<last_message_at ISO>|<ticket id>" (an empty time: no messages)."""
    at, _, ticket_id = value.rpartition("|")
    return (datetime.fromisoformat(at) if at else None), int(ticket_id)


def ticket_summary(ticket):
    """The ticket as pages show it, with the seq of the latest event it reflects (SPEC §4)."""
    return {**ticket_data(ticket), "seq": ticket.last_seq}


def inbox_row(ticket, user):
    preview = ticket.last_message
    if preview is not None:
        author = " ".join(filter(None, (preview["author_first_name"], preview["author_last_name"])))
        preview = {
            "id": preview["id"],
            "direction": preview["direction"],
            "text": preview["text"],
            "attachment": preview["attachment"],
            "author": author or preview["author_username"],
            "mine": preview["author_id"] == user.pk,
        }
    return {
        **ticket_summary(ticket),
        "unread": ticket.unread_count,
        "last_message": preview,
        "url": reverse("desk-ticket", args=[ticket.pk]),
    }


@agent_api
@require_GET
def inbox_data(request):
    """One page of the inbox as JSON: ``{"tickets": [...], "next": <before of the next page> or null}``.

    ``ticket=<id>`` answers that one ticket if it is in the view (``tickets`` is then empty otherwise).
    """
    view, status = inbox_filter(request)
    try:
        before = page_cursor(request.GET["before"]) if request.GET.get("before") else None
        ticket_id = int(request.GET["ticket"]) if request.GET.get("ticket") else None
    except ValueError:
        return json_error(400, "before must be <ISO time>|<ticket id>, and ticket a ticket id.")
    tickets = queries.inbox_page(request.user, view=view, status=status, before=before, ticket_id=ticket_id)
    next_page = None
    if ticket_id is None and len(tickets) == queries.INBOX_PAGE_SIZE:
        last = tickets[-1]
        next_page = f"{last.last_message_at.isoformat() if last.last_message_at else ''}|{last.pk}"
    return JsonResponse({"tickets": [inbox_row(ticket, request.user) for ticket in tickets], "next": next_page})


@agent_page
@require_GET
def ticket_page(request, ticket_id):
    # The ticket (and its seq) first: whatever commits after this read is in the rows read next, or in
    # the events the page asks for with resume. Replaying an event the page already shows changes nothing.
    ticket = get_object_or_404(Ticket.objects.select_related("customer", "assignee"), pk=ticket_id)
    messages, earlier = queries.conversation(ticket)
    state = {
        "ticket": ticket_summary(ticket),
        "messages": [message_data(message) for message in messages],
        "earlier": earlier,
        # Replies go out to a customer one at a time, in order: the queued ones behind an earlier reply.
        "waiting_for": queries.replies_waiting(ticket),
        "reads": [
            {"user": user_data(reader), "message_id": message_id}
            for reader, message_id in queries.read_positions(ticket)
        ],
        "me": user_data(request.user),
        "transitions": {status: sorted(targets) for status, targets in services.ALLOWED_TRANSITIONS.items()},
        "attachment_url": reverse("desk-attachment", args=[0]).replace("/0/", "/{id}/"),
        "resend_url": reverse("desk-resend", args=[0]).replace("/0/", "/{id}/"),
    }
    context = {
        "ticket": ticket,
        "customer": ticket.customer,
        "state": state,
        "statuses": Ticket.Status.choices,
        "allowed_statuses": {ticket.status, *services.ALLOWED_TRANSITIONS[ticket.status]},
        "agents": queries.agents(),
    }
    return render(request, "desk/ticket.html", context)


def ticket_change(change):
    """An endpoint that applies ``change(request, ticket)`` and answers the ticket as it is now, or the
    ticket rule's refusal (409) in words for the agent."""

    @agent_api
    @require_POST
    @announced_when_done
    @functools.wraps(change)
    def endpoint(request, ticket_id):
        ticket = Ticket.objects.filter(pk=ticket_id).first()
        if ticket is None:
            return json_error(404, f"Ticket #{ticket_id} does not exist.")
        try:
            ticket = change(request, ticket)
        except ValueError as error:
            return json_error(400, str(error))
        except services.TicketRuleError as refused:
            return json_error(409, str(refused))
        # The services answer the ticket as their transaction left it (customer, assignee and seq loaded).
        return JsonResponse({"ticket": ticket_summary(ticket)})

    return endpoint


@ticket_change
def change_status(request, ticket):
    """POST ``status``: move the ticket through its lifecycle."""
    status = request.POST.get("status", "")
    if status not in Ticket.Status.values:
        raise ValueError(f"{status!r} is not a ticket status.")
    return services.change_ticket_status(ticket, status, acting_user=request.user)


@ticket_change
def change_assignee(request, ticket):
    """POST ``assignee``: an agent's user id, or empty for nobody."""
    assignee_id = request.POST.get("assignee", "")
    assignee = None
    if assignee_id:
        assignee = get_user_model().objects.filter(pk=int(assignee_id) if assignee_id.isdigit() else None).first()
        if assignee is None:
            raise ValueError(f"There is no user {assignee_id!r}.")
    return services.assign_ticket(ticket, assignee, acting_user=request.user)


@agent_api
@require_POST
@announced_when_done
def resend(request, message_id):
    """POST: queue a failed reply again (services.resend_reply); the page hears of it as a delivery event."""
    message = Message.objects.select_related("ticket").filter(pk=message_id).first()
    if message is None:
        return json_error(404, f"Message {message_id} does not exist.")
    try:
        reply = services.resend_reply(message, acting_user=request.user)
    except services.TicketRuleError as refused:
        return json_error(409, str(refused))
    return JsonResponse({"message": message_data(reply)})
