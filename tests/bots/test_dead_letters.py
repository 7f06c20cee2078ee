"""Updates python-telegram-bot rejects: kept with their raw body and error, answered 200, logged at ERROR,
shown in the admin, and replayed through the handlers once the parser accepts them."""

import json

import pytest
from django.core.management import call_command
from django.urls import reverse
from django_tasks_db.models import DBTaskResult

from bots import dead_letters, updates
from bots.models import DeadLetterUpdate, TelegramUpdate
from tests.conftest import wait_until
from tickets import services
from tickets.models import Message

from . import factories


def from_the_future(user_id):
    """An update in a shape this python-telegram-bot cannot read: an entity without offset and length."""
    update = factories.update(user_id, "please read me")
    update["message"]["entities"] = [{"type": "a_kind_from_the_future"}]
    return update


def upgraded_parser(real_parser):
    """The parser after an upgrade that understands the new entity (here: by leaving it out)."""

    def parse(data, bot):
        data["message"]["entities"] = [e for e in data["message"]["entities"] if e["type"] != "a_kind_from_the_future"]
        return real_parser(data, bot)

    return parse


@pytest.fixture
def dead_letter(start_server):
    server = start_server()
    update = from_the_future(5150)
    response = server.post_update(update)
    return server, update, response


def test_an_update_the_parser_rejects_is_kept_answered_200_and_logged_at_error(dead_letter):
    server, update, response = dead_letter

    assert response.status_code == 200
    kept = DeadLetterUpdate.objects.get()
    assert (kept.update_id, kept.bot_id, kept.telegram_user_id) == (
        update["update_id"],
        int(server.token.split(":")[0]),
        5150,
    )
    assert json.loads(kept.body) == update
    assert kept.error.startswith("TypeError: MessageEntity")
    assert kept.replayed_at is None
    assert f"ERROR bots.dead_letters: Update {update['update_id']} could not be parsed" in server.log()
    assert not Message.objects.exists() and not TelegramUpdate.objects.exists()
    # Telegram's redelivery (had it not taken the 200) keeps one dead letter.
    assert server.post_update(update).status_code == 200
    assert DeadLetterUpdate.objects.count() == 1


def test_a_dead_letter_replays_into_a_message_once_the_parser_accepts_it(dead_letter, settings, sandbox, monkeypatch):
    server, update, _ = dead_letter
    settings.TELEGRAM_BOT_TOKEN, settings.TELEGRAM_API_URL = server.token, sandbox.url

    call_command("replay_dead_letters")  # still the old parser: nothing changes but the attempt count
    assert DeadLetterUpdate.objects.get().replay_attempts == 1
    assert not Message.objects.filter(direction=Message.Direction.IN).exists()

    monkeypatch.setattr(updates, "parse_update", upgraded_parser(updates.parse_update))
    call_command("replay_dead_letters")
    call_command("replay_dead_letters")  # a second replay finds nothing pending

    kept = DeadLetterUpdate.objects.get()
    assert kept.replayed_at is not None and kept.replay_attempts == 2
    assert list(Message.objects.filter(direction=Message.Direction.IN).values_list("text", flat=True)) == [
        "please read me"
    ]
    assert TelegramUpdate.objects.filter(update_id=update["update_id"]).count() == 1


def test_dead_letters_are_listed_in_the_admin_and_replayed_by_the_worker(dead_letter, admin_client, start_worker):
    server, update, _ = dead_letter
    changelist = reverse("admin:bots_deadletterupdate_changelist")

    page = admin_client.get(changelist)
    assert str(update["update_id"]) in page.text and "TypeError" in page.text

    response = admin_client.post(
        changelist, {"action": "replay", "_selected_action": [DeadLetterUpdate.objects.get().pk]}, follow=True
    )
    assert "Queued 1 dead letter(s) for replay" in response.text
    assert DBTaskResult.objects.get().task_path == "bots.tasks.replay_dead_letter"

    start_worker(server.token)  # the worker's parser still rejects it: the attempt is recorded
    wait_until(lambda: DeadLetterUpdate.objects.get().replay_attempts == 1, message="the worker's replay")
    assert DeadLetterUpdate.objects.get().replayed_at is None


def test_forgetting_a_customer_deletes_their_dead_letters_and_no_one_elses(db, admin_user):
    for user_id, update_id in ((5150, 1), (5151, 2)):
        update = from_the_future(user_id)
        update["update_id"] = update_id
        dead_letters.keep(1, update, json.dumps(update).encode(), TypeError("unreadable"))
    customer, _ = services.get_or_create_customer(services.TelegramProfile(user_id=5150, first_name="Al"))

    services.forget_customer(customer, acting_user=admin_user)

    assert list(DeadLetterUpdate.objects.values_list("telegram_user_id", flat=True)) == [5151]
