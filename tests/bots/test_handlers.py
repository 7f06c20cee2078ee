"""The handlers in-process: every kind of update begins its transaction with its claim, so a redelivery of any
kind is answered "duplicate" and changes nothing (G2), whichever statement its handler sends first."""

import pytest
import telegram
from django_tasks_db.models import DBTaskResult

from bots.handlers import handler_for, run_once
from bots.models import TelegramUpdate
from bots.updates import parse_update
from tickets.models import Customer, Message, Ticket, TicketEvent

from . import factories

BOT_ID = 123
USER_ID = 9500


@pytest.fixture
def bot():
    bot = telegram.Bot(f"{BOT_ID}:token")
    bot._bot_user = telegram.User(BOT_ID, "Support", is_bot=True, username="support_bot")  # as after get_me
    return bot


def process(bot, data):
    update = parse_update(data, bot)
    return run_once(BOT_ID, update, handler_for(update))


def everything():
    """What an update can change, as rows."""
    return {
        model.__name__: list(model.objects.order_by("pk").values())
        for model in (Customer, Ticket, Message, TicketEvent, DBTaskResult, TelegramUpdate)
    }


@pytest.mark.parametrize("text", ["my order is late", "/start", "/status", "/new", "an edit"])
def test_a_redelivered_update_of_each_kind_is_a_duplicate_and_changes_nothing(db, bot, text):
    first = factories.update(USER_ID, "hello")
    assert process(bot, first) == "processed"
    if text == "an edit":
        update = {
            "update_id": factories.next_id(),
            "edited_message": {**first["message"], "text": text, "edit_date": 1},
        }
    else:
        update = factories.update(USER_ID, text)

    assert process(bot, update) == "processed"
    before = everything()

    assert process(bot, update) == "duplicate"
    assert everything() == before
