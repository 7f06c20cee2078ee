"""The admin for support agents: tickets and customers, worked only through tickets.services."""

import itertools
import re
from html.parser import HTMLParser
from io import StringIO

import pytest
from django.contrib import admin, messages
from django.contrib.admin import ModelAdmin
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django_tasks_db.models import DBTaskResult

from tests.conftest import resolve
from tickets import services
from tickets.admin import TicketAdmin, TicketPaginator
from tickets.hooks import announced
from tickets.models import Customer, Message, Ticket
from tickets.services import TelegramProfile

from .test_queries import expected_unread, play_conversations

pytestmark = pytest.mark.django_db

TICKETS_URL = reverse("admin:tickets_ticket_changelist")
CUSTOMERS_URL = reverse("admin:tickets_customer_changelist")

_telegram_message_ids = itertools.count(1)


def customer_writes(user_id, text="Hello", attachment=None, **profile):
    profile.setdefault("first_name", f"Customer{user_id}")
    message, _ = services.record_inbound_message(
        TelegramProfile(user_id=user_id, **profile),
        text=text,
        telegram_message_id=next(_telegram_message_ids),
        attachment=attachment,
    )
    return message


def ticket_url(ticket):
    return reverse("admin:tickets_ticket_change", args=[ticket.pk])


def customer_url(customer):
    return reverse("admin:tickets_customer_change", args=[customer.pk])


@pytest.fixture
def agent_client(client, agent):
    client.force_login(agent)
    return client


@pytest.fixture
def ticket():
    return customer_writes(100, "My parcel never arrived", last_name="Smith", username="alice_s").ticket


@pytest.fixture
def announcements():
    """The kinds the services announced, as they are sent after commit."""
    kinds = []

    def receiver(sender, events, **kwargs):
        kinds.extend(event.kind for event in events)

    announced.connect(receiver)
    yield kinds
    announced.disconnect(receiver)


class FormFields(HTMLParser):
    """The name/value pairs a browser would submit for the ticket's change form (without a submit button)."""

    def __init__(self):
        super().__init__()
        self.data = []
        self.in_form = False
        self.select = None
        self.textarea = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and attrs.get("id") == "ticket_form":
            self.in_form = True
        if not self.in_form or "disabled" in attrs:
            return
        if tag == "input" and attrs.get("name") and attrs.get("type", "text") not in {"submit", "button", "file"}:
            if attrs.get("type") not in {"checkbox", "radio"} or "checked" in attrs:
                self.data.append((attrs["name"], attrs.get("value", "")))
        elif tag == "select":
            self.select = {"name": attrs.get("name"), "first": None, "selected": None}
        elif tag == "option" and self.select is not None:
            value = attrs.get("value", "")
            if self.select["first"] is None:
                self.select["first"] = value
            if "selected" in attrs:
                self.select["selected"] = value
        elif tag == "textarea" and attrs.get("name"):
            self.textarea = [attrs["name"], ""]

    def handle_data(self, data):
        if self.textarea is not None:
            self.textarea[1] += data

    def handle_endtag(self, tag):
        if tag == "form":
            self.in_form = False
        elif tag == "select" and self.select is not None:
            if self.select["name"]:
                selected = self.select["selected"]
                self.data.append((self.select["name"], selected if selected is not None else self.select["first"]))
            self.select = None
        elif tag == "textarea" and self.textarea is not None:
            self.data.append((self.textarea[0], self.textarea[1].removeprefix("\n")))
            self.textarea = None


def rendered_form_data(page):
    fields = FormFields()
    fields.feed(page)
    return fields.data


def change_form_data(client, ticket, **changes):
    """What the browser would post for the ticket's change form, with ``changes`` applied."""
    response = client.get(ticket_url(ticket))
    assert response.status_code == 200
    data = dict(rendered_form_data(response.content.decode()))
    data.update(changes)
    return {name: "" if value is None else value for name, value in data.items()}


def results(response):
    assert response.status_code == 200
    return list(response.context["cl"].result_list)


def user_messages(response):
    return [(message.level, str(message)) for message in response.context["messages"]]


# --- Access ---------------------------------------------------------------------------------------


def test_an_agent_sees_the_ticket_list_and_the_ticket(agent_client, ticket):
    assert agent_client.get(TICKETS_URL).status_code == 200
    response = agent_client.get(ticket_url(ticket))
    assert response.status_code == 200
    assert "My parcel never arrived" in response.content.decode()
    assert "Reply to customer" in response.content.decode()


def test_an_agent_sees_customers(agent_client, ticket):
    assert agent_client.get(CUSTOMERS_URL).status_code == 200
    response = agent_client.get(customer_url(ticket.customer))
    assert response.status_code == 200
    assert f"#{ticket.pk}" in response.content.decode()


@pytest.mark.parametrize("login", ["anonymous", "not_staff"])
def test_only_agents_get_in(client, django_user_model, ticket, login):
    if login == "not_staff":
        client.force_login(django_user_model.objects.create_user("visitor", password="visitor-password"))
    for url in [TICKETS_URL, ticket_url(ticket), CUSTOMERS_URL, customer_url(ticket.customer)]:
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def test_nobody_adds_or_deletes_tickets_or_customers(admin_client, ticket):
    assert admin_client.get(reverse("admin:tickets_ticket_add")).status_code == 403
    assert admin_client.get(reverse("admin:tickets_ticket_delete", args=[ticket.pk])).status_code == 403
    assert admin_client.get(reverse("admin:tickets_customer_add")).status_code == 403
    assert admin_client.get(reverse("admin:tickets_customer_delete", args=[ticket.customer.pk])).status_code == 403
    response = admin_client.get(TICKETS_URL)
    assert "delete_selected" not in response.content.decode()


def test_customers_are_read_only(admin_client, ticket):
    customer = ticket.customer
    response = admin_client.post(customer_url(customer), {"first_name": "Mallory"})
    assert response.status_code == 403
    customer.refresh_from_db()
    assert customer.first_name == "Customer100"


# --- Ticket list ----------------------------------------------------------------------------------


def create_busy_tickets(first_user_id, count, agent, other_agent):
    for user_id in range(first_user_id, first_user_id + count):
        message = customer_writes(user_id, f"Question {user_id}")
        services.assign_ticket(message.ticket, other_agent, acting_user=None)
        services.queue_reply(message.ticket, "On it", author=other_agent)
        services.advance_read_cursor(message.ticket, agent, message.pk)


def count_queries(client, url):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries), response


@pytest.mark.parametrize("query", ["", "?q=Question", "?unread=yes", "?status__exact=open&o=2"])
def test_the_ticket_list_takes_the_same_queries_for_3_or_30_tickets(agent_client, agent, other_agent, query):
    create_busy_tickets(1, 3, agent, other_agent)
    with_3, response = count_queries(agent_client, TICKETS_URL + query)
    assert len(results(response)) == 3

    create_busy_tickets(4, 27, agent, other_agent)
    with_30, response = count_queries(agent_client, TICKETS_URL + query)
    assert len(results(response)) == 30
    assert with_30 == with_3


def test_the_ticket_list_shows_the_most_recent_conversation_first(agent_client):
    older = customer_writes(1, "first").ticket
    newer = customer_writes(2, "second").ticket
    customer_writes(1, "third")

    assert results(agent_client.get(TICKETS_URL)) == [older, newer]


@pytest.mark.parametrize(
    "term", ["Alice", "smith", "alice_s", "refund", "alice refund", '"a refund, please"', "'I want'"]
)
def test_search_finds_the_ticket_once(agent_client, term):
    alice = {"first_name": "Alice", "last_name": "Smith", "username": "alice_s"}
    ticket = customer_writes(1, "I want a refund", **alice).ticket
    customer_writes(1, "A refund, please", **alice)
    customer_writes(1, "Refund!!", **alice)
    customer_writes(2, "Something else", first_name="Bob", username="bobby")

    assert results(agent_client.get(TICKETS_URL, {"q": term})) == [ticket]


@pytest.mark.parametrize("term", ["bob refund", '"refund alice"', "nowhere"])
def test_search_needs_every_word_somewhere(agent_client, term):
    customer_writes(1, "I want a refund", first_name="Alice")
    customer_writes(2, "Something else", first_name="Bob")

    assert results(agent_client.get(TICKETS_URL, {"q": term})) == []


def test_unread_count_and_filter_with_and_without_a_read_cursor(agent_client, agent, other_agent):
    read = customer_writes(1, "a").ticket
    services.advance_read_cursor(read, agent, customer_writes(1, "b").pk)
    partly_read = customer_writes(2, "c").ticket
    services.advance_read_cursor(partly_read, agent, partly_read.messages.get().pk)
    customer_writes(2, "d")
    services.queue_reply(partly_read, "A colleague answers", author=other_agent)
    never_opened = customer_writes(3, "e").ticket
    customer_writes(3, "f")
    customer_writes(3, "g")
    services.queue_reply(never_opened, "My own reply", author=agent)

    response = agent_client.get(TICKETS_URL)
    assert {ticket: ticket.unread_count for ticket in results(response)} == {
        read: 0,
        partly_read: 2,
        never_opened: 3,
    }
    assert '<td class="field-unread">3</td>' in response.content.decode()
    assert set(results(agent_client.get(TICKETS_URL, {"unread": "yes"}))) == {partly_read, never_opened}
    assert results(agent_client.get(TICKETS_URL, {"unread": "no"})) == [read]


def test_the_unread_column_and_filter_follow_the_definition_for_each_agent(client, agent, other_agent):
    play_conversations(11, agent, other_agent)

    for user in (agent, other_agent):
        client.force_login(user)
        expected = expected_unread(user)
        unread = {pk for pk, count in expected.items() if count}
        assert {ticket.pk: ticket.unread_count for ticket in results(client.get(TICKETS_URL))} == expected
        assert {ticket.pk for ticket in results(client.get(TICKETS_URL, {"unread": "yes"}))} == unread
        assert {ticket.pk for ticket in results(client.get(TICKETS_URL, {"unread": "no"}))} == set(expected) - unread


def test_the_ticket_list_pages_through_tickets_most_recent_conversation_first(agent_client):
    tickets = [customer_writes(user_id, "Hi").ticket for user_id in range(1, 53)]
    services.get_or_open_ticket(services.get_or_create_customer(TelegramProfile(user_id=99))[0])  # no messages

    first, second = results(agent_client.get(TICKETS_URL)), results(agent_client.get(TICKETS_URL, {"p": 2}))

    assert len(first) == 50
    assert [ticket.pk for ticket in first + second[:-1]] == [ticket.pk for ticket in reversed(tickets)]
    assert second[-1].last_message_at is None


def test_a_long_ticket_list_is_counted_up_to_a_limit_and_offers_no_select_all(agent_client, monkeypatch):
    monkeypatch.setattr(TicketPaginator, "COUNT_LIMIT", 4)
    monkeypatch.setattr(TicketAdmin, "list_per_page", 2)
    tickets = [customer_writes(user_id, "Question").ticket for user_id in range(1, 6)]

    response = agent_client.get(TICKETS_URL, {"q": "Question", "p": 2})
    page = response.content.decode()
    assert results(response) == [tickets[2], tickets[1]]
    assert "More than 4 tickets" in page
    assert "More than 4 results" in page
    assert "select the objects across all pages" not in page

    monkeypatch.setattr(TicketPaginator, "COUNT_LIMIT", 5)
    page = agent_client.get(TICKETS_URL, {"q": "Question"}).content.decode()
    assert "5 tickets" in page and "More than" not in page
    assert "5 results" in page
    assert "select the objects across all pages" in page and "Select all 5 tickets" in page


def test_unread_is_counted_for_the_agent_who_asks(client, agent, other_agent):
    ticket = customer_writes(1, "a").ticket
    services.advance_read_cursor(ticket, agent, ticket.messages.get().pk)

    client.force_login(other_agent)
    assert [t.unread_count for t in results(client.get(TICKETS_URL))] == [1]
    client.force_login(agent)
    assert [t.unread_count for t in results(client.get(TICKETS_URL))] == [0]


# --- Ticket page ----------------------------------------------------------------------------------


FORM_FIELDS = {"csrfmiddlewaretoken", "status", "initial-status", "assignee", "initial-assignee", "reply"}


def test_the_conversation_is_shown_in_order_escaped_and_read_only(agent_client, agent, django_user_model):
    photo = {"kind": "photo", "file_id": "AgAD", "summary": "Photo 1280×720"}
    ticket = customer_writes(1, "<script>alert('hi')</script>", attachment=photo, last_name="<i>Doe</i>").ticket
    agent.first_name, agent.last_name = "Ann", "Agent"
    agent.save()
    reply, _ = services.queue_reply(ticket, "Thanks, <b>checking</b>", author=agent)
    services.mark_delivery_failed(reply, "Bad Request: can't parse <entities>", lease_until=reply.delivery_due_at)
    services.queue_reply(ticket, "We got your message.", author=None)
    colleague = django_user_model.objects.create_user("colleague", is_staff=True)
    services.queue_reply(ticket, "A colleague here", author=colleague)

    response = agent_client.get(ticket_url(ticket))
    page = response.content.decode()

    assert "&lt;script&gt;alert(&#x27;hi&#x27;)&lt;/script&gt;" in page
    assert "<script>alert" not in page
    assert "Thanks, &lt;b&gt;checking&lt;/b&gt;" in page
    assert "Bad Request: can&#x27;t parse &lt;entities&gt;" in page
    assert "Photo 1280×720" in page
    assert "Customer1 &lt;i&gt;Doe&lt;/i&gt;" in page
    assert "<i>Doe" not in page
    conversation = page.index('id="conversation-group"')
    assert page.index('id="id_status"') < conversation < page.index('id="id_reply"')
    assert conversation < page.index("alert(", conversation) < page.index("checking") < page.index('id="id_reply"')
    entries = response.context["conversation"]
    assert [entry.number for entry in entries] == list(ticket.messages.order_by("id").values_list("pk", flat=True))
    assert [entry.sender for entry in entries] == [
        "Customer1 <i>Doe</i>",
        "Ann Agent",
        "Bot (automatic reply)",
        "colleague",
    ]
    assert [entry.delivery_status for entry in entries] == ["", "Failed", "Queued", "Queued"]
    assert [entry.delivery_attempts for entry in entries] == [None, 0, 0, 0]
    assert entries[0].attachment == "Photo 1280×720"
    assert entries[1].delivery_error == "Bad Request: can't parse <entities>"
    assert entries[2].delivery_error == ""
    assert entries[3].delivery_error == (
        f"Waiting for reply #{entries[2].number} to this customer to be delivered (or fail) first."
    )
    # Read-only: shown outside the form, so nothing about the messages is posted back.
    assert response.context["inline_admin_formsets"] == []
    assert {name for name, _ in rendered_form_data(page)} == FORM_FIELDS


def test_the_ticket_page_takes_the_same_queries_for_3_or_30_messages(agent_client, agent, other_agent):
    ticket = customer_writes(1, "first").ticket

    def add_messages(count):
        for index in range(count):
            if index % 3 == 0:
                customer_writes(1, f"Question {index}")
            else:
                services.queue_reply(ticket, f"Answer {index}", author=[None, agent, other_agent][index % 3])

    add_messages(2)
    with_3, response = count_queries(agent_client, ticket_url(ticket))
    assert len(response.context["conversation"]) == 3

    add_messages(27)
    with_30, response = count_queries(agent_client, ticket_url(ticket))
    assert len(response.context["conversation"]) == 30
    assert with_30 == with_3


def test_an_agent_can_reply_on_a_ticket_with_many_messages(agent, ticket):
    Message.objects.bulk_create(
        Message(ticket=ticket, direction=Message.Direction.IN, text=f"Message {number}") for number in range(600)
    )
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(agent)

    page = browser.get(ticket_url(ticket))
    assert page.status_code == 200
    assert len(page.context["conversation"]) == 601
    data = dict(rendered_form_data(page.content.decode()))
    assert set(data) == FORM_FIELDS
    data["reply"] = "Sorry for the wait."
    response = browser.post(ticket_url(ticket), data)

    assert response.status_code == 302
    reply = ticket.messages.get(direction=Message.Direction.OUT)
    assert reply.text == "Sorry for the wait."
    assert reply.delivery_status == Message.DeliveryStatus.QUEUED
    assert DBTaskResult.objects.count() == 1


def test_posting_the_form_does_not_touch_the_messages(agent_client, ticket):
    message = ticket.messages.get()
    data = change_form_data(agent_client, ticket)
    data["messages-0-text"] = "tampered"

    response = agent_client.post(ticket_url(ticket), data)

    assert response.status_code == 302
    message_after = Message.objects.get(pk=message.pk)
    assert message_after.text == "My parcel never arrived"
    assert message_after.edited_at is None


def test_status_change_goes_through_the_services(
    agent_client, ticket, announcements, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = agent_client.post(ticket_url(ticket), change_form_data(agent_client, ticket, status="pending"))

    assert response.status_code == 302
    ticket.refresh_from_db()
    assert ticket.status == Ticket.Status.PENDING
    assert announcements == ["ticket"]


def test_a_refused_status_change_shows_on_the_status_field_and_changes_nothing(agent_client, ticket):
    services.change_ticket_status(ticket, Ticket.Status.CLOSED, acting_user=None)
    updated_at = Ticket.objects.get(pk=ticket.pk).updated_at

    response = agent_client.post(ticket_url(ticket), change_form_data(agent_client, ticket, status="open"))

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["status"] == [
        f"Ticket #{ticket.pk} is closed and cannot become open."
    ]
    ticket.refresh_from_db()
    assert ticket.status == Ticket.Status.CLOSED
    assert ticket.updated_at == updated_at


def test_a_refused_status_change_also_drops_the_reply_and_assignment_saved_with_it(
    agent_client, other_agent, ticket, announcements, django_capture_on_commit_callbacks
):
    resolve(ticket, days_ago=30)
    newer = customer_writes(100, "Another question").ticket
    assert newer != ticket
    data = change_form_data(agent_client, ticket, status="open", reply="Reopening this one", assignee=other_agent.pk)

    with django_capture_on_commit_callbacks(execute=True):
        response = agent_client.post(ticket_url(ticket), data)

    assert response.status_code == 200
    assert f"ticket #{newer.pk} open" in response.context["adminform"].form.errors["status"][0]
    ticket.refresh_from_db()
    assert ticket.status == Ticket.Status.RESOLVED
    assert ticket.assignee is None
    assert not ticket.messages.filter(direction=Message.Direction.OUT).exists()
    assert not DBTaskResult.objects.exists()
    assert announcements == []


def test_assignee_change_goes_through_the_services(
    agent_client, other_agent, ticket, announcements, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = agent_client.post(
            ticket_url(ticket), change_form_data(agent_client, ticket, assignee=other_agent.pk)
        )

    assert response.status_code == 302
    ticket.refresh_from_db()
    assert ticket.assignee == other_agent
    assert announcements == ["ticket"]


def test_saving_a_reply_does_not_undo_a_colleagues_change_made_meanwhile(agent_client, other_agent, ticket):
    data = change_form_data(agent_client, ticket, reply="Hello")
    services.change_ticket_status(ticket, Ticket.Status.PENDING, acting_user=None)
    services.assign_ticket(ticket, other_agent, acting_user=None)

    assert agent_client.post(ticket_url(ticket), data).status_code == 302

    ticket.refresh_from_db()
    assert ticket.status == Ticket.Status.PENDING
    assert ticket.assignee == other_agent
    assert ticket.messages.filter(direction=Message.Direction.OUT).count() == 1


def test_only_agents_can_be_assigned(agent_client, django_user_model, ticket):
    visitor = django_user_model.objects.create_user("visitor")

    response = agent_client.post(ticket_url(ticket), change_form_data(agent_client, ticket, assignee=visitor.pk))

    assert response.status_code == 200
    assert "assignee" in response.context["adminform"].form.errors
    assert Ticket.objects.get(pk=ticket.pk).assignee is None


def test_customer_and_subject_cannot_be_changed_from_the_form(agent_client, ticket):
    other = Customer.objects.create(telegram_user_id=999)
    data = change_form_data(agent_client, ticket, customer=other.pk, subject="Changed")

    assert agent_client.post(ticket_url(ticket), data).status_code == 302

    ticket.refresh_from_db()
    assert ticket.customer_id != other.pk
    assert ticket.subject == "My parcel never arrived"


def test_saving_without_changes_changes_nothing(agent_client, ticket, announcements):
    updated_at = Ticket.objects.get(pk=ticket.pk).updated_at

    response = agent_client.post(ticket_url(ticket), change_form_data(agent_client, ticket))

    assert response.status_code == 302
    assert Ticket.objects.get(pk=ticket.pk).updated_at == updated_at
    assert ticket.messages.count() == 1


# --- Reply box ------------------------------------------------------------------------------------


def test_a_reply_is_queued_with_its_delivery_task(agent_client, agent, ticket):
    response = agent_client.post(ticket_url(ticket), change_form_data(agent_client, ticket, reply="  We are on it.  "))

    assert response.status_code == 302
    reply = ticket.messages.get(direction=Message.Direction.OUT)
    assert reply.text == "We are on it."
    assert reply.author == agent
    assert reply.delivery_status == Message.DeliveryStatus.QUEUED
    task = DBTaskResult.objects.get()
    assert task.task_path.endswith("deliver_reply")
    assert task.args_kwargs["args"] == [reply.pk]


def test_a_reply_and_closing_in_one_save_answers_then_closes(agent_client, ticket):
    response = agent_client.post(
        ticket_url(ticket), change_form_data(agent_client, ticket, reply="Solved, bye", status="closed")
    )

    assert response.status_code == 302
    ticket.refresh_from_db()
    assert ticket.status == Ticket.Status.CLOSED
    assert ticket.messages.get(direction=Message.Direction.OUT).text == "Solved, bye"


@pytest.mark.parametrize(
    ("close_first", "text", "error"),
    [
        (False, "x" * 4097, "A reply can be at most 4096 characters; this one has 4097."),
        (True, "Hello?", "is closed; the customer's next message opens a new one."),
    ],
)
def test_a_refused_reply_shows_on_the_reply_field(agent_client, ticket, close_first, text, error):
    if close_first:
        services.change_ticket_status(ticket, Ticket.Status.CLOSED, acting_user=None)

    response = agent_client.post(ticket_url(ticket), change_form_data(agent_client, ticket, reply=text))

    assert response.status_code == 200
    assert error in response.context["adminform"].form.errors["reply"][0]
    assert not ticket.messages.filter(direction=Message.Direction.OUT).exists()
    assert not DBTaskResult.objects.exists()


def test_a_blank_reply_box_sends_nothing(agent_client, ticket):
    response = agent_client.post(ticket_url(ticket), change_form_data(agent_client, ticket, reply="   "))

    assert response.status_code == 302
    assert ticket.messages.count() == 1
    assert not DBTaskResult.objects.exists()


# --- Actions --------------------------------------------------------------------------------------


def run_action(client, action, tickets):
    return client.post(
        TICKETS_URL, {"action": action, "_selected_action": [ticket.pk for ticket in tickets]}, follow=True
    )


@pytest.mark.parametrize(("url", "model"), [(TICKETS_URL, Ticket), (CUSTOMERS_URL, Customer)])
def test_each_row_has_the_checkbox_djangos_widget_renders(admin_client, url, model):
    customer_writes(1)
    customer_writes(2, text="<i>\"Why\"</i> & 'when'?", first_name="<b>\"Zoë\"</b> & 'co'")

    # A superuser: only agents who may forget customers have the customer list's action, and its checkboxes.
    page = admin_client.get(url).content.decode()

    # tickets.admin.PlainActionCheckbox writes the input that the form widget's templates render.
    model_admin = admin.site.get_model_admin(model)
    for obj in model.objects.all():
        assert ModelAdmin.action_checkbox(model_admin, obj) in page
    assert page.count('class="action-select"') == model.objects.count()


def test_assign_to_me(agent_client, agent, other_agent):
    mine = customer_writes(1).ticket
    theirs = customer_writes(2).ticket
    services.assign_ticket(theirs, other_agent, acting_user=None)

    response = run_action(agent_client, "assign_to_me", [mine, theirs])

    assert Ticket.objects.filter(assignee=agent).count() == 2
    assert user_messages(response) == [(messages.SUCCESS, f"Assigned to you: #{mine.pk}, #{theirs.pk}.")]


def test_resolve_changes_the_others_and_warns_about_the_refused_ones(agent_client):
    open_ticket = customer_writes(1).ticket
    pending = customer_writes(2).ticket
    services.change_ticket_status(pending, Ticket.Status.PENDING, acting_user=None)
    closed = customer_writes(3).ticket
    services.change_ticket_status(closed, Ticket.Status.CLOSED, acting_user=None)

    response = run_action(agent_client, "resolve", [open_ticket, pending, closed])

    statuses = dict(Ticket.objects.values_list("pk", "status"))
    assert statuses == {open_ticket.pk: "resolved", pending.pk: "resolved", closed.pk: "closed"}
    assert user_messages(response) == [
        (messages.SUCCESS, f"Resolved: #{open_ticket.pk}, #{pending.pk}."),
        (messages.WARNING, f"1 ticket left unchanged. Ticket #{closed.pk} is closed and cannot become resolved."),
    ]


def test_close(agent_client):
    open_ticket = customer_writes(1).ticket
    resolved = customer_writes(2).ticket
    services.change_ticket_status(resolved, Ticket.Status.RESOLVED, acting_user=None)

    response = run_action(agent_client, "close", [open_ticket, resolved])

    assert set(Ticket.objects.values_list("status", flat=True)) == {"closed"}
    assert user_messages(response) == [(messages.SUCCESS, f"Closed: #{open_ticket.pk}, #{resolved.pk}.")]


def test_a_refused_close_is_reported_as_a_warning(agent_client, monkeypatch):
    ticket = customer_writes(1).ticket

    def refuse(ticket, status, acting_user):
        raise services.TicketRuleError(f"Ticket #{ticket.pk} cannot be closed right now.")

    monkeypatch.setattr(services, "change_ticket_status", refuse)
    response = run_action(agent_client, "close", [ticket])

    assert Ticket.objects.get(pk=ticket.pk).status == Ticket.Status.OPEN
    assert user_messages(response) == [
        (messages.WARNING, f"1 ticket left unchanged. Ticket #{ticket.pk} cannot be closed right now.")
    ]


# --- Customers ------------------------------------------------------------------------------------


def test_re_send_failed_replies_queues_each_failed_reply_of_the_selected_tickets_once(agent_client, agent):
    ticket = customer_writes(1).ticket
    failed = [services.queue_reply(ticket, f"reply {number}", author=agent)[0] for number in range(2)]
    for reply in failed:
        services.mark_delivery_failed(reply, "Telegram refused it.", lease_until=reply.delivery_due_at)
    sent, _ = services.queue_reply(ticket, "sent", author=agent)
    services.mark_delivered(sent, 1, lease_until=sent.delivery_due_at)
    untouched = customer_writes(2).ticket

    response = run_action(agent_client, "resend_failed_replies", [ticket, untouched])
    again = run_action(agent_client, "resend_failed_replies", [ticket])

    assert user_messages(response) == [(messages.SUCCESS, f"Replies queued again: #{failed[0].pk}, #{failed[1].pk}.")]
    assert user_messages(again) == [(messages.INFO, "The selected tickets have no failed replies.")]
    assert set(Message.objects.filter(direction="out").values_list("pk", "delivery_status")) == {
        (failed[0].pk, "queued"),
        (failed[1].pk, "queued"),
        (sent.pk, "sent"),
    }
    assert DBTaskResult.objects.filter(args_kwargs__args__0__in=[reply.pk for reply in failed]).count() == 4


def test_customer_list_counts_tickets_in_the_same_queries_for_3_or_30_customers(agent_client):
    def add_customers(first_user_id, count):
        for user_id in range(first_user_id, first_user_id + count):
            services.change_ticket_status(customer_writes(user_id).ticket, Ticket.Status.CLOSED, acting_user=None)
            customer_writes(user_id)

    add_customers(1, 3)
    with_3, response = count_queries(agent_client, CUSTOMERS_URL)
    assert [customer.ticket_count for customer in results(response)] == [2] * 3

    add_customers(4, 27)
    with_30, response = count_queries(agent_client, CUSTOMERS_URL)
    assert [customer.ticket_count for customer in results(response)] == [2] * 30
    assert with_30 == with_3


@pytest.mark.parametrize("term", ["Alice", "smith", "alice_s", "424242"])
def test_customer_search(agent_client, term):
    alice = customer_writes(424242, first_name="Alice", last_name="Smith", username="alice_s").ticket.customer
    customer_writes(4242, first_name="Bob", username="bobby")

    assert results(agent_client.get(CUSTOMERS_URL, {"q": term})) == [alice]


# --- create_demo_agent ----------------------------------------------------------------------------


def test_create_demo_agent_creates_it_once_and_never_changes_its_password():
    out = StringIO()
    call_command("create_demo_agent", stdout=out)
    match = re.fullmatch(r"Demo agent: http://127\.0\.0\.1:8000/desk/  user: demo  password: (\S+)\n", out.getvalue())
    assert match, out.getvalue()
    demo = get_user_model().objects.get(username="demo")
    assert demo.is_staff and demo.is_superuser and demo.is_active
    assert demo.check_password(match[1])

    again = StringIO()
    call_command("create_demo_agent", stdout=again)

    assert "already exists" in again.getvalue()
    assert "manage.py changepassword demo" in again.getvalue()
    assert match[1] not in again.getvalue()
    assert get_user_model().objects.get(username="demo").password == demo.password


@pytest.mark.django_db(transaction=True)
def test_a_change_made_in_the_admin_is_announced_after_its_connection_is_back(agent_client, connection_when_announced):
    ticket = customer_writes(11).ticket
    data = change_form_data(agent_client, ticket, status="pending")
    connection_when_announced.clear()

    response = agent_client.post(ticket_url(ticket), data)

    assert response.status_code == 302
    assert connection_when_announced == [False]
