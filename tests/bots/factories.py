"""Telegram updates as Telegram sends them, for tests that post to the webhook."""

import itertools
import time

_ids = itertools.count(int(time.time() * 1000) % 10**9)


def next_id():
    return next(_ids)


def user(user_id, first_name="Alice", **fields):
    return {"id": user_id, "is_bot": False, "first_name": first_name, **fields}


def message(user_id, text=None, *, message_id=None, chat_type="private", **fields):
    sender = user(user_id)
    if chat_type == "private":
        chat = {"id": user_id, "type": "private", "first_name": sender["first_name"]}
    else:
        chat = {"id": -100 - user_id, "type": chat_type, "title": "A group"}
    body = {
        "message_id": message_id or next_id(),
        "date": int(time.time()),
        "chat": chat,
        "from": sender,
        **fields,
    }
    if text is not None:
        body["text"] = text
        if text.startswith("/"):
            command = text.split()[0]
            body["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
    return body


def update(user_id, text=None, *, update_id=None, kind="message", **fields):
    return {"update_id": update_id or next_id(), kind: message(user_id, text, **fields)}


def photo(file_id="photo-file"):
    return [
        {"file_id": f"{file_id}-small", "file_unique_id": "s", "width": 90, "height": 90, "file_size": 1000},
        {"file_id": file_id, "file_unique_id": "l", "width": 1280, "height": 720, "file_size": 90000},
    ]


MEDIA = {
    "photo": {"photo": photo(), "caption": "my screen"},
    "document": {
        "document": {"file_id": "doc", "file_unique_id": "d", "file_name": "log.txt", "mime_type": "text/plain"}
    },
    "voice": {"voice": {"file_id": "voice", "file_unique_id": "v", "duration": 3, "mime_type": "audio/ogg"}},
    "video": {"video": {"file_id": "video", "file_unique_id": "vi", "width": 640, "height": 480, "duration": 5}},
    "sticker": {
        "sticker": {
            "file_id": "sticker",
            "file_unique_id": "st",
            "type": "regular",
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
            "emoji": "👍",
        }
    },
    "audio": {
        "audio": {"file_id": "audio", "file_unique_id": "a", "duration": 200, "performer": "Band", "title": "Song"}
    },
    "video_note": {"video_note": {"file_id": "note", "file_unique_id": "n", "length": 240, "duration": 7}},
    "dice": {"dice": {"emoji": "🎲", "value": 4}},
    "location": {"location": {"latitude": 52.52, "longitude": 13.405}},
    "contact": {"contact": {"phone_number": "+4912345", "first_name": "Bob", "user_id": 77}},
}
