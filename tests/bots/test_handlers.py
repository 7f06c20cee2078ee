"""The handlers in-process: every kind of update begins its transaction with its claim, so a redelivery of any
kind is answered "duplicate" and changes nothing (G2), and does no work before it finds the claim taken."""

import pytest
import telegram
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_tasks_db.models import DBTaskResult

from bots.handlers import handler_for, run_once
from bots.models import TelegramUpdate
from bots.updates import parse_update
from tickets.models import Customer, EarlyEdit, Message, Ticket, TicketEvent

from . import factories

BOT_ID = 123
USER_ID = 9500


@pytest.fixture
def bot():
    bot = telegram.Bot(f"{BOT_ID}:token")
    bot._bot_user = telegram.User(BOT_ID, "Support", is_bot=True, username="support_bot")  # as after get_me
    return bot


def process(bot, data):
    """The update's outcome; checks that its claim was the first statement its transaction sent."""
    update = parse_update(data, bot)
    with CaptureQueriesContext(connection) as queries:
        outcome = run_once(BOT_ID, update, handler_for(update))
    # (The test's own transaction makes the update's a savepoint.)
    statements = [query["sql"] for query in queries if not query["sql"].startswith("SAVEPOINT")]
    assert statements[0].startswith(f"INSERT INTO {TelegramUpdate._meta.db_table} ")
    return outcome


def everything():
    """What an update can change, as rows."""
    return {
        model.__name__: list(model.objects.order_by("pk").values())
        for model in (Customer, Ticket, Message, TicketEvent, EarlyEdit, DBTaskResult, TelegramUpdate)
    }


def edit_of(message, text):
    return {"update_id": factories.next_id(), "edited_message": {**message, "text": text, "edit_date": 1}}


@pytest.mark.parametrize("text", ["my order is late", "/start", "/status", "/new", "an edit", "an early edit"])
def test_a_redelivered_update_of_each_kind_is_a_duplicate_and_changes_nothing(db, bot, text):
    first = factories.update(USER_ID, "hello")
    assert process(bot, first) == "processed"
    if text == "an edit":
        update = edit_of(first["message"], text)
    elif text == "an early edit":  # of a message not stored yet: kept until its original comes
        update = edit_of(factories.message(USER_ID, "not yet"), text)
    else:
        update = factories.update(USER_ID, text)

    assert process(bot, update) == "processed"
    before = everything()

    assert process(bot, update) == "duplicate"
    assert everything() == before
    assert EarlyEdit.objects.exists() == (text == "an early edit")
