"""Forgetting a customer (GDPR erasure): nothing of them is left in any table, the statistics are."""

import json

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from bots import dead_letters
from tests.conftest import resolve
from tickets import services
from tickets.models import Customer, EarlyEdit, Message, Ticket, TicketEvent
from tickets.services import TelegramProfile, TicketRuleError

from .test_admin import change_form_data, ticket_url

pytestmark = pytest.mark.django_db

ZORA = TelegramProfile(user_id=987654321, first_name="Zorabelle", last_name="Quixfeather", username="zquix_77")
# Everything that would identify her, or that she or the agents wrote in her tickets.
ERASED = [
    "Zorabelle",
    "Quixfeather",
    "zquix_77",
    "Plumtree",
    "passport-scan-file",
    "passport_scan.pdf",
    "Voicemailfile",
]
CUSTOMERS_URL = reverse("admin:tickets_customer_changelist")


@pytest.fixture
def forgetter(django_user_model):
    user = django_user_model.objects.create_user("dpo", password="dpo-password", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="forget_customer"))
    return django_user_model.objects.get(pk=user.pk)  # a fresh copy: permissions are cached per object


@pytest.fixture
def zora(client, agent):
    """A customer with two tickets: texts, attachments, edits, replies sent and waiting, an admin log entry."""

    def writes(text, message_id, **fields):
        return services.record_inbound_message(ZORA, text=text, telegram_message_id=message_id, **fields)[0]

    old = writes("I moved to 3 Plumtree Close", 1).ticket
    noted, _ = services.queue_reply(old, "Noted, Zorabelle.", author=agent)
    services.mark_delivered(noted, 400, lease_until=noted.delivery_due_at)
    resolve(old, days_ago=30)
    ticket = writes("My parcel to 12 Plumtree Lane never came", 2).ticket
    writes("", 3, attachment={"kind": "document", "file_id": "passport-scan-file", "file_name": "passport_scan.pdf"})
    writes("", 4, attachment={"kind": "voice", "file_id": "Voicemailfile", "summary": "Voice message, 3 s"})
    services.record_message_edit(ZORA, 2, text="My parcel to 12b Plumtree Lane never came", edited_at=timezone.now())
    services.record_message_edit(ZORA, 99, text="Plumtree again", edited_at=timezone.now())  # never arrives
    sent, _ = services.queue_reply(ticket, "Zorabelle, we will send it to Plumtree Lane again.", author=agent)
    services.mark_delivered(sent, 500, lease_until=sent.delivery_due_at)
    services.queue_reply(ticket, "Automatic: Plumtree Lane", author=None)  # still queued
    # An update of hers that python-telegram-bot could not parse, kept raw as a dead letter.
    update = {"update_id": 7, "message": {"from": {"id": ZORA.user_id, "first_name": "Zorabelle"}, "text": "Plumtree"}}
    dead_letters.keep(1, update, json.dumps(update).encode(), TypeError("unreadable"))
    client.force_login(agent)
    client.post(ticket_url(ticket), change_form_data(client, ticket, status="pending"))
    assert LogEntry.objects.filter(object_repr__contains="Plumtree").exists()
    return Customer.objects.get(telegram_user_id=ZORA.user_id)


def text_and_json_columns():
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            for column in connection.introspection.get_table_description(cursor, table):
                if connection.introspection.get_field_type(column.type_code, column) in {
                    "CharField",
                    "TextField",
                    "JSONField",
                }:
                    yield table, column.name


def places_holding(text):
    found = []
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        for table, column in text_and_json_columns():
            cursor.execute(
                f"SELECT COUNT(*) FROM {quote(table)} WHERE CAST({quote(column)} AS TEXT) LIKE %s", [f"%{text}%"]
            )
            if cursor.fetchone()[0]:
                found.append(f"{table}.{column}")
    return found


def statistics():
    return {
        "tickets": list(Ticket.objects.order_by("pk").values_list("status", "created_at", "assignee")),
        "messages": list(Message.objects.order_by("pk").values_list("ticket", "direction", "author", "created_at")),
        "events": list(TicketEvent.objects.order_by("pk").values_list("ticket", "seq", "kind", "actor_kind")),
    }


def test_forgetting_a_customer_leaves_nothing_of_them_in_any_text_column_and_keeps_the_statistics(zora, forgetter):
    assert {text: bool(places_holding(text)) for text in ERASED} == dict.fromkeys(ERASED, True)
    before = statistics()

    services.forget_customer(zora, acting_user=forgetter)

    assert {text: places_holding(text) for text in ERASED} == {text: [] for text in ERASED}
    after = statistics()
    assert after["tickets"] == before["tickets"] and after["messages"] == before["messages"]
    assert after["events"][: len(before["events"])] == before["events"]
    zora.refresh_from_db()
    assert (zora.telegram_user_id, zora.name) == (None, f"Forgotten customer #{zora.pk}")
    assert not EarlyEdit.objects.exists()
    assert list(Message.objects.filter(direction="out").values_list("delivery_status", flat=True)) == [
        "sent",
        "sent",
        "failed",
    ]
    assert not Message.objects.exclude(telegram_message_id=None).exists()


def test_forgetting_is_recorded_in_each_tickets_history_by_the_agent_without_the_erased_data(zora, forgetter):
    services.forget_customer(zora, acting_user=forgetter)

    for ticket in Ticket.objects.all():
        forgotten = ticket.events.latest("seq")
        assert (forgotten.kind, forgotten.actor, forgotten.data["change"]) == ("ticket", forgetter, {"forgotten": True})
        assert forgotten.data["ticket"]["customer"] == {
            "id": zora.pk,
            "name": f"Forgotten customer #{zora.pk}",
            "username": "",
        }
    unsent = Message.objects.get(delivery_status="failed")
    failed = TicketEvent.objects.get(kind="delivery", data__message_id=unsent.pk, data__status="failed")
    assert failed.data["error"] == "Not sent: the customer was forgotten."


def test_a_forgotten_customer_can_be_neither_written_to_nor_found_again(zora, forgetter, agent):
    ticket = zora.tickets.latest("pk")
    services.forget_customer(zora, acting_user=forgetter)

    with pytest.raises(TicketRuleError, match="forgotten"):
        services.queue_reply(ticket, "Are you still there?", author=agent)
    message, opened = services.record_inbound_message(ZORA, text="Hello again", telegram_message_id=7)
    assert opened and message.ticket.customer != zora
    assert Customer.objects.get(telegram_user_id=ZORA.user_id).first_name == "Zorabelle"  # a new customer


def test_forgetting_is_refused_without_the_permission_and_changes_nothing(zora, agent):
    before = statistics()

    with pytest.raises(PermissionDenied):
        services.forget_customer(zora, acting_user=agent)

    zora.refresh_from_db()
    assert zora.first_name == "Zorabelle" and zora.erased_at is None
    assert statistics() == before


def test_the_admin_offers_forgetting_only_with_the_permission(client, zora, agent):
    client.force_login(agent)
    assert "Forget (erase" not in client.get(CUSTOMERS_URL).content.decode()

    response = client.post(CUSTOMERS_URL, {"action": "forget", "_selected_action": [zora.pk], "post": "yes"})

    assert response.status_code == 200  # the changelist again: "No action selected"
    zora.refresh_from_db()
    assert zora.erased_at is None


def test_the_admin_asks_once_more_then_forgets(client, zora, forgetter):
    client.force_login(forgetter)
    selection = {"action": "forget", "_selected_action": [zora.pk]}

    confirmation = client.post(CUSTOMERS_URL, selection)
    assert "This cannot be undone" in confirmation.content.decode()
    zora.refresh_from_db()
    assert zora.erased_at is None

    done = client.post(CUSTOMERS_URL, {**selection, "post": "yes"}, follow=True)
    zora.refresh_from_db()
    assert zora.erased_at is not None
    assert [str(message) for message in done.context["messages"]] == [
        f"Forgot customers #{zora.pk}: their personal data and messages are erased."
    ]
    assert not places_holding("Zorabelle")
