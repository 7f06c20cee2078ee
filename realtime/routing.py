"""The desk's WebSocket routes (SPEC §4); supportsite.asgi puts them behind the origin check and the session."""

from django.urls import path

from .consumers import InboxConsumer, TicketConsumer

websocket_urlpatterns = [
    path("ws/inbox/", InboxConsumer.as_asgi()),
    path("ws/tickets/<int:ticket_id>/", TicketConsumer.as_asgi()),
]
