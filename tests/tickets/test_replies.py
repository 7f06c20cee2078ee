"""What a reply can carry: refused with the reason before it is queued, never failed by Telegram after."""

import pytest
from django_tasks_db.models import DBTaskResult

from tickets import services
from tickets.models import Message
from tickets.services import TelegramProfile, TicketRuleError

pytestmark = pytest.mark.django_db


@pytest.fixture
def ticket():
    return services.record_inbound_message(TelegramProfile(user_id=444), text="hi", telegram_message_id=1)[0].ticket


@pytest.mark.parametrize("kind", services.SENDABLE_ATTACHMENTS)
def test_every_kind_telegram_can_send_is_queued(ticket, agent, kind):
    text = "" if kind == "sticker" else "x" * services.TELEGRAM_CAPTION_LIMIT
    reply, _ = services.queue_reply(ticket, text, author=agent, attachment={"kind": kind, "file_id": "f"})

    assert (reply.delivery_status, reply.attachment["kind"]) == ("queued", kind)


@pytest.mark.parametrize(
    ("text", "attachment", "reason"),
    [
        (
            "",
            {"kind": "location", "latitude": 1, "longitude": 2},
            "An attachment of kind “location” cannot be sent to a customer",
        ),
        ("", {"kind": "video_note", "file_id": "f"}, "a reply can carry a photo, document, voice"),
        ("", {"file_id": "f"}, "An attachment without a kind cannot be sent"),
        ("", {"kind": "photo"}, "The photo has no Telegram file_id"),
        ("Thumbs up!", {"kind": "sticker", "file_id": "f"}, "A sticker cannot carry text"),
        (
            "x" * 1025,
            {"kind": "photo", "file_id": "f"},
            "(its caption) can be at most 1024 characters; this one has 1025",
        ),
        ("x" * 4097, None, "at most 4096 characters; this one has 4097"),
    ],
    ids=["location", "video note", "no kind", "no file", "text on a sticker", "long caption", "long text"],
)
def test_a_reply_telegram_would_refuse_is_refused_before_it_is_queued(ticket, agent, text, attachment, reason):
    with pytest.raises(TicketRuleError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        services.queue_reply(ticket, text, author=agent, attachment=attachment)

    assert not Message.objects.filter(direction="out").exists()
    assert not DBTaskResult.objects.exists()
