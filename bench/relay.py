"""The fan-out's baseline: a bare Channels relay. Each socket joins one group and forwards every event
as it arrives: no authentication, no database, no history."""

import json

from channels.generic.websocket import AsyncWebsocketConsumer

RELAY_PATH = "/bench/relay/"
RELAY_GROUP = "bench.relay"
# The channel-layer message type, the same one realtime.broadcast sends to the product's consumers.
RELAY_MESSAGE_TYPE = "client.event"


class RelayConsumer(AsyncWebsocketConsumer):
    groups = [RELAY_GROUP]

    async def client_event(self, message):
        await self.send(text_data=json.dumps(message["event"]))
