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
    if text.startswith("/"):
        message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
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


def stream_from(spec):
    """The stream a load spec describes: ``{"kind": "webhook" | "conversation", **that function's arguments}``."""
    arguments = dict(spec)
    kind = arguments.pop("kind")
    return {"webhook": webhook_stream, "conversation": conversation_stream}[kind](**arguments)


def conversation_stream(customers, per_customer, duplicate_share, *, seed, first_update_id, first_user_id, lag=64):
    """Each of ``customers`` customers writes ``per_customer`` messages that each get one automatic reply:
    ``/status`` (the bot answers every one), except with ``per_customer=1``, where it is a new customer's
    first message (answered with the ticket it opened; a later plain message would get no reply, and with
    several per customer one could overtake the first). Customers' messages interleave, each customer's in
    order; ``duplicate_share`` of the stream are redeliveries, which must get no reply of their own."""
    rng = random.Random(seed)
    turns = [user for user in range(customers) for _ in range(per_customer)]
    rng.shuffle(turns)
    sent = {}
    stream = []
    for position, customer in enumerate(turns):
        user_id = first_user_id + customer
        message_id = sent[user_id] = sent.get(user_id, 0) + 1
        text = "Hello, I need help with my order" if per_customer == 1 else "/status"
        stream.append((NEW, customer_update(first_update_id + position, user_id, message_id, text)))
    for _ in range(round(len(stream) * duplicate_share)):
        slot = rng.randrange(lag + 1, len(stream))
        stream.insert(slot, (DUPLICATE, stream[rng.randrange(0, slot - lag)][1]))
    return stream
