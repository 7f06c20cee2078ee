"""The updates the load generator sends: Telegram updates from a set of customers, with redeliveries mixed in."""

import random
import time

NEW, DUPLICATE = "new", "duplicate"
FIRST_USER_ID = 7_000_000_000


def customer_update(update_id, user_id, message_id, text):
    """A Telegram update: customer ``user_id`` wrote ``text`` in their private chat with the bot."""
    person = {"id": user_id, "is_bot": False, "first_name": f"Customer {user_id}", "language_code": "en"}
    chat = {"id": user_id, "type": "private", "first_name": person["first_name"]}
    message = {"message_id": message_id, "from": person, "chat": chat, "date": int(time.time()), "text": text}
    return {"update_id": update_id, "message": message}


def webhook_stream(count, customers, duplicate_share, *, seed, first_update_id, first_user_id=FIRST_USER_ID, lag=64):
    """``count`` (kind, update) pairs: distinct updates from ``customers`` customers, with ``duplicate_share``
    of the stream being redeliveries of updates sent at least ``lag`` positions earlier (Telegram redelivers
    an update it got no 2xx for; by then the first delivery has usually been answered)."""
    rng = random.Random(seed)
    duplicates = round(count * duplicate_share)
    duplicate_slots = set(rng.sample(range(lag + 1, count), duplicates)) if duplicates else set()
    next_message_id = {}
    stream, originals = [], []
    for position in range(count):
        if position in duplicate_slots:
            update = originals[rng.randrange(0, position - lag)]
            stream.append((DUPLICATE, update))
            originals.append(update)  # positions and originals stay aligned
            continue
        user_id = first_user_id + rng.randrange(customers)
        message_id = next_message_id[user_id] = next_message_id.get(user_id, 0) + 1
        update = customer_update(first_update_id + position, user_id, message_id, f"Question {position} about my order")
        stream.append((NEW, update))
        originals.append(update)
    return stream


def distinct_update_ids(stream):
    return {update["update_id"] for _, update in stream}
