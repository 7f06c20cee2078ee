"""The hook through which ticket changes are announced, after the transaction that made them commits.

tickets.services is its only sender; the realtime layer listens and turns each announcement into
WebSocket events. Receivers get ``kind`` (one of ``KINDS``) and the changed objects as keyword
arguments: ``ticket`` always, ``message`` for message kinds, ``user`` and ``message_id`` for "read".
"""

from django.dispatch import Signal

KINDS = (
    "message.created",  # an inbound message or an outbound reply was stored
    "message.edited",  # the customer edited a message in Telegram
    "message.delivery",  # an outbound reply changed delivery status (sent or failed)
    "ticket.changed",  # a ticket was opened, assigned, or changed status
    "read",  # an agent's read cursor moved forward
)

announced = Signal()
