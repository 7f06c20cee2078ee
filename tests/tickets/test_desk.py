"""The desk's pages and endpoints through Django's test client: who may see them, what they show, how they
refuse, and the Content-Security-Policy they are served under. The live side is in tests/e2e."""

import itertools
import json
import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tickets import queries, services
from tickets.models import Message, Ticket, TicketEvent
from tickets.services import TelegramProfile

from .test_queries import expected_unread, play_conversations

pytestmark = pytest.mark.django_db

INBOX = reverse("desk-inbox")
INBOX_DATA = reverse("desk-inbox-data")
LOGIN = reverse("login")

_telegram_message_ids = itertools.count(1)


def customer_writes(user_id, text="Hello", **profile):
    profile.setdefault("first_name", f"Customer {user_id}")
    message, _ = services.record_inbound_message(
        TelegramProfile(user_id=user_id, **profile), text=text, telegram_message_id=next(_telegram_message_ids)
    )
    return message


@pytest.fixture
def agent_client(client, agent):
    client.force_login(agent)
    return client


@pytest.fixture
def customer_user(django_user_model):
    return django_user_model.objects.create_user("customer-account", password="customer-password")


def inbox(client, **params):
    response = client.get(INBOX_DATA, params)
    assert response.status_code == 200, response.content
    return response.json()


def ticket_ids(data):
    return [row["id"] for row in data["tickets"]]


def page_state(response):
    """The state a ticket page hands its script (the json_script block)."""
    match = re.search(rb'<script id="ticket-state" type="application/json">(.*?)</script>', response.content, re.S)
    return json.loads(match.group(1))


# --- Logging in and out ------------------------------------------------------------------------------


def test_the_login_page_is_the_desks_own(client):
    response = client.get(LOGIN)

    assert response.status_code == 200
    assert "desk/login.html" in [template.name for template in response.templates]
    assert b'name="password"' in response.content


def test_an_agent_who_logs_in_lands_on_the_desk(client, agent):
    response = client.post(LOGIN, {"username": "agent", "password": "agent-password"})

    assert response.status_code == 302
    assert response["Location"] == INBOX
    assert client.get(INBOX).status_code == 200


def test_login_goes_back_to_the_page_that_asked_for_it(client, agent):
    ticket = customer_writes(1).ticket
    page = reverse("desk-ticket", args=[ticket.pk])

    response = client.get(page)
    assert response.status_code == 302
    assert response["Location"] == f"{LOGIN}?next={page}"

    response = client.post(LOGIN, {"username": "agent", "password": "agent-password", "next": page})
    assert response["Location"] == page


def test_an_account_without_staff_status_is_refused_at_login_saying_why(client, customer_user):
    response = client.post(LOGIN, {"username": "customer-account", "password": "customer-password"})

    assert response.status_code == 200
    assert b"not a support agent" in response.content
    assert "_auth_user_id" not in client.session


def test_a_wrong_password_is_refused_without_saying_more(client, agent):
    response = client.post(LOGIN, {"username": "agent", "password": "wrong"})

    assert response.status_code == 200
    assert b"not a support agent" not in response.content
    assert "_auth_user_id" not in client.session


@pytest.mark.parametrize(
    "path",
    ["/accounts/password_reset/", "/accounts/password_change/", "/accounts/reset/MQ/set-password/", "/accounts/"],
)
def test_accounts_offers_nothing_but_login_and_logout(agent_client, path):
    assert agent_client.get(path).status_code == 404


def test_logging_out_takes_a_post_and_ends_the_session(agent_client):
    assert agent_client.get(reverse("logout")).status_code == 405

    response = agent_client.post(reverse("logout"))

    assert response.status_code == 302
    assert response["Location"] == LOGIN
    assert agent_client.get(INBOX).status_code == 302


# --- Who may see the desk ------------------------------------------------------------------------------


def test_pages_send_anyone_logged_out_to_the_login_page(client):
    ticket = customer_writes(1).ticket

    for page in (INBOX, reverse("desk-ticket", args=[ticket.pk])):
        response = client.get(page)
        assert response.status_code == 302
        assert response["Location"].startswith(f"{LOGIN}?next=")


def test_pages_tell_a_logged_in_non_agent_why_they_are_refused(client, customer_user):
    ticket = customer_writes(1, "Private matter").ticket
    client.force_login(customer_user)

    for page in (INBOX, reverse("desk-ticket", args=[ticket.pk])):
        response = client.get(page)
        assert response.status_code == 403
        assert b"not a support agent" in response.content
        assert b"Private matter" not in response.content


def test_endpoints_answer_401_to_anyone_logged_out_and_403_to_a_non_agent(client, customer_user):
    ticket = customer_writes(1).ticket
    calls = [
        ("get", INBOX_DATA, {}),
        ("post", reverse("desk-ticket-status", args=[ticket.pk]), {"status": "resolved"}),
        ("post", reverse("desk-ticket-assignee", args=[ticket.pk]), {"assignee": ""}),
        ("get", reverse("desk-attachment", args=[ticket.messages.get().pk]), {}),
        ("post", reverse("desk-resend", args=[ticket.messages.get().pk]), {}),
    ]
    for method, url, data in calls:
        response = getattr(client, method)(url, data)
        assert response.status_code == 401, url
        assert response.json()["error"]

    client.force_login(customer_user)
    for method, url, data in calls:
        response = getattr(client, method)(url, data)
        assert response.status_code == 403, url
        assert "not a support agent" in response.json()["error"]
    assert Ticket.objects.get().status == "open"


def test_a_deactivated_agent_is_logged_out_of_the_desk(agent_client, agent):
    agent.is_active = False
    agent.save()

    assert agent_client.get(INBOX).status_code == 302
    assert agent_client.get(INBOX_DATA).status_code == 401


# --- The inbox -------------------------------------------------------------------------------------------


def test_the_inbox_page_carries_its_view_and_status_filter_for_the_script(agent_client):
    response = agent_client.get(INBOX, {"view": "mine", "status": "pending"})

    assert response.status_code == 200
    list_tag = re.search(rb'<ul class="ticket-list"[^>]*>', response.content).group(0)
    assert b'data-view="mine"' in list_tag
    assert b'data-status="pending"' in list_tag
    assert b'data-statuses="pending"' in list_tag
    assert b'aria-current="page">Mine<' in response.content


def test_unknown_inbox_filters_fall_back_to_all_active_tickets(agent_client):
    response = agent_client.get(INBOX, {"view": "<script>", "status": "everything"})

    list_tag = re.search(rb'<ul class="ticket-list"[^>]*>', response.content).group(0)
    assert b'data-view="all"' in list_tag
    assert b'data-statuses="open pending"' in list_tag
    assert b"<script>" not in response.content.split(b"<main")[1]


def test_the_inbox_lists_mine_unassigned_and_all_with_the_status_filter(agent_client, agent, other_agent):
    mine = customer_writes(1).ticket
    theirs = customer_writes(2).ticket
    nobodys = customer_writes(3).ticket
    resolved = customer_writes(4).ticket
    services.assign_ticket(mine, agent, acting_user=agent)
    services.assign_ticket(theirs, other_agent, acting_user=other_agent)
    services.change_ticket_status(resolved, "resolved", acting_user=agent)

    assert ticket_ids(inbox(agent_client, view="mine")) == [mine.pk]
    assert set(ticket_ids(inbox(agent_client, view="unassigned"))) == {nobodys.pk}
    assert set(ticket_ids(inbox(agent_client, view="all"))) == {mine.pk, theirs.pk, nobodys.pk}
    assert ticket_ids(inbox(agent_client, status="resolved")) == [resolved.pk]
    assert len(ticket_ids(inbox(agent_client, status="any"))) == 4


def test_an_inbox_row_has_the_unread_count_the_last_message_and_the_seq(agent_client, agent, other_agent):
    first = customer_writes(1, "My order is late")
    ticket = first.ticket
    services.queue_reply(ticket, "Looking into it", author=agent)
    customer_writes(1, "Any news?")
    services.queue_reply(ticket, "A colleague here: it ships today", author=other_agent)

    [row] = inbox(agent_client)["tickets"]

    ticket.refresh_from_db()
    assert row["seq"] == ticket.last_seq
    assert row["unread"] == 3  # two from the customer and the colleague's reply; not the agent's own
    assert row["customer"]["name"] == "Customer 1"
    assert row["url"] == reverse("desk-ticket", args=[ticket.pk])
    assert row["last_message"] == {
        "id": ticket.messages.last().pk,
        "direction": "out",
        "text": "A colleague here: it ships today",
        "attachment": None,
        "author": "agent2",
        "mine": False,
    }

    services.advance_read_cursor(ticket, agent, ticket.messages.last().pk)
    assert inbox(agent_client)["tickets"][0]["unread"] == 0


def test_every_inbox_view_shows_the_agents_own_unread_counts(agent_client, agent, other_agent):
    mine, theirs, _ = play_conversations(5, agent, other_agent)
    services.assign_ticket(mine, agent, acting_user=agent)
    services.assign_ticket(theirs, other_agent, acting_user=other_agent)
    expected = expected_unread(agent)
    views = {
        "mine": Ticket.objects.filter(assignee=agent),
        "unassigned": Ticket.objects.filter(assignee=None),
        "all": Ticket.objects.all(),
    }

    for view, tickets in views.items():
        rows = inbox(agent_client, view=view, status="any")["tickets"]
        assert {row["id"]: row["unread"] for row in rows} == {ticket.pk: expected[ticket.pk] for ticket in tickets}


def test_an_attachment_shows_as_its_summary_in_the_preview(agent_client):
    services.record_inbound_message(
        TelegramProfile(user_id=1),
        text="",
        telegram_message_id=1,
        attachment={"kind": "photo", "file_id": "f", "summary": "Photo 640×480"},
    )

    [row] = inbox(agent_client)["tickets"]

    assert row["last_message"]["attachment"] == "Photo 640×480"
    assert row["last_message"]["text"] == ""


def test_the_inbox_is_one_query_however_many_tickets(agent_client, agent):
    for user_id in range(1, 4):
        customer_writes(user_id)
    with CaptureQueriesContext(connection) as few:
        inbox(agent_client)
    for user_id in range(4, 40):
        message = customer_writes(user_id)
        services.queue_reply(message.ticket, "On it", author=agent)
        services.advance_read_cursor(message.ticket, agent, message.pk)
    with CaptureQueriesContext(connection) as many:
        data = inbox(agent_client)

    assert len(data["tickets"]) == 39
    ticket_queries = [query for query in many.captured_queries if "tickets_ticket" in query["sql"]]
    assert len(ticket_queries) == 1
    assert len(many.captured_queries) == len(few.captured_queries)


def test_the_inbox_pages_through_older_tickets(agent_client, monkeypatch):
    monkeypatch.setattr(queries, "INBOX_PAGE_SIZE", 2)
    tickets = [customer_writes(user_id).ticket for user_id in range(1, 6)]
    newest_first = [ticket.pk for ticket in reversed(tickets)]

    seen = []
    data = agent_client.get(INBOX_DATA).json()
    while True:
        seen += ticket_ids(data)
        if not data["next"]:
            break
        data = inbox(agent_client, before=data["next"])

    assert seen == newest_first


def test_the_inbox_answers_one_ticket_only_if_it_is_in_the_view(agent_client, agent):
    ticket = customer_writes(1).ticket

    assert ticket_ids(inbox(agent_client, ticket=ticket.pk)) == [ticket.pk]
    assert ticket_ids(inbox(agent_client, ticket=ticket.pk, view="mine")) == []


@pytest.mark.parametrize(
    "params", [{"before": "yesterday|1"}, {"before": "2026-01-01T00:00:00+00:00|x"}, {"ticket": "a"}]
)
def test_the_inbox_refuses_a_malformed_parameter(agent_client, params):
    response = agent_client.get(INBOX_DATA, params)

    assert response.status_code == 400
    assert response.json()["error"]


# --- A ticket's page -----------------------------------------------------------------------------------


def test_a_ticket_page_hands_its_script_the_conversation_reads_and_seq(agent_client, agent, other_agent):
    first = customer_writes(7, "Where is my parcel?", username="parcel_person", language_code="de")
    ticket = first.ticket
    reply, _ = services.queue_reply(ticket, "Checking now", author=agent)
    services.advance_read_cursor(ticket, other_agent, reply.pk)

    response = agent_client.get(reverse("desk-ticket", args=[ticket.pk]))

    assert response.status_code == 200
    state = page_state(response)
    ticket.refresh_from_db()
    assert state["ticket"]["seq"] == ticket.last_seq
    assert state["ticket"]["id"] == ticket.pk
    assert [message["id"] for message in state["messages"]] == [first.pk, reply.pk]
    assert state["messages"][-1]["delivery_status"] == "queued"
    assert state["reads"] == [{"user": {"id": other_agent.pk, "name": "agent2"}, "message_id": reply.pk}]
    assert state["me"] == {"id": agent.pk, "name": "agent"}
    assert state["attachment_url"] == "/desk/attachments/{id}/"
    assert state["resend_url"] == "/desk/messages/{id}/resend/"
    assert state["transitions"]["closed"] == []
    content = response.content.decode()
    assert "@parcel_person" in content and ">7<" in content and ">de<" in content


def test_a_ticket_page_says_which_replies_wait_for_an_earlier_one(agent_client, agent):
    ticket = customer_writes(8, "Hello").ticket
    first, _ = services.queue_reply(ticket, "One moment", author=agent)
    second, _ = services.queue_reply(ticket, "Found it", author=agent)

    state = page_state(agent_client.get(reverse("desk-ticket", args=[ticket.pk])))

    assert state["waiting_for"] == {str(second.pk): first.pk}


def test_a_ticket_page_shows_the_latest_messages_and_says_older_ones_are_in_the_admin(agent_client, monkeypatch):
    monkeypatch.setattr(queries, "CONVERSATION_LENGTH", 2)
    ticket = customer_writes(1, "one").ticket
    customer_writes(1, "two")
    customer_writes(1, "three")

    response = agent_client.get(reverse("desk-ticket", args=[ticket.pk]))

    state = page_state(response)
    assert [message["text"] for message in state["messages"]] == ["two", "three"]
    assert state["earlier"] is True
    assert b"Older messages are in the" in response.content


def test_what_customers_write_reaches_the_page_escaped(agent_client):
    hostile = '</script><script>alert("x")</script><img src=x onerror=alert(1)>'
    ticket = customer_writes(1, hostile, first_name="<b>Eve</b>", username="<i>eve</i>").ticket

    response = agent_client.get(reverse("desk-ticket", args=[ticket.pk]))

    content = response.content.decode()
    assert "<script>alert" not in content
    assert "<img src=x" not in content
    assert "<b>Eve</b>" not in content
    assert "&lt;b&gt;Eve&lt;/b&gt;" in content
    assert page_state(response)["messages"][0]["text"] == hostile  # intact as data, for textContent


def test_an_unknown_ticket_is_404(agent_client):
    assert agent_client.get(reverse("desk-ticket", args=[999999])).status_code == 404


# --- Status and assignee ---------------------------------------------------------------------------------


def status_url(ticket):
    return reverse("desk-ticket-status", args=[ticket.pk])


def assignee_url(ticket):
    return reverse("desk-ticket-assignee", args=[ticket.pk])


def test_changing_the_status_goes_through_the_service_as_the_agent(agent_client, agent):
    ticket = customer_writes(1).ticket

    response = agent_client.post(status_url(ticket), {"status": "pending"})

    assert response.status_code == 200
    ticket.refresh_from_db()
    assert ticket.status == "pending"
    assert response.json()["ticket"]["status"] == "pending"
    assert response.json()["ticket"]["seq"] == ticket.last_seq
    event = TicketEvent.objects.get(ticket=ticket, seq=ticket.last_seq)
    assert (event.kind, event.actor) == ("ticket", agent)


def test_a_status_change_the_lifecycle_forbids_is_409_with_the_rules_words(agent_client, agent):
    ticket = customer_writes(1).ticket
    services.change_ticket_status(ticket, "closed", acting_user=agent)

    response = agent_client.post(status_url(ticket), {"status": "open"})

    assert response.status_code == 409
    assert response.json() == {"error": f"Ticket #{ticket.pk} is closed and cannot become open."}
    ticket.refresh_from_db()
    assert ticket.status == "closed"


@pytest.mark.parametrize("status", ["", "archived", "<b>"])
def test_an_unknown_status_is_400(agent_client, status):
    ticket = customer_writes(1).ticket

    response = agent_client.post(status_url(ticket), {"status": status})

    assert response.status_code == 400
    assert "is not a ticket status" in response.json()["error"]


def test_assigning_to_a_colleague_to_nobody_and_to_a_non_agent(agent_client, agent, other_agent, customer_user):
    ticket = customer_writes(1).ticket

    response = agent_client.post(assignee_url(ticket), {"assignee": other_agent.pk})
    assert response.status_code == 200
    assert response.json()["ticket"]["assignee"] == {"id": other_agent.pk, "name": "agent2"}
    assert TicketEvent.objects.filter(ticket=ticket, kind="ticket").last().actor == agent

    response = agent_client.post(assignee_url(ticket), {"assignee": ""})
    assert response.status_code == 200
    assert response.json()["ticket"]["assignee"] is None

    response = agent_client.post(assignee_url(ticket), {"assignee": customer_user.pk})
    assert response.status_code == 409
    assert "is not an agent" in response.json()["error"]

    for unknown in ("999999", "me", "-1"):
        response = agent_client.post(assignee_url(ticket), {"assignee": unknown})
        assert response.status_code == 400
        assert "There is no user" in response.json()["error"]
    assert Ticket.objects.get().assignee is None


def test_changes_to_an_unknown_ticket_are_404(agent_client):
    response = agent_client.post(reverse("desk-ticket-status", args=[999999]), {"status": "resolved"})

    assert response.status_code == 404
    assert response.json() == {"error": "Ticket #999999 does not exist."}


def test_changes_need_a_post_with_the_csrf_token(agent):
    ticket = customer_writes(1).ticket
    client = Client(enforce_csrf_checks=True)
    client.force_login(agent)

    assert client.get(status_url(ticket), {"status": "resolved"}).status_code == 405
    assert client.post(status_url(ticket), {"status": "resolved"}).status_code == 403

    page = client.get(reverse("desk-ticket", args=[ticket.pk]))
    token = re.search(rb'data-csrf-token="([^"]+)"', page.content).group(1).decode()
    response = client.post(status_url(ticket), {"status": "resolved"}, headers={"X-CSRFToken": token})
    assert response.status_code == 200
    assert Ticket.objects.get().status == "resolved"


def test_re_sending_a_failed_reply_queues_it_again_once(agent_client, agent):
    ticket = customer_writes(1).ticket
    reply, _ = services.queue_reply(ticket, "Here is your refund", author=agent)
    Message.objects.filter(pk=reply.pk).update(delivery_status="failed", delivery_error="The customer blocked the bot.")
    url = reverse("desk-resend", args=[reply.pk])

    response = agent_client.post(url)

    assert response.status_code == 200
    assert response.json()["message"]["delivery_status"] == "queued"
    reply.refresh_from_db()
    assert reply.delivery_status == "queued"
    event = TicketEvent.objects.filter(ticket=ticket).last()
    assert (event.kind, event.actor, event.data["status"]) == ("delivery", agent, "queued")

    again = agent_client.post(url)
    assert again.status_code == 409
    assert "has not failed" in again.json()["error"]


def test_re_sending_what_is_not_a_failed_reply_is_refused(agent_client):
    message = customer_writes(1)

    assert agent_client.post(reverse("desk-resend", args=[message.pk])).status_code == 409
    response = agent_client.post(reverse("desk-resend", args=[999999]))
    assert response.status_code == 404
    assert response.json() == {"error": "Message 999999 does not exist."}


# --- Content-Security-Policy and static files ------------------------------------------------------------


def policy(response):
    return dict(directive.split(" ", 1) for directive in response["Content-Security-Policy"].split("; "))


def test_the_desk_is_served_under_a_strict_policy(agent_client):
    ticket = customer_writes(1).ticket
    for url in (LOGIN, INBOX, reverse("desk-ticket", args=[ticket.pk]), INBOX_DATA):
        directives = policy(agent_client.get(url))
        assert directives["default-src"] == "'none'"
        assert directives["script-src"] == "'self'"
        assert directives["style-src"] == "'self'"
        assert directives["connect-src"] == "'self' ws://testserver"
        assert directives["frame-ancestors"] == "'none'"
        assert "unsafe" not in str(directives)


def test_over_https_the_policy_allows_only_secure_websockets(agent_client):
    response = agent_client.get(INBOX, secure=True)

    assert policy(response)["connect-src"] == "'self' wss://testserver"


def test_the_pages_have_no_inline_script_style_or_handlers(agent_client, agent):
    ticket = customer_writes(1).ticket
    for url in (LOGIN, INBOX, reverse("desk-ticket", args=[ticket.pk])):
        content = agent_client.get(url).content.decode()
        scripts = re.findall(r"<script\b[^>]*>", content)
        assert all('src="' in tag or 'type="application/json"' in tag for tag in scripts), scripts
        assert not re.search(r"\sstyle=|<style\b|\son[a-z]+=", content)


def test_the_admin_keeps_its_own_pages_without_the_policy(agent_client, agent):
    agent.is_superuser = True
    agent.save()

    assert "Content-Security-Policy" not in agent_client.get(reverse("admin:index"))


def test_the_script_and_styles_are_served_by_the_app(client):
    for name, content_type in (("desk.js", "text/javascript"), ("desk.css", "text/css")):
        response = client.get(f"/static/desk/{name}")
        assert response.status_code == 200
        assert response["Content-Type"].startswith(content_type)


@pytest.mark.django_db(transaction=True)
def test_a_change_made_on_the_desk_is_announced_after_its_connection_is_back(agent_client, connection_when_announced):
    ticket = customer_writes(10).ticket
    connection_when_announced.clear()

    response = agent_client.post(reverse("desk-ticket-status", args=[ticket.pk]), {"status": "pending"})

    assert response.status_code == 200
    assert connection_when_announced == [False]
