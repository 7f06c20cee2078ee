"""What a client may send over a desk socket (SPEC §4), checked before anything acts on it.

A frame is one JSON object in a text frame, at most ``MAX_FRAME_BYTES`` of UTF-8, with a known ``type`` and
that type's fields of the right types. Only those fields are read: anything else in the frame (a forged
``user`` or ``author``, say) is never looked at, since identity comes from the session. A frame that breaks
a rule raises ``BadFrame``, which the consumer answers with an ``error`` event, staying open.
"""

import json

# Well under daphne's 1 MiB message limit, and well over the largest valid frame: a reply of 4,096
# characters (Telegram's limit) is at most ~49 KiB of JSON even if every character is a \\u escape pair.
MAX_FRAME_BYTES = 64 * 1024

# A typing indicator shows for this long after the last "start" unless a "stop" ends it sooner. Clients
# refresh "start" every 3 s while the agent types, so one late refresh never blinks it.
TYPING_EXPIRES_IN_SECONDS = 6

# Ids and seqs are PostgreSQL bigints.
_MAX_ID = 2**63 - 1


class BadFrame(Exception):
    """A frame the server will not act on; ``code`` and ``detail`` go into the client's error event."""

    def __init__(self, code, detail):
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _text(name, value):
    if not isinstance(value, str):
        raise BadFrame("bad_field", f'"{name}" must be a string.')
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadFrame("bad_field", f'"{name}" is not valid Unicode text.') from None
    return value


def _number(name, value, smallest):
    if type(value) is not int or not smallest <= value <= _MAX_ID:
        raise BadFrame("bad_field", f'"{name}" must be an integer of at least {smallest}.')
    return value


def _typing_state(name, value):
    if value not in ("start", "stop"):
        raise BadFrame("bad_field", f'"{name}" must be "start" or "stop".')
    return value


# For each client frame type: its fields, each with the check that returns its value.
FRAMES = {
    "typing": {"state": _typing_state},
    "read": {"message_id": lambda name, value: _number(name, value, 1)},
    "message": {"text": _text, "client_msg_id": _text},
    "resume": {"after": lambda name, value: _number(name, value, 0)},
}


def parse_frame(text_data, bytes_data, allowed_types):
    """The frame's type and its checked fields, as ``(type, fields)``; raises BadFrame."""
    if text_data is None:
        raise BadFrame("bad_frame", "Send JSON in text frames, not binary ones.")
    if len(text_data) > MAX_FRAME_BYTES or len(text_data.encode("utf-8", "surrogatepass")) > MAX_FRAME_BYTES:
        raise BadFrame("too_large", f"A frame can be at most {MAX_FRAME_BYTES} bytes.")
    try:
        frame = json.loads(text_data)
    except ValueError:
        raise BadFrame("bad_frame", "The frame is not valid JSON.") from None
    if not isinstance(frame, dict):
        raise BadFrame("bad_frame", 'A frame is a JSON object with a "type".')
    kind = frame.get("type")
    if not isinstance(kind, str) or kind not in allowed_types:
        expected = ", ".join(f'"{name}"' for name in allowed_types) or "nothing"
        raise BadFrame("unknown_type", f"Unknown frame type {json.dumps(kind)}: this socket accepts {expected}.")
    fields = {}
    for name, check in FRAMES[kind].items():
        if name not in frame:
            raise BadFrame("bad_field", f'A "{kind}" frame needs "{name}".')
        fields[name] = check(name, frame[name])
    return kind, fields
