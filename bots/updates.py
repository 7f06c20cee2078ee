"""What a customer's Telegram message says, in the terms tickets.services stores.

Text arrives as ``text`` or, with media, as ``caption``; media is kept as attachment metadata (the
Telegram file ids an agent's tools can fetch later) plus a one-line summary an agent can read.
"""

from telegram import Update
from telegram.constants import MessageAttachmentType

from tickets.services import TelegramProfile


def parse_update(data, bot):
    """The Update python-telegram-bot reads from Telegram's JSON; raises if it cannot (a dead letter)."""
    return Update.de_json(data, bot)


def profile_of(user):
    return TelegramProfile(
        user_id=user.id,
        first_name=user.first_name or "",
        last_name=user.last_name or "",
        username=user.username or "",
        language_code=user.language_code or "",
    )


def text_of(message):
    return message.text or message.caption or ""


def attachment_of(message):
    """Attachment metadata for a media, location or contact message; None for plain text."""
    if message.photo:
        photo = max(message.photo, key=lambda size: size.width * size.height)
        return _file("photo", photo, f"Photo {photo.width}×{photo.height}", width=photo.width, height=photo.height)
    if message.document:
        document = message.document
        return _file(
            "document",
            document,
            f"Document {document.file_name or ''}".strip(),
            file_name=document.file_name,
            mime_type=document.mime_type,
        )
    if message.voice:
        voice = message.voice
        summary = f"Voice message, {voice.duration} s"
        return _file("voice", voice, summary, duration=voice.duration, mime_type=voice.mime_type)
    if message.video:
        video = message.video
        return _file("video", video, f"Video, {video.duration} s", duration=video.duration, mime_type=video.mime_type)
    if message.sticker:
        sticker = message.sticker
        return _file("sticker", sticker, f"Sticker {sticker.emoji or ''}".strip(), emoji=sticker.emoji)
    if message.audio:
        audio = message.audio
        title = " – ".join(part for part in (audio.performer, audio.title) if part)
        return _file("audio", audio, f"Audio {title}".strip(), duration=audio.duration, mime_type=audio.mime_type)
    if message.video_note:
        return _file("video_note", message.video_note, f"Video message, {message.video_note.duration} s")
    if message.animation:
        return _file("animation", message.animation, "GIF animation", mime_type=message.animation.mime_type)
    if message.location:
        location = message.location
        return {
            "kind": "location",
            "latitude": location.latitude,
            "longitude": location.longitude,
            "summary": f"Location {location.latitude:.5f}, {location.longitude:.5f}",
        }
    if message.contact:
        contact = message.contact
        name = f"{contact.first_name} {contact.last_name or ''}".strip()
        return {
            "kind": "contact",
            "phone_number": contact.phone_number,
            "first_name": contact.first_name,
            "last_name": contact.last_name or "",
            "user_id": contact.user_id,
            "summary": f"Contact {name} {contact.phone_number}",
        }
    for kind in MessageAttachmentType:
        if getattr(message, kind.value, None):
            # Polls, dice, venues, games…: say what it was, so the agent knows to look in Telegram.
            return {
                "kind": kind.value,
                "summary": f"{kind.value.replace('_', ' ').capitalize()} (open Telegram to see it)",
            }
    return None


def _file(kind, media, summary, **details):
    return {
        "kind": kind,
        "file_id": media.file_id,
        "file_unique_id": media.file_unique_id,
        "file_size": media.file_size,
        "summary": summary,
        **{name: value for name, value in details.items() if value is not None},
    }
