"""The hooks through which tickets hands work to the outside world, without importing it.

tickets imports nothing from bots or realtime; they connect receivers here (in their AppConfig.ready):

- ``announced``, after the transaction that stored them commits: ``events``, the ticket's new
  ``TicketEvent`` rows. realtime broadcasts them.
- ``reply_queued``, inside the transaction that stores an outbound reply: ``message``. bots enqueues its
  delivery there, so the reply and its delivery commit together or not at all.
- ``customer_forgotten``, inside the transaction that forgets a customer (tickets.services.forget_customer):
  ``customer`` (already erased) and the ``telegram_user_id`` they had. An app keeping anything about that
  Telegram user (raw updates, say) erases it there, so the erasure commits whole or not at all.
- ``agent_typing``: an agent is typing in ``ticket`` (``agent``); bots shows "typing…" in the
  customer's Telegram chat (``chat_id``). Sent with ``asend`` from async code; a courtesy that never fails.
"""

from django.dispatch import Signal

announced = Signal()
reply_queued = Signal()
customer_forgotten = Signal()
agent_typing = Signal()
